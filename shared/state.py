"""The pure fold of config events into state, and the command checks that decide new events.

Every service builds its view with `fold`/`evolve` from here, so config means the same everywhere.
"""

from __future__ import annotations

from typing import Iterable

import msgspec

from shared.errors import Conflict, InvalidInput, NotFound
from shared.events import (
    ConfigEvent,
    GroupCreated,
    GroupDeleted,
    GroupInitScriptSet,
    GroupTagsSet,
    Recorded,
)
from shared.tags import PRESETS, validate_group_name, validate_tags

MAX_INIT_SCRIPT_BYTES = 64 * 1024


class GroupConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One worker group's configuration; `version` is the sequence of the last event that changed it."""

    name: str
    tags: tuple[str, ...] = ()
    init_script: str | None = None
    version: int = 0


class ConfigState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the config log says, as of sequence `seq`. Treat as immutable."""

    seq: int = 0
    groups: dict[str, GroupConfig] = msgspec.field(default_factory=dict)


def _with_group(state: ConfigState, seq: int, group: GroupConfig | None, name: str) -> ConfigState:
    groups = dict(state.groups)
    if group is None:
        groups.pop(name, None)
    else:
        groups[name] = group
    return ConfigState(seq=seq, groups=groups)


def evolve(state: ConfigState, rec: Recorded) -> ConfigState:
    """Apply one recorded event. Events for unknown groups are applied leniently (replay of a subset)."""
    event = rec.event
    seq = rec.seq
    match event:
        case GroupCreated(group=name):
            return _with_group(state, seq, GroupConfig(name=name, version=seq), name)
        case GroupTagsSet(group=name, tags=tags):
            old = state.groups.get(name) or GroupConfig(name=name)
            return _with_group(state, seq, msgspec.structs.replace(old, tags=tags, version=seq), name)
        case GroupInitScriptSet(group=name, init_script=script):
            old = state.groups.get(name) or GroupConfig(name=name)
            new = msgspec.structs.replace(old, init_script=script, version=seq)
            return _with_group(state, seq, new, name)
        case GroupDeleted(group=name):
            return _with_group(state, seq, None, name)
    return ConfigState(seq=seq, groups=state.groups)  # an event this version does not act on


def fold(records: Iterable[Recorded], state: ConfigState | None = None) -> ConfigState:
    """state = fold(events): the only way any service turns the log into configuration."""
    state = state if state is not None else ConfigState()
    for rec in records:
        state = evolve(state, rec)
    return state


def groups_by_tag(state: ConfigState) -> dict[str, tuple[str, ...]]:
    """Which configured groups listen to each tag (for 'nobody serves this tag' answers)."""
    index: dict[str, list[str]] = {}
    for group in state.groups.values():
        for tag in group.tags:
            index.setdefault(tag, []).append(group.name)
    return {tag: tuple(sorted(names)) for tag, names in index.items()}


# --- commands: check against state, return the events to append (or raise) -------------------


def _check_version(group: GroupConfig | None, expected: int | None, name: str) -> None:
    if expected is None:
        return
    actual = group.version if group else 0
    if actual != expected:
        raise Conflict(
            f"group {name!r} is at version {actual}, not {expected}: someone changed it first;"
            " re-read it and retry",
            field="expected_version",
        )


def validate_init_script(script: object) -> str | None:
    """Init scripts are bash text up to a documented size; empty means none."""
    if script is None:
        return None
    if not isinstance(script, str):
        raise InvalidInput("init_script must be a string or null", field="init_script")
    if len(script.encode("utf-8")) > MAX_INIT_SCRIPT_BYTES:
        raise InvalidInput(
            f"init_script is {len(script.encode('utf-8'))} bytes; the limit is {MAX_INIT_SCRIPT_BYTES}",
            field="init_script",
        )
    return script if script.strip() else None


_UNSET = object()


def set_group(
    state: ConfigState,
    name: str,
    *,
    tags: object = _UNSET,
    init_script: object = _UNSET,
    expected_version: int | None = None,
) -> list[ConfigEvent]:
    """Create the group if needed and set what was given; unchanged fields emit nothing."""
    validate_group_name(name)
    group = state.groups.get(name)
    _check_version(group, expected_version, name)
    events: list[ConfigEvent] = []
    if group is None:
        events.append(GroupCreated(group=name))
        group = GroupConfig(name=name)
    if tags is not _UNSET:
        new_tags = validate_tags(tags)
        if new_tags != group.tags:
            events.append(GroupTagsSet(group=name, tags=new_tags))
    if init_script is not _UNSET:
        script = validate_init_script(init_script)
        if script != group.init_script:
            events.append(GroupInitScriptSet(group=name, init_script=script))
    return events


def reset_group(
    state: ConfigState, name: str, preset: str, *, expected_version: int | None = None
) -> list[ConfigEvent]:
    """The product's reset buttons: `default` (all minus native), `native`, or `all`."""
    if preset not in PRESETS:
        raise InvalidInput(
            f"preset {preset!r} is unknown; use one of {', '.join(PRESETS)}", field="preset"
        )
    return set_group(state, name, tags=list(PRESETS[preset]), expected_version=expected_version)


def delete_group(
    state: ConfigState, name: str, *, expected_version: int | None = None
) -> list[ConfigEvent]:
    """Delete a group's stored config; its running workers then listen to nothing until it returns."""
    validate_group_name(name)
    group = state.groups.get(name)
    if group is None:
        raise NotFound(f"group {name!r} does not exist", field="group")
    _check_version(group, expected_version, name)
    return [GroupDeleted(group=name)]


def seed(state: ConfigState) -> list[ConfigEvent]:
    """First start: the product document's two groups, as ordinary events."""
    if state.seq:
        return []
    events: list[ConfigEvent] = []
    for name in ("default", "native"):
        events += reset_group(ConfigState(), name, name)
    return events


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
    if old is not None and new is None:
        changes.append("group deleted")
    if old is None and new is not None:
        changes.append("group created")
    return changes
