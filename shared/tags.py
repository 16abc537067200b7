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
_FORBIDDEN_IN_TAG = re.compile(r"[\x00-\x1f\x7f-\x9f,()]")  # all of Unicode's Cc, and , ( )
_GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
WORKSPACE_REF = "$workspace"
_PLACEHOLDER = re.compile(r"\$args\[([^\]]*)\]|\$workspace")


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
    """Substitute `$workspace` and `$args[a.b]` in one pass (an argument's text is never expanded
    again); a missing argument is an error, not an empty tag."""
    return _PLACEHOLDER.sub(
        lambda m: workspace if m.group(0) == WORKSPACE_REF else _arg_text(args, m.group(1)), template
    )


# --- workspaces, paths, assignable tags with restrictions --------------------------------------

_WORKSPACE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")
_SPEC = re.compile(r"^(?P<tag>[^()]+?)(?:\((?P<rule>[^()]*)\))?$")
MAX_PATH_LENGTH = 255
# Tags a workspace token may always use: the language defaults and the product's system tags.
SYSTEM_TAGS: frozenset[str] = frozenset(LANGUAGE_TAGS | {"other", "flow", "dependency", "hub"})


def validate_workspace(workspace: object, *, field: str = "workspace") -> str:
    if not isinstance(workspace, str) or not _WORKSPACE.fullmatch(workspace):
        raise InvalidInput(
            f"{field} {workspace!r} must be 1-64 characters of letters, digits, '-' or '_'",
            field=field,
        )
    return workspace


def validate_path(path: object, *, field: str = "path") -> str:
    """Script/flow paths: `/`-separated segments of [A-Za-z0-9_.-], no `..`, up to 255 characters."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
        raise InvalidInput(f"{field} must be 1-{MAX_PATH_LENGTH} characters", field=field)
    for segment in path.split("/"):
        if not _PATH_SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise InvalidInput(
                f"{field} {path!r} has an invalid segment {segment!r}: use letters, digits, '_', '-', '.'",
                field=field,
            )
    return path


def parse_tag_spec(spec: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """`gpu` | `gpu(ws1+ws2)` (only these) | `gpu(^ws1^ws2)` (all but these) -> (tag, only, exclude)."""
    m = _SPEC.fullmatch(spec.strip()) if isinstance(spec, str) else None
    if m is None:
        raise InvalidInput(
            f"tag spec {spec!r} is malformed: use TAG, TAG(ws1+ws2) or TAG(^ws1^ws2)", field="spec"
        )
    tag = validate_tag(m.group("tag").strip(), field="spec")
    rule = m.group("rule")
    if rule is None:
        return tag, (), ()
    rule = rule.strip()
    if rule.startswith("^"):
        names = rule[1:].split("^")
    elif "^" in rule or not rule:
        raise InvalidInput(
            f"tag spec {spec!r}: inside the parentheses use ws1+ws2 (only) or ^ws1^ws2 (all but)",
            field="spec",
        )
    else:
        names = rule.split("+")
    if any(not n.strip() for n in names):  # `gpu(ws1+)`: a workspace left out, not a bad name
        raise InvalidInput(f"tag spec {spec!r} names an empty workspace: write each one, as in"
                           " gpu(ws1+ws2) or gpu(^ws1^ws2)", field="spec")
    workspaces = tuple(validate_workspace(n.strip(), field="spec") for n in names)
    return (tag, (), workspaces) if rule.startswith("^") else (tag, workspaces, ())


def format_tag_spec(tag: str, only: tuple[str, ...], exclude: tuple[str, ...]) -> str:
    if only:
        return f"{tag}({'+'.join(only)})"
    if exclude:
        return f"{tag}({''.join('^' + w for w in exclude)})"
    return tag


def dedicated_tag(workspace: str, path: str, *, flow: bool = False) -> str:
    """The reference platform's dedicated-worker tag `ws:path` (`ws:flow/path`); long ones hashed."""
    tag = f"{workspace}:{'flow/' if flow else ''}{path}"
    if len(tag) <= MAX_TAG_LENGTH:
        return tag
    import hashlib

    digest = hashlib.sha256(tag.encode()).hexdigest()[:16]
    return f"{tag[: MAX_TAG_LENGTH - 17]}-{digest}"


def parse_target(target: str) -> tuple[str, str, bool]:
    """A dedicated target `ws:path` / `ws:flow/path` as (workspace, path, is a flow); the one
    reading of that syntax (validation, tags and routing all use it). ValueError without `:`."""
    ws, sep, path = target.partition(":")
    if not sep:
        raise ValueError(f"{target!r} is not ws:path")
    if path.startswith("flow/"):
        return ws, path[5:], True
    return ws, path, False


def target_tag(target: str) -> str:
    """Tag of a dedicated target `ws:path` / `ws:flow/path`."""
    ws, path, flow = parse_target(target)
    return dedicated_tag(ws, path, flow=flow)
