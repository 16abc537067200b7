"""Tag vocabulary and the pure resolution of a job's tag (templates, language defaults, validation)."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from shared.errors import InvalidInput

# The product document's seeded groups, in its order.
DEFAULT_GROUP_TAGS: tuple[str, ...] = (
    "deno", "python3", "go", "bash", "powershell", "dependency", "flow", "hub", "other", "bun",
)
NATIVE_GROUP_TAGS: tuple[str, ...] = (
    "nativets", "postgresql", "mysql", "graphql", "snowflake", "bigquery", "mssql",
)
PRESETS: dict[str, tuple[str, ...]] = {
    "default": DEFAULT_GROUP_TAGS,
    "native": NATIVE_GROUP_TAGS,
    "all": DEFAULT_GROUP_TAGS + NATIVE_GROUP_TAGS,
}

# Languages whose default tag is their own name; anything else goes to `other`.
LANGUAGE_TAGS: frozenset[str] = frozenset(
    {"deno", "python3", "go", "bash", "powershell", "bun"} | set(NATIVE_GROUP_TAGS)
)

MAX_TAG_LENGTH = 100
MAX_TAGS_PER_GROUP = 200
# Commas separate tags on the CLI; parentheses carry workspace restrictions (`gpu(ws1+ws2)`).
_FORBIDDEN_IN_TAG = re.compile(r"[\x00-\x1f\x7f,()]")
_GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ARGS_REF = re.compile(r"\$args\[([^\]]*)\]")
WORKSPACE_REF = "$workspace"


def default_tag(language: str) -> str:
    """The language's default tag, as the product document assigns it."""
    return language if language in LANGUAGE_TAGS else "other"


def validate_tag(tag: object, *, field: str = "tag") -> str:
    """Return the tag if it is usable as a queue name, else raise naming the problem."""
    if not isinstance(tag, str):
        raise InvalidInput(f"{field} must be a string, got {type(tag).__name__}", field=field)
    if not tag:
        raise InvalidInput(f"{field} must not be empty", field=field)
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidInput(
            f"{field} is {len(tag)} characters long; the limit is {MAX_TAG_LENGTH}", field=field
        )
    if tag != tag.strip():
        raise InvalidInput(f"{field} {tag!r} has leading or trailing spaces", field=field)
    bad = _FORBIDDEN_IN_TAG.search(tag)
    if bad:
        raise InvalidInput(
            f"{field} {tag!r} contains {bad.group()!r}; control characters, ',' '(' ')' are not allowed",
            field=field,
        )
    return tag


def validate_tags(tags: object, *, field: str = "tags") -> tuple[str, ...]:
    """Validate a list of tags, keep first-seen order and drop duplicates."""
    if not isinstance(tags, (list, tuple)):
        raise InvalidInput(f"{field} must be a list of strings", field=field)
    if len(tags) > MAX_TAGS_PER_GROUP:
        raise InvalidInput(
            f"{field} has {len(tags)} entries; the limit is {MAX_TAGS_PER_GROUP}", field=field
        )
    seen: dict[str, None] = {}
    for i, tag in enumerate(tags):
        seen[validate_tag(tag, field=f"{field}[{i}]")] = None
    return tuple(seen)


def validate_group_name(name: object, *, field: str = "group") -> str:
    """Group names are DNS-label-like so they fit compose service names, env vars and URLs."""
    if not isinstance(name, str) or not _GROUP_NAME.fullmatch(name):
        raise InvalidInput(
            f"{field} {name!r} is not a valid group name: use 1-63 characters of a-z, 0-9, '-' and '_',"
            " starting with a letter or digit",
            field=field,
        )
    return name


def is_template(tag: str) -> bool:
    """True when the tag still holds `$workspace` or `$args[...]` placeholders."""
    return WORKSPACE_REF in tag or "$args[" in tag


def _arg_text(args: Mapping[str, Any], path: str) -> str:
    value: Any = args
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise InvalidInput(
                f"the tag uses $args[{path}] but the job has no argument {path!r}",
                field=f"args.{path}",
            )
        value = value[part]
    if value is None:
        raise InvalidInput(
            f"the tag uses $args[{path}] but argument {path!r} is null", field=f"args.{path}"
        )
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def fill_template(template: str, *, workspace: str, args: Mapping[str, Any]) -> str:
    """Substitute `$workspace` and `$args[a.b]`; a missing argument is an error, not an empty tag."""
    tag = _ARGS_REF.sub(lambda m: _arg_text(args, m.group(1)), template)
    return tag.replace(WORKSPACE_REF, workspace)


def resolve_tag(
    *,
    language: str,
    workspace: str,
    args: Mapping[str, Any],
    override: str | None = None,
) -> str:
    """Resolve a job's queue tag: explicit tag, else the language default; then fill templates.

    The result is validated after substitution, so an argument cannot smuggle in a forbidden
    character or an over-long tag.
    """
    template = override if override else default_tag(language)
    return validate_tag(fill_template(template, workspace=workspace, args=args), field="tag")
