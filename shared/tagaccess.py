"""Which workspace may use, and which may see, a tag: one rule for the router, the worker and the
HTTP views.

A tag is *closed* to a workspace when an assignable rule covering it excludes that workspace
(`gpu(ws1+ws2)`, `gpu(^ws3)`, or a template `normal-$workspace(dev+prod)` whose instance it is),
or when it is the dedicated tag (`ws:path`) of a script or flow of another workspace. Closed binds
everyone, admins included: the router refuses such a submission (shared/routing.py) and a worker
refuses such a job when it arrives (services/worker/attempt.py), so a job put on a queue without
the router, or queued before the restriction, does not run there.

What a workspace token is shown (`GET /tags`, `GET /workers`, `/metrics`) is the tags it could
use: the system tags, the assignable tags open to it, its own dedicated tags and the tags its
deployed scripts and flows name. Anything else may name another workspace or its work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from shared.errors import Forbidden
from shared.tags import SYSTEM_TAGS, WORKSPACE_REF, parse_target, target_tag

if TYPE_CHECKING:  # types only: state.py calls into this module (deploy checks), not back
    from shared.state import AssignableTag, ConfigState


def rule_for(state: ConfigState, tag: str, workspace: str) -> AssignableTag | None:
    """The assignable rule covering `tag` for `workspace`: the tag's own, else a template
    (`normal-$workspace`) of which the tag is this workspace's instance, so its restriction holds
    however a job spelled the tag (literally, or through `$args`)."""
    rule = state.assignable.get(tag)
    if rule is not None:
        return rule
    for rule in state.assignable.values():
        if WORKSPACE_REF in rule.tag and rule.tag.replace(WORKSPACE_REF, workspace) == tag:
            return rule
    return None


def dedicated_owner(state: ConfigState, tag: str) -> str | None:
    """The workspace whose script or flow `tag` is the dedicated tag of, if any group has it."""
    if ":" not in tag:  # every dedicated tag is `ws:...`: most tags stop here
        return None
    for group in state.groups.values():
        for target in group.dedicated:
            if target_tag(target) == tag:
                return parse_target(target)[0]
    return None


def closed_reason(state: ConfigState, tag: str, workspace: str) -> str | None:
    """Why `tag` is closed to `workspace` (a sentence naming both), or None when it is open."""
    rule = rule_for(state, tag, workspace)
    if rule is not None and not rule.allows(workspace):
        return f"tag {tag!r} is not available to workspace {workspace!r}"
    owner = dedicated_owner(state, tag)
    if owner is not None and owner != workspace:
        return (f"tag {tag!r} is the dedicated tag of a script or flow of workspace {owner!r},"
                f" not available to workspace {workspace!r}")
    return None


def check_open(state: ConfigState, tag: str, workspace: str) -> None:
    """Raise Forbidden (field `tag`) when `tag` is closed to `workspace`."""
    reason = closed_reason(state, tag, workspace)
    if reason is not None:
        raise Forbidden(reason, field="tag")


def visible_to(state: ConfigState, workspace: str) -> Callable[[str], bool]:
    """A predicate: may a token of `workspace` see `tag` named (in lists, labels, heartbeats)?

    Built once per answer: it gathers the tags the workspace's deployed scripts and flows name
    (templates filled with the workspace; a tag that depends on `$args` is known only per job).
    """
    deployed: set[str] = set()
    prefix = f"{workspace}/"
    templates = [s.tag for k, s in state.scripts.items() if k.startswith(prefix)]
    for k, flow in state.flows.items():
        if k.startswith(prefix):
            templates.append(flow.tag)
            templates.extend(step.tag for step in flow.steps)
    for template in templates:
        if template and "$args[" not in template:
            deployed.add(template.replace(WORKSPACE_REF, workspace))

    def visible(tag: str) -> bool:
        if closed_reason(state, tag, workspace) is not None:
            return False
        return (tag in SYSTEM_TAGS or tag in deployed
                or rule_for(state, tag, workspace) is not None
                or dedicated_owner(state, tag) == workspace)

    return visible
