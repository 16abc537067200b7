"""Pure routing: which code a submission runs and which tag it goes to, with every precedence rule.

Precedence (docs/tags.md): job override > dedicated worker > flow tag (unless the flow preserves
step tags) > step tag > script tag > language default. Templates (`$workspace`, `$args[a.b]`) are
filled in, then the allow-check runs on the RESOLVED tag, so `$args[t]` cannot reach a tag the
workspace may not use. `check_timeout` then refuses a job that asks for more time than the
groups serving its tag allow (their `max_timeout`).
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import msgspec

from shared.errors import DependenciesFailed, Forbidden, InvalidInput, NotFound
from shared.limits import DEFAULTS
from shared import tagaccess
from shared.state import ConfigState, Flow, Script, groups_by_tag, key
from shared.tags import (
    SYSTEM_TAGS, default_tag, fill_template, is_template, parse_target, target_tag, validate_path,
    validate_tag,
    validate_workspace,
)

DEPENDENCY_TAG = "dependency"  # where dependency jobs run (the product document's seeded tag)


class PlannedStep(msgspec.Struct, frozen=True, kw_only=True):
    """A flow step with its code and tag resolved when the flow was submitted."""

    index: int
    name: str
    language: str
    code: str
    tag: str
    path: str | None = None
    script_version: int | None = None
    timeout: float | None = None


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """Where a submission goes and what it runs."""

    tag: str
    kind: Literal["inline", "script", "flow", "dependency"]
    language: str
    code: str
    path: str | None = None
    version: int | None = None
    steps: tuple[PlannedStep, ...] = ()
    timeout: float | None = None
    lock: str | None = None  # a python3 script's resolved dependencies (shared/pydeps.py)


def dedicated_targets(state: ConfigState) -> set[str]:
    return {t for g in state.groups.values() for t in g.dedicated}


def check_tag_allowed(
    state: ConfigState, tag: str, template: str, workspace: str, *, admin: bool, trusted: bool
) -> None:
    """May `workspace` (as admin or a workspace token) use the resolved `tag`?

    A tag closed to the workspace (shared/tagaccess.py: a restriction, another workspace's
    dedicated tag) is refused to everyone, admins included; workers apply the same rule when a
    job reaches them. `trusted` marks a template that came from deployed config (checked when
    deployed) and holds no `$args`, which the runner controls.
    """
    tagaccess.check_open(state, tag, workspace)
    if admin or tag in SYSTEM_TAGS or tagaccess.rule_for(state, tag, workspace) is not None:
        return
    if trusted and "$args[" not in template:
        return
    raise Forbidden(
        f"tag {tag!r} is not assignable in workspace {workspace!r}: an admin can add it with"
        " `getoperate tags add`", field="tag",
    )


def _resolve(
    state: ConfigState, template: str, workspace: str, args: Mapping[str, Any], *, admin: bool,
    trusted: bool,
) -> str:
    tag = validate_tag(fill_template(template, workspace=workspace, args=args), field="tag")
    if is_template(tag):  # an argument smuggled placeholder text in; no worker listens to that
        raise InvalidInput(f"tag {tag!r} still holds a placeholder after filling in the arguments",
                           field="tag")
    check_tag_allowed(state, tag, template, workspace, admin=admin, trusted=trusted)
    return tag


def find_deployed(state: ConfigState, workspace: str, path: str, kind: str | None) -> Script | Flow:
    validate_workspace(workspace)
    validate_path(path)
    script = state.scripts.get(key(workspace, path)) if kind in (None, "script") else None
    flow = state.flows.get(key(workspace, path)) if kind in (None, "flow") else None
    if script is not None and flow is not None:
        raise InvalidInput(f"{workspace}/{path} is both a script and a flow: say which with kind",
                           field="kind")
    found = script or flow
    if found is None:
        what = kind or "script or flow"
        raise NotFound(f"no {what} {path!r} is deployed in workspace {workspace!r}", field="path")
    return found


def route(
    state: ConfigState, *, workspace: str, args: Mapping[str, Any], override: str | None = None,
    language: str | None = None, code: str | None = None, path: str | None = None,
    kind: str | None = None, admin: bool, planned: bool = False,
) -> Route:
    """Resolve a submission: inline code, a deployed script, or a deployed flow (with its steps).
    `admin` is required: whether the submitter holds an admin token decides which tags it may
    name, so no caller may get an admin's rights by leaving it out.

    `planned` marks a flow's step whose code and tag its flow's grant vouches for: the tag was
    resolved from deployed config when the flow was routed, so it is trusted like one (a closed
    tag is still refused: restrictions are checked again now)."""
    validate_workspace(workspace)
    dedicated = dedicated_targets(state)
    if path is None:
        if not language or code is None:
            raise InvalidInput("give language and code, or the path of a deployed script or flow",
                               field="language" if not language else "code")
        template = override or default_tag(language)
        tag = _resolve(state, template, workspace, args, admin=admin, trusted=planned)
        script = _dedicated_step(state, workspace, tag, language, code) if planned else None
        if script is not None:
            return Route(tag=tag, kind="script", language=language, code=code,
                         path=script.path, version=script.version, timeout=script.timeout,
                         lock=script.lock)
        return Route(tag=tag, kind="inline", language=language, code=code)
    if kind == "dependency":
        return _route_dependency(state, workspace, path, language, code, override, args, admin)
    found = find_deployed(state, workspace, path, kind)
    if isinstance(found, Script):
        if found.lock_error is not None:
            raise DependenciesFailed(
                f"script {workspace}/{path} (version {found.version}) cannot run: its dependency"
                f" job {found.lock_job or ''} failed: {found.lock_error}; deploy it again once"
                " fixed", field="path")
        template, trusted = _precedence(override, f"{workspace}:{path}", dedicated,
                                        found.tag or default_tag(found.language))
        tag = _resolve(state, template, workspace, args, admin=admin, trusted=trusted)
        return Route(tag=tag, kind="script", language=found.language, code=found.content,
                     path=path, version=found.version, timeout=found.timeout, lock=found.lock)
    return _route_flow(state, found, workspace, args, override, dedicated, admin)


def _precedence(override: str | None, target: str | None, dedicated: set[str],
                fallback: str) -> tuple[str, bool]:
    """The one statement of precedence (docs/tags.md) for a deployed script, a flow and each
    step: the job's override, else the dedicated tag of `target` when a group is dedicated to
    it, else `fallback` (the flow's tag, the step's or script's own tag, or the language's
    default, as the caller says). Also whether the template is trusted: only an override is
    the submitter's own words."""
    if override:
        return override, False
    if target is not None and target in dedicated:
        return target_tag(target), True
    return fallback, True


def _dedicated_step(state: ConfigState, workspace: str, tag: str, language: str,
                    code: str) -> Script | None:
    """The deployed script a flow's step runs when the step goes to that script's dedicated tag
    with exactly its code: the step is then that script's job (kind `script`), so a dedicated
    worker runs it in the script's warm runtime instead of a process per step. Anything else
    (other code on the tag, a script whose dependencies failed to lock) stays inline and runs
    cold, never inside the warm runtime."""
    for target in dedicated_targets(state):
        ws, path, flow = parse_target(target)
        if ws != workspace or flow or target_tag(target) != tag:
            continue
        script = state.scripts.get(key(workspace, path))
        if (script is not None and script.language == language and script.content == code
                and script.lock_error is None):
            return script
    return None


def _route_dependency(state: ConfigState, workspace: str, path: str, language: str | None,
                      code: str | None, override: str | None, args: Mapping[str, Any],
                      admin: bool) -> Route:
    """A deployed script's dependency job: on tag `dependency` (or the admin's override); its
    code is the version being locked, sent by the config service (a router may not have folded
    that deploy yet); its result is the lock, which the config service records."""
    if not admin:
        raise Forbidden("only an admin (the config service) queues dependency jobs", field="kind")
    validate_path(path)
    if not language or code is None:
        raise InvalidInput("a dependency job needs the script's language and code",
                           field="language" if not language else "code")
    tag = _resolve(state, override or DEPENDENCY_TAG, workspace, args, admin=True, trusted=True)
    return Route(tag=tag, kind="dependency", language=language, code=code, path=path)


def _route_flow(
    state: ConfigState, flow: Flow, workspace: str, args: Mapping[str, Any], override: str | None,
    dedicated: set[str], admin: bool,
) -> Route:
    template, trusted = _precedence(override, f"{workspace}:flow/{flow.path}", dedicated,
                                    flow.tag or "flow")
    tag = _resolve(state, template, workspace, args, admin=admin, trusted=trusted)
    steps = []
    for i, step in enumerate(flow.steps):
        script = state.scripts.get(key(workspace, step.script)) if step.script else None
        if step.script and script is None:
            raise NotFound(f"step {i + 1} of flow {flow.path!r} uses script {step.script!r},"
                           " which is no longer deployed", field=f"steps[{i}].script")
        language = script.language if script else (step.language or "")
        code = script.content if script else (step.content or "")
        fallback = (flow.tag if flow.tag and not flow.preserve_step_tags else
                    step.tag or (script.tag if script else None) or default_tag(language))
        stemplate, strusted = _precedence(
            override, f"{workspace}:{step.script}" if step.script else None, dedicated, fallback)
        stag = _resolve(state, stemplate, workspace, args, admin=admin, trusted=strusted)
        steps.append(PlannedStep(
            index=i + 1, name=step.name or step.script or f"step{i + 1}", language=language,
            code=code, tag=stag, path=step.script, script_version=script.version if script else None,
            timeout=script.timeout if script else None,
        ))
    return Route(tag=tag, kind="flow", language="flow", code="", path=flow.path,
                 version=flow.version, steps=tuple(steps))


# --- timeouts: the longest a job may ask for -----------------------------------------------------


class TimeoutCap(msgspec.Struct, frozen=True, kw_only=True):
    """The longest timeout a job on `tag` may have, and where that limit comes from: `group` set
    it (`explicit`), or it is the default (`group` then names a serving group without its own
    max_timeout, or is None when no group serves the tag)."""

    tag: str
    seconds: float
    group: str | None = None
    explicit: bool = False

    def describe(self) -> str:
        """`max_timeout 3600 s of group gpu (serving tag gpu)`."""
        limit = f"max_timeout {_seconds(self.seconds)} s"
        if self.explicit:
            return f"{limit} of group {self.group} (serving tag {self.tag})"
        if self.group is not None:
            return f"the default {limit} of group {self.group} (serving tag {self.tag})"
        return f"the default {limit} (no worker group serves tag {self.tag})"


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def max_timeout(
    state: ConfigState, tag: str, index: Mapping[str, tuple[str, ...]] | None = None
) -> TimeoutCap:
    """The smallest max_timeout among the groups that serve `tag` (their own, else the default of
    shared/limits.py), or the default when no group serves it. Any of those groups may take the
    job, so it must fit the strictest. On a tie a group that set the limit is named (then the
    first by name). `index` is groups_by_tag(state), for callers that keep it."""
    default = float(DEFAULTS.max_timeout or 0.0)
    names = (index if index is not None else groups_by_tag(state)).get(tag, ())
    best = TimeoutCap(tag=tag, seconds=default)
    best_key: tuple[float, bool, str] | None = None
    for name in names:
        group = state.groups.get(name)
        if group is None:
            continue
        own = group.limits.max_timeout
        key_ = (float(own) if own is not None else default, own is None, name)
        if best_key is None or key_ < best_key:
            best_key = key_
            best = TimeoutCap(tag=tag, seconds=key_[0], group=name, explicit=own is not None)
    return best


def check_timeout(
    state: ConfigState, r: Route, timeout: float | None,
    index: Mapping[str, tuple[str, ...]] | None = None,
) -> None:
    """Refuse a submission that asks for more time than its tag's groups allow (docs/tags.md):
    the job's `timeout`, else the deployed script's, against max_timeout(tag); for a flow, each
    step's too (the script's timeout, else the flow's, as the flow runner submits it), so a flow
    is refused at once rather than at the step. It binds every token, admins included: an admin
    raises the group's limit instead. No timeout at all is the worker's JOB_TIMEOUT, which the
    worker caps itself."""
    wanted = timeout or r.timeout
    if wanted is not None:
        cap = max_timeout(state, r.tag, index)
        if wanted > cap.seconds:
            raise InvalidInput(f"timeout {_seconds(wanted)} s is above {cap.describe()}",
                               field="timeout")
    for step in r.steps:
        step_wanted = step.timeout or timeout
        if step_wanted is None:
            continue
        cap = max_timeout(state, step.tag, index)
        if step_wanted > cap.seconds:
            raise InvalidInput(
                f"timeout {_seconds(step_wanted)} s of step {step.index} ({step.name}) is above"
                f" {cap.describe()}", field="timeout")
