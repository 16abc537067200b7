"""A group's isolation settings on the config side: the command that decides `group.limits_set`
and `group.sandbox_set` (with the rest of a group write), and how limits read for people.

The events, their fold and the limits syntax live in shared/events.py, shared/state.py and
shared/limits.py; this module composes them, so `PUT /groups/{name}` stays one command against
one state (one `expected_version` check, nothing written when any field is refused).
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared import limits as lim
from shared import state as st
from shared.errors import InvalidInput
from shared.events import ConfigEvent, GroupLimitsSet, GroupSandboxSet, JobLimits

SANDBOXES = ("bwrap", "none")
# What a group may ask for; "default" (or null) leaves the choice to the worker's JOB_SANDBOX.
SANDBOX_CHOICES = (*SANDBOXES, "default")

_UNSET: Any = object()


def validate_sandbox(value: object) -> str | None:
    """`bwrap` or `none`; `default` and null mean the worker's own setting (stored as None)."""
    if value is None or value == "default":
        return None
    if value not in SANDBOXES:
        raise InvalidInput(f"sandbox must be one of {', '.join(SANDBOX_CHOICES)} (or null),"
                           f" got {value!r}", field="sandbox")
    return value  # type: ignore[return-value]


def validate_network(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"network must be true or false, got {value!r}", field="network")
    return value


def set_group(
    state: st.ConfigState, name: str, *, limits: object = _UNSET, sandbox: object = _UNSET,
    network: object = _UNSET, expected_version: int | None = None, **fields: object,
) -> list[ConfigEvent]:
    """`state.set_group` (tags, init script, dedicated, priorities, env) plus the group's limits
    (the complete set: what is not given is the default) and its sandbox and network (each kept
    as it is unless given). Only what changes becomes an event."""
    events = st.set_group(state, name, expected_version=expected_version, **fields)
    group = state.groups.get(name) or st.GroupConfig(name=name)
    if limits is not _UNSET:
        new_limits = lim.validate(limits)
        if new_limits != group.limits:
            events.append(GroupLimitsSet(group=name, limits=new_limits))
    if sandbox is not _UNSET or network is not _UNSET:
        box = group.sandbox if sandbox is _UNSET else validate_sandbox(sandbox)
        net = group.network if network is _UNSET else validate_network(network)
        if (box, net) != (group.sandbox, group.network):
            events.append(GroupSandboxSet(group=name, sandbox=box, network=net))
    return events


# --- reading limits ----------------------------------------------------------------------------

_UNITS = (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024))
SIZE_FIELDS = frozenset({"memory", "file_size"})


def format_size(n: int) -> str:
    """Bytes in the largest unit that divides them exactly (`512M`, `1G`, `1000`): what
    `--limits` reads back to the same number."""
    for unit, size in _UNITS:
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_value(name: str, value: int | float) -> str:
    if name in SIZE_FIELDS:
        return format_size(int(value))
    return format_seconds(value) if name == "max_timeout" else str(value)


def format_limits(limits: JobLimits) -> str:
    """`memory=512M,max_timeout=3600`, the `--limits` syntax (parse() reads it back to the same
    limits); `default` when nothing is set."""
    return ",".join(f"{k}={format_value(k, v)}" for k, v in lim.as_dict(limits).items()) or "default"


def describe_sandbox(sandbox: str | None, network: bool) -> str:
    """One short word for tables: `bwrap`, `bwrap/no-net`, `none`, `default` (the worker's)."""
    return (sandbox or "default") + ("" if network else "/no-net")


class GroupView(st.GroupConfig, frozen=True, kw_only=True):
    """A group as the HTTP API answers it: its stored config (`limits` holds only what was set)
    and `effective_limits`, what its jobs run under (unset limits at their defaults)."""

    effective_limits: JobLimits


def group_view(group: st.GroupConfig) -> GroupView:
    return GroupView(**msgspec.structs.asdict(group), effective_limits=lim.effective(group.limits))
