"""What a hot reload changed, in words: the worker logs one line per reload with this list
(`config_reloaded`, `changes`), so an operator reading the log sees what a config event did to
the running worker without diffing events."""

from __future__ import annotations

import msgspec

from shared.events import JobLimits
from shared.state import GroupConfig


def describe_change(old: GroupConfig | None, new: GroupConfig | None) -> list[str]:
    """Human-readable list of what changed in a group, for hot-reload log lines."""
    changes: list[str] = []
    old_tags = set(old.tags) if old else set()
    new_tags = set(new.tags) if new else set()
    if added := sorted(new_tags - old_tags):
        changes.append("tags added: " + ", ".join(added))
    if removed := sorted(old_tags - new_tags):
        changes.append("tags removed: " + ", ".join(removed))
    if (old.init_script if old else None) != (new.init_script if new else None):
        changes.append("init script changed")
    if (old.dedicated if old else ()) != (new.dedicated if new else ()):
        changes.append("dedicated: " + (", ".join(new.dedicated) if new and new.dedicated else "none"))
    if (old.env if old else {}) != (new.env if new else {}):
        changes.append("env: " + (", ".join(sorted(new.env)) if new and new.env else "none"))
    if (old.priorities if old else {}) != (new.priorities if new else {}):
        prio = new.priorities if new else {}
        changes.append("priorities: " + (", ".join(f"{t}={p}" for t, p in prio.items()) or "none"))
    if (old.limits if old else JobLimits()) != (new.limits if new else JobLimits()):
        changes.append("limits: " + (describe_limits(new.limits) if new else "default"))
    old_box = (old.sandbox, old.network) if old else (None, True)
    new_box = (new.sandbox, new.network) if new else (None, True)
    if old_box != new_box:
        changes.append(f"sandbox: {new_box[0] or 'worker default'}, network "
                       f"{'on' if new_box[1] else 'off'}")
    if old is not None and new is None:
        changes.append("group deleted")
    if old is None and new is not None:
        changes.append("group created")
    return changes


def describe_limits(limits: JobLimits) -> str:
    """`memory=536870912,processes=256`, or `default` when nothing is set."""
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in msgspec.structs.asdict(limits).items() if v is not None]
    return ",".join(parts) or "default"
