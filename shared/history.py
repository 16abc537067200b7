"""Pure helpers for reading the config history: one-line summaries, points in time, state diffs."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from shared.errors import InvalidInput
from shared.events import (
    AssignableTagRemoved, AssignableTagSet, ConfigEvent, FlowDeployed, GroupCreated,
    GroupDedicatedSet, GroupDeleted, GroupEnvSet, GroupInitScriptSet, GroupLimitsSet,
    GroupPrioritiesSet, GroupSandboxSet, GroupTagsSet, ScriptDeployed, ScriptLocked, TokenCreated,
    TokenRevoked,
)
from shared.isolation import format_limits
from shared.state import ConfigState
from shared.tags import format_tag_spec


def summarize(event: ConfigEvent) -> str:
    """One human line per event, for `getoperate events`."""
    match event:
        case GroupCreated(group=g):
            return f"group {g} created"
        case GroupTagsSet(group=g, tags=tags):
            return f"group {g} tags = {', '.join(tags) or '(none)'}"
        case GroupInitScriptSet(group=g, init_script=script):
            if script is None:
                return f"group {g} init script removed"
            first = script.strip().splitlines()[0] if script.strip() else ""
            return f"group {g} init script set ({len(script.splitlines())} lines: {first[:40]})"
        case GroupDedicatedSet(group=g, targets=t):
            return f"group {g} dedicated to {', '.join(t) or '(nothing)'}"
        case GroupPrioritiesSet(group=g, priorities=p):
            return f"group {g} priorities " + (", ".join(f"{k}={v}" for k, v in p.items()) or "cleared")
        case GroupEnvSet(group=g, env=env):
            return f"group {g} env = {', '.join(sorted(env)) or '(none)'}"
        case GroupLimitsSet(group=g, limits=limits):
            text = format_limits(limits)
            return (f"group {g} limits reset to the defaults" if text == "default"
                    else f"group {g} limits = {text} (others default)")
        case GroupSandboxSet(group=g, sandbox=sandbox, network=network):
            return (f"group {g} sandbox = {sandbox or 'worker default'},"
                    f" network {'on' if network else 'off'}")
        case GroupDeleted(group=g):
            return f"group {g} deleted"
        case ScriptDeployed(workspace=ws, path=p, language=lang, tag=tag):
            return f"script {ws}/{p} deployed ({lang}, tag {tag or 'default'})"
        case ScriptLocked(workspace=ws, path=p, requirements=reqs, error=None):
            return f"script {ws}/{p} locked ({len(reqs)} requirements)"
        case ScriptLocked(workspace=ws, path=p, error=error):
            return f"script {ws}/{p} dependencies failed: {(error or '')[:200]}"
        case FlowDeployed(workspace=ws, path=p, steps=steps, tag=tag):
            return f"flow {ws}/{p} deployed ({len(steps)} steps, tag {tag or 'flow'})"
        case AssignableTagSet(tag=t, only=only, exclude=exclude):
            return f"assignable tag {format_tag_spec(t, only, exclude)}"
        case AssignableTagRemoved(tag=t):
            return f"assignable tag {t} removed"
        case TokenCreated(name=n, workspace=ws):
            return f"token {n} created for {ws or 'admin'}"
        case TokenRevoked(name=n):
            return f"token {n} revoked"
    return type(event).__name__


def event_group(event: ConfigEvent) -> str | None:
    """The group an event is about, if any (for `--group` filters)."""
    return getattr(event, "group", None)


class Point:
    """A point in the log: a sequence number, or an ISO 8601 time (UTC when no zone is given)."""

    def __init__(self, seq: int | None = None, time: str | None = None):
        self.seq = seq
        self.time = time

    @classmethod
    def parse(cls, text: str, *, field: str = "at") -> "Point":
        text = text.strip()
        if text.isascii() and text.isdigit():  # not "¹": str.isdigit accepts it, int() doesn't
            return cls(seq=int(text))
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"{field} {text!r} is neither a sequence number nor an ISO 8601 time"
                " (e.g. 42 or 2026-11-28T10:32:00Z)", field=field) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        stamp = moment.astimezone(timezone.utc).isoformat(timespec="microseconds")
        return cls(time=stamp.replace("+00:00", "Z"))

    def includes(self, seq: int, time: str) -> bool:
        """Is a record at (seq, time) at or before this point? Log times are sortable ISO UTC."""
        if self.seq is not None:
            return seq <= self.seq
        assert self.time is not None
        return time <= self.time


def diff_states(a: ConfigState, b: ConfigState) -> list[str]:
    """What changed from state a to state b, one line per difference, sorted by kind and name."""
    out: list[str] = []
    out += _diff_map("group", a.groups, b.groups, lambda g: {
        "tags": list(g.tags), "init_script": g.init_script, "dedicated": list(g.dedicated),
        "priorities": g.priorities, "env": sorted(g.env), "limits": format_limits(g.limits),
        "sandbox": g.sandbox or "worker default", "network": "on" if g.network else "off"},
        quiet=_GROUP_DEFAULTS)
    out += _diff_map("script", a.scripts, b.scripts, lambda s: {
        "language": s.language, "tag": s.tag, "timeout": s.timeout, "revision": s.revision,
        "content": s.content})
    out += _diff_map("flow", a.flows, b.flows, lambda f: {
        "tag": f.tag, "revision": f.revision, "preserve_step_tags": f.preserve_step_tags,
        "steps": len(f.steps)})
    out += _diff_map("assignable tag", a.assignable, b.assignable,
                     lambda t: {"spec": format_tag_spec(t.tag, t.only, t.exclude)})
    out += _diff_map("token", a.tokens, b.tokens, lambda t: {"workspace": t.workspace or "(admin)"})
    return out


# Shown when they change, left out of a new group's line while they are at these values.
_GROUP_DEFAULTS = {"limits": "default", "sandbox": "worker default", "network": "on"}


def _diff_map(kind: str, a: dict[str, Any], b: dict[str, Any], view: Any,
              quiet: dict[str, Any] | None = None) -> list[str]:
    lines: list[str] = []
    quiet = quiet or {}
    for name in sorted(set(a) | set(b)):
        if name not in a:
            added = {k: v for k, v in view(b[name]).items()
                     if k != "content" and (k not in quiet or quiet[k] != v)}
            lines.append(f"+ {kind} {name}: {_fmt(added)}" if added else f"+ {kind} {name}")
        elif name not in b:
            lines.append(f"- {kind} {name}")
        else:
            va, vb = view(a[name]), view(b[name])
            for field in va:
                if va[field] != vb[field]:
                    if field == "content":
                        lines.append(f"~ {kind} {name}: content changed")
                    else:
                        lines.append(f"~ {kind} {name}: {field} {_fmt(va[field])} -> {_fmt(vb[field])}")
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, dict) and set(value) != {"spec"}:
        return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in value.items() if v not in (None, [], {})) + "}"
    if isinstance(value, dict):
        return str(value["spec"])
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, str) and "\n" in value:
        return f"<{len(value.splitlines())} lines>"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)
