"""The pure fold of config events into state, and the command checks that decide new events.

Every service builds its view with `fold`/`evolve` from here, so config means the same everywhere.
`fold` copies the state's containers once and applies a whole batch in place, so replaying a long
log costs one dict operation per event, not one copy of the state per event.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import msgspec

from shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from shared.limits import MAX_TIMEOUT
from shared.tagaccess import closed_reason
from shared.events import (
    AssignableTagRemoved,
    AssignableTagSet,
    ConfigEvent,
    FlowDeployed,
    FlowStep,
    GroupCreated,
    GroupDedicatedSet,
    GroupDeleted,
    GroupEnvSet,
    GroupInitScriptSet,
    GroupLimitsSet,
    GroupPrioritiesSet,
    GroupSandboxSet,
    JobLimits,
    GroupTagsSet,
    Recorded,
    ScriptDeployed,
    ScriptLocked,
    TokenCreated,
    TokenRevoked,
)
from shared.tags import (
    PRESETS, WORKSPACE_REF, format_tag_spec, parse_tag_spec, parse_target, target_tag,
    validate_group_name,
    validate_path, validate_tag, validate_tags, validate_workspace,
)

MAX_INIT_SCRIPT_BYTES = 64 * 1024
MAX_SCRIPT_BYTES = 256 * 1024
MAX_FLOW_STEPS = 100


class GroupConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One worker group's configuration; `version` is the sequence of the last event that changed it."""

    name: str
    tags: tuple[str, ...] = ()
    init_script: str | None = None
    dedicated: tuple[str, ...] = ()
    priorities: dict[str, int] = msgspec.field(default_factory=dict)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    limits: JobLimits = JobLimits()
    sandbox: str | None = None  # None: the worker's JOB_SANDBOX
    network: bool = True
    version: int = 0


class Script(msgspec.Struct, frozen=True, kw_only=True):
    """The current version of a deployed script (`version` = seq of its deploy, `revision` counts)."""

    workspace: str
    path: str
    language: str
    content: str
    tag: str | None = None
    timeout: float | None = None
    version: int = 0
    revision: int = 1
    # python3 only: what its dependency job resolved for this version (ScriptLocked)
    lock: str | None = None
    lock_error: str | None = None
    lock_job: str | None = None


class Flow(msgspec.Struct, frozen=True, kw_only=True):
    """The current version of a deployed flow."""

    workspace: str
    path: str
    steps: tuple[FlowStep, ...]
    tag: str | None = None
    preserve_step_tags: bool = False
    version: int = 0
    revision: int = 1


class AssignableTag(msgspec.Struct, frozen=True, kw_only=True):
    """A custom tag open to `only` workspaces, or to all but `exclude`, or to all when both empty."""

    tag: str
    only: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def allows(self, workspace: str) -> bool:
        if self.only:
            return workspace in self.only
        return workspace not in self.exclude


class ApiToken(msgspec.Struct, frozen=True, kw_only=True):
    """An issued token: `workspace` None means admin. Only the hash of its value is known."""

    name: str
    workspace: str | None = None
    token_hash: str
    created_seq: int = 0


class ConfigState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the config log says, as of sequence `seq`. Treat as immutable."""

    seq: int = 0
    groups: dict[str, GroupConfig] = msgspec.field(default_factory=dict)
    scripts: dict[str, Script] = msgspec.field(default_factory=dict)
    flows: dict[str, Flow] = msgspec.field(default_factory=dict)
    assignable: dict[str, AssignableTag] = msgspec.field(default_factory=dict)
    tokens: dict[str, ApiToken] = msgspec.field(default_factory=dict)


def key(workspace: str, path: str) -> str:
    """Dictionary key of a script or flow: `ws/path`."""
    return f"{workspace}/{path}"


def _apply(
    rec: Recorded, groups: dict[str, GroupConfig], scripts: dict[str, Script],
    flows: dict[str, Flow], assignable: dict[str, AssignableTag], tokens: dict[str, ApiToken],
) -> None:
    """Apply one event to mutable copies. Events for unknown groups are applied leniently."""
    event = rec.event
    seq = rec.seq
    replace = msgspec.structs.replace
    match event:
        case GroupCreated(group=name):
            groups[name] = GroupConfig(name=name, version=seq)
        case GroupTagsSet(group=name, tags=tags):
            groups[name] = replace(groups.get(name) or GroupConfig(name=name), tags=tags, version=seq)
        case GroupInitScriptSet(group=name, init_script=script):
            groups[name] = replace(groups.get(name) or GroupConfig(name=name), init_script=script,
                                   version=seq)
        case GroupDedicatedSet(group=name, targets=targets):
            groups[name] = replace(groups.get(name) or GroupConfig(name=name), dedicated=targets,
                                   version=seq)
        case GroupPrioritiesSet(group=name, priorities=priorities):
            groups[name] = replace(groups.get(name) or GroupConfig(name=name),
                                   priorities=dict(priorities), version=seq)
        case GroupEnvSet(group=name, env=env):
            groups[name] = replace(groups.get(name) or GroupConfig(name=name), env=dict(env),
                                   version=seq)
        case GroupLimitsSet(group=name, limits=limits):
            groups[name] = replace(groups.get(name) or GroupConfig(name=name), limits=limits,
                                   version=seq)
        case GroupSandboxSet(group=name, sandbox=sandbox, network=network):
            groups[name] = replace(groups.get(name) or GroupConfig(name=name), sandbox=sandbox,
                                   network=network, version=seq)
        case GroupDeleted(group=name):
            groups.pop(name, None)
        case ScriptDeployed():
            k = key(event.workspace, event.path)
            old = scripts.get(k)
            scripts[k] = Script(workspace=event.workspace, path=event.path, language=event.language,
                                content=event.content, tag=event.tag, timeout=event.timeout,
                                version=seq,
                                revision=(old.revision + 1) if old else 1)
        case ScriptLocked():
            k = key(event.workspace, event.path)
            locked = scripts.get(k)
            if locked is not None and locked.version == event.version:
                scripts[k] = replace(locked, lock=event.lock, lock_error=event.error,
                                     lock_job=event.job_id)
        case FlowDeployed():
            k = key(event.workspace, event.path)
            oldf = flows.get(k)
            flows[k] = Flow(workspace=event.workspace, path=event.path, steps=event.steps,
                            tag=event.tag, preserve_step_tags=event.preserve_step_tags, version=seq,
                            revision=(oldf.revision + 1) if oldf else 1)
        case AssignableTagSet(tag=tag, only=only, exclude=exclude):
            assignable[tag] = AssignableTag(tag=tag, only=only, exclude=exclude)
        case AssignableTagRemoved(tag=tag):
            assignable.pop(tag, None)
        case TokenCreated(name=name, workspace=ws, token_hash=h):
            tokens[name] = ApiToken(name=name, workspace=ws, token_hash=h, created_seq=seq)
        case TokenRevoked(name=name):
            tokens.pop(name, None)


def fold(records: Iterable[Recorded], state: ConfigState | None = None) -> ConfigState:
    """state = fold(events): the only way any service turns the log into configuration."""
    state = state if state is not None else ConfigState()
    groups, scripts = dict(state.groups), dict(state.scripts)
    flows, assignable, tokens = dict(state.flows), dict(state.assignable), dict(state.tokens)
    seq = state.seq
    for rec in records:
        _apply(rec, groups, scripts, flows, assignable, tokens)
        seq = rec.seq
    return ConfigState(seq=seq, groups=groups, scripts=scripts, flows=flows, assignable=assignable,
                       tokens=tokens)


def evolve(state: ConfigState, rec: Recorded) -> ConfigState:
    """Apply one recorded event."""
    return fold((rec,), state)


def groups_by_tag(state: ConfigState) -> dict[str, tuple[str, ...]]:
    """Which configured groups listen to each tag (dedicated tags included)."""
    index: dict[str, list[str]] = {}
    for group in state.groups.values():
        for tag in group_tags(state, group):
            index.setdefault(tag, []).append(group.name)
    return {tag: tuple(sorted(names)) for tag, names in index.items()}


def group_tags(state: ConfigState, group: GroupConfig) -> tuple[str, ...]:
    """The tags a group's workers listen to: its tags plus the tags of its dedicated targets."""
    extra = tuple(target_tag(t) for t in group.dedicated)
    return group.tags + tuple(t for t in extra if t not in group.tags)


# --- commands: check against state, return the events to append (or raise) -------------------


def _check_version(version: int, expected: int | None, what: str) -> None:
    if expected is not None and version != expected:
        raise Conflict(
            f"{what} is at version {version}, not {expected}: someone changed it first;"
            " re-read it and retry",
            field="expected_version",
        )


def validate_init_script(script: object) -> str | None:
    """Init scripts are bash text up to a documented size; empty means none."""
    if script is None:
        return None
    if not isinstance(script, str):
        raise InvalidInput("init_script must be a string or null", field="init_script")
    size = len(script.encode("utf-8"))
    if size > MAX_INIT_SCRIPT_BYTES:
        raise InvalidInput(
            f"init_script is {size} bytes; the limit is {MAX_INIT_SCRIPT_BYTES}", field="init_script"
        )
    return script if script.strip() else None


def validate_priorities(priorities: object) -> dict[str, int]:
    if not isinstance(priorities, dict):
        raise InvalidInput("priorities must be an object of tag -> 1..255", field="priorities")
    out: dict[str, int] = {}
    for tag, value in priorities.items():
        validate_tag(tag, field="priorities")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
            raise InvalidInput(
                f"priority of tag {tag!r} must be an integer from 1 to 255, got {value!r}",
                field=f"priorities.{tag}",
            )
        out[tag] = value
    return dict(sorted(out.items()))


def validate_dedicated(state: ConfigState, targets: object) -> tuple[str, ...]:
    """`ws:path` (a deployed script) or `ws:flow/path` (a deployed flow); each must exist."""
    if not isinstance(targets, (list, tuple)):
        raise InvalidInput("dedicated must be a list of 'ws:path'", field="dedicated")
    out: dict[str, None] = {}
    for i, target in enumerate(targets):
        field = f"dedicated[{i}]"
        if not isinstance(target, str) or ":" not in target:
            raise InvalidInput(f"{field} {target!r} must look like ws:path or ws:flow/path", field=field)
        ws, path, flow = parse_target(target)
        validate_workspace(ws, field=field)
        if flow:
            validate_path(path, field=field)
            if key(ws, path) not in state.flows:
                raise NotFound(f"{field}: no flow {path!r} is deployed in workspace {ws!r}",
                               field=field)
        else:
            validate_path(path, field=field)
            if key(ws, path) not in state.scripts:
                raise NotFound(f"{field}: no script {path!r} is deployed in workspace {ws!r}",
                               field=field)
        out[target] = None
    return tuple(out)


_UNSET: Any = object()


def set_group(
    state: ConfigState,
    name: str,
    *,
    tags: object = _UNSET,
    init_script: object = _UNSET,
    dedicated: object = _UNSET,
    priorities: object = _UNSET,
    env: object = _UNSET,
    expected_version: int | None = None,
) -> list[ConfigEvent]:
    """Create the group if needed and set what was given; unchanged fields emit nothing."""
    validate_group_name(name)
    group = state.groups.get(name)
    _check_version(group.version if group else 0, expected_version, f"group {name!r}")
    events: list[ConfigEvent] = []
    if group is None:
        events.append(GroupCreated(group=name))
        group = GroupConfig(name=name)
    new_tags = group.tags
    if tags is not _UNSET:
        new_tags = validate_tags(tags)
        if new_tags != group.tags:
            events.append(GroupTagsSet(group=name, tags=new_tags))
    if init_script is not _UNSET:
        script = validate_init_script(init_script)
        if script != group.init_script:
            events.append(GroupInitScriptSet(group=name, init_script=script))
    targets = group.dedicated
    if dedicated is not _UNSET:
        targets = validate_dedicated(state, dedicated)
        if targets != group.dedicated:
            events.append(GroupDedicatedSet(group=name, targets=targets))
    served = set(new_tags) | {target_tag(t) for t in targets}
    if priorities is _UNSET and group.priorities and not set(group.priorities) <= served:
        # A priority outlives no tag: the tags it named are gone from the group.
        kept = {t: p for t, p in group.priorities.items() if t in served}
        events.append(GroupPrioritiesSet(group=name, priorities=kept))
    if priorities is not _UNSET:
        prio = validate_priorities(priorities)
        for tag in prio:
            if tag not in served:
                raise InvalidInput(f"priority for {tag!r}, which group {name!r} does not listen"
                                   f" to (its tags: {', '.join(sorted(served)) or 'none'})",
                                   field=f"priorities.{tag}")
        if prio != group.priorities:
            events.append(GroupPrioritiesSet(group=name, priorities=prio))
    if env is not _UNSET:
        variables = validate_env(env)
        if variables != group.env:
            events.append(GroupEnvSet(group=name, env=variables))
    return events


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# The job's own context: a group cannot override these.
RESERVED_ENV = frozenset({"GO_JOB_ID", "GO_WORKSPACE", "GO_TAG", "GO_WORKER_ID", "GO_WORKER_GROUP"})


def validate_env(env: object) -> dict[str, str]:
    """Static variables for a group's jobs: NAME=value, names like shell variables, 16 KiB total."""
    if not isinstance(env, dict):
        raise InvalidInput("env must be an object of NAME -> value", field="env")
    out: dict[str, str] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name) or name in RESERVED_ENV:
            raise InvalidInput(f"env variable name {name!r} is not allowed", field=f"env.{name}")
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidInput(f"env variable {name} must be a string without NUL", field=f"env.{name}")
        out[name] = value
    if sum(len(k) + len(v) for k, v in out.items()) > 16 * 1024:
        raise InvalidInput("env is larger than 16 KiB", field="env")
    return dict(sorted(out.items()))


def reset_group(
    state: ConfigState, name: str, preset: str, *, expected_version: int | None = None,
    create: bool = False,
) -> list[ConfigEvent]:
    """The product's reset buttons: `default` (all minus native), `native`, or `all`. They act
    on a group that exists (a typo must not create one); `create` is the first start's seed."""
    if preset not in PRESETS:
        raise InvalidInput(
            f"preset {preset!r} is unknown; use one of {', '.join(PRESETS)}", field="preset"
        )
    validate_group_name(name)
    if not create and name not in state.groups:
        raise NotFound(f"group {name!r} does not exist (create it with `getoperate group set"
                       f" {name} --tags ...`)", field="group")
    return set_group(state, name, tags=list(PRESETS[preset]), expected_version=expected_version)


def delete_group(
    state: ConfigState, name: str, *, expected_version: int | None = None
) -> list[ConfigEvent]:
    """Delete a group's stored config; its running workers then listen to nothing until it returns."""
    validate_group_name(name)
    group = state.groups.get(name)
    if group is None:
        raise NotFound(f"group {name!r} does not exist", field="group")
    _check_version(group.version, expected_version, f"group {name!r}")
    return [GroupDeleted(group=name)]


# The product document's two groups, made on the first start (cli/up.py runs a worker of each).
SEEDED_GROUPS = ("default", "native")


def seed(state: ConfigState) -> list[ConfigEvent]:
    """First start: the product document's two groups, as ordinary events."""
    if state.seq:
        return []
    events: list[ConfigEvent] = []
    for name in SEEDED_GROUPS:
        events += reset_group(ConfigState(), name, name, create=True)
    return events


def _check_code(content: object, field: str) -> str:
    if not isinstance(content, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    if len(content.encode("utf-8")) > MAX_SCRIPT_BYTES:
        raise InvalidInput(f"{field} is larger than {MAX_SCRIPT_BYTES} bytes", field=field)
    return content


def _check_language(language: object, field: str = "language") -> str:
    if not isinstance(language, str) or not language.strip() or len(language) > 32:
        raise InvalidInput(f"{field} must be a non-empty name (bash, python3, ...)", field=field)
    return language


def _check_deploy_tag(state: ConfigState, workspace: str, tag: str | None, field: str) -> None:
    """A deployed tag closed to its own workspace would only ever be refused at run: refuse it
    at deploy (docs/tags.md). A tag holding `$args[...]` is known only at run, checked then."""
    if not tag or "$args[" in tag:
        return
    filled = tag.replace(WORKSPACE_REF, workspace)
    why = closed_reason(state, filled, workspace)
    if why is not None:
        raise Forbidden(f"{field}: {why}: its runs would all be refused", field=field)


def deploy_script(
    state: ConfigState, workspace: str, path: str, *, language: str, content: str,
    tag: str | None = None, expected_version: int | None = None, timeout: float | None = None,
) -> list[ConfigEvent]:
    """Deploy a new version of a script (always a new event: a redeploy is a new version)."""
    if timeout is not None and not (0 < timeout <= MAX_TIMEOUT):
        raise InvalidInput(f"timeout must be between 0 and {MAX_TIMEOUT:g} seconds",
                           field="timeout")
    validate_workspace(workspace)
    validate_path(path)
    old = state.scripts.get(key(workspace, path))
    _check_version(old.version if old else 0, expected_version, f"script {workspace}/{path}")
    tag = validate_tag(tag) if tag else None
    _check_deploy_tag(state, workspace, tag, "tag")
    return [ScriptDeployed(workspace=workspace, path=path, language=_check_language(language),
                           content=_check_code(content, "content"), tag=tag, timeout=timeout)]


def record_lock(
    state: ConfigState, workspace: str, path: str, *, version: int,
    requirements: tuple[str, ...], lock: str | None, error: str | None, job_id: str | None,
) -> list[ConfigEvent]:
    """Record what a script's dependency job resolved; nothing when that version is gone or
    already has exactly this outcome (a repeat after a restart)."""
    script = state.scripts.get(key(workspace, path))
    if script is None or script.version != version:
        return []
    if (script.lock, script.lock_error, script.lock_job) == (lock, error, job_id):
        return []
    if (lock is None) == (error is None):
        raise InvalidInput("a lock needs exactly one of lock and error", field="lock")
    return [ScriptLocked(workspace=workspace, path=path, version=version,
                         requirements=requirements, lock=lock, error=error, job_id=job_id)]


def deploy_flow(
    state: ConfigState, workspace: str, path: str, *, steps: list[FlowStep] | tuple[FlowStep, ...],
    tag: str | None = None, preserve_step_tags: bool = False, expected_version: int | None = None,
) -> list[ConfigEvent]:
    """Deploy a new version of a flow; script steps must name deployed scripts of the workspace."""
    validate_workspace(workspace)
    validate_path(path)
    old = state.flows.get(key(workspace, path))
    _check_version(old.version if old else 0, expected_version, f"flow {workspace}/{path}")
    if not steps:
        raise InvalidInput("a flow needs at least one step", field="steps")
    if len(steps) > MAX_FLOW_STEPS:
        raise InvalidInput(f"a flow has at most {MAX_FLOW_STEPS} steps", field="steps")
    for i, step in enumerate(steps):
        field = f"steps[{i}]"
        if (step.script is None) == (step.content is None):
            raise InvalidInput(f"{field} needs exactly one of 'script' (a deployed path) or 'content'",
                               field=field)
        if step.script is not None:
            validate_path(step.script, field=f"{field}.script")
            if key(workspace, step.script) not in state.scripts:
                raise NotFound(f"{field}: no script {step.script!r} is deployed in workspace"
                               f" {workspace!r}", field=f"{field}.script")
        else:
            _check_language(step.language, f"{field}.language")
            _check_code(step.content, f"{field}.content")
        if step.tag:
            validate_tag(step.tag, field=f"{field}.tag")
            _check_deploy_tag(state, workspace, step.tag, f"{field}.tag")
    if tag:
        _check_deploy_tag(state, workspace, validate_tag(tag), "tag")
    return [FlowDeployed(workspace=workspace, path=path, steps=tuple(steps),
                         tag=validate_tag(tag) if tag else None,
                         preserve_step_tags=preserve_step_tags)]


def set_assignable_tag(state: ConfigState, spec: str, replace: bool = False
                       ) -> list[ConfigEvent]:
    """Add an assignable custom tag from `gpu(ws1+ws2)` syntax. Changing the restriction of one
    that exists needs `replace`: `tags add gpu` after `gpu(ws1+ws2)` would otherwise open a
    restricted tag to every workspace by accident."""
    tag, only, exclude = parse_tag_spec(spec)
    current = state.assignable.get(tag)
    if current is not None and (set(current.only), set(current.exclude)) == (set(only),
                                                                              set(exclude)):
        return []  # the same restriction, however its workspaces are ordered
    if current is not None and not replace:
        was = format_tag_spec(tag, current.only, current.exclude)
        now = format_tag_spec(tag, only, exclude)
        raise Conflict(f"tag {tag!r} is already assignable as {was!r}; adding {now!r} would"
                       " change who may use it: add --replace (HTTP: \"replace\": true) to do"
                       " that", field="spec")
    return [AssignableTagSet(tag=tag, only=only, exclude=exclude)]


def remove_assignable_tag(state: ConfigState, tag: str) -> list[ConfigEvent]:
    if tag not in state.assignable:
        raise NotFound(f"tag {tag!r} is not an assignable tag", field="tag")
    return [AssignableTagRemoved(tag=tag)]


_TOKEN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def create_token(
    state: ConfigState, name: str, *, workspace: str | None, token_hash: str
) -> list[ConfigEvent]:
    """Record a new token (by hash). Names are unique among live tokens."""
    if not isinstance(name, str) or not _TOKEN_NAME.fullmatch(name):
        raise InvalidInput(f"token name {name!r} must be 1-64 characters of letters, digits, '_-.'",
                           field="name")
    if name == "admin":
        raise InvalidInput("the name 'admin' is reserved for the bootstrap token", field="name")
    if name in state.tokens:
        raise Conflict(f"a token named {name!r} already exists; revoke it or pick another name",
                       field="name")
    if workspace is not None:
        validate_workspace(workspace)
    return [TokenCreated(name=name, workspace=workspace, token_hash=token_hash)]


def revoke_token(state: ConfigState, name: str) -> list[ConfigEvent]:
    if name not in state.tokens:
        raise NotFound(f"no token named {name!r}", field="name")
    return [TokenRevoked(name=name)]
