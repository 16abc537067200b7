"""A group's isolation settings on the config side: the command that decides `group.limits_set`
and `group.sandbox_set` (with the rest of a group write), and how limits read for people.

The events, their fold and the limits syntax live in shared/events.py, shared/state.py and
shared/limits.py; this module composes them, so `PUT /groups/{name}` stays one command against
one state (one `expected_version` check, nothing written when any field is refused).
"""

from __future__ import annotations

import re
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


def validate_limits(value: object) -> JobLimits:
    """Limits as HTTP gives them (an object of name -> number or "512M"; null or {} = every limit
    at its default) or a JobLimits, checked by shared/limits.py. Two gaps of its checks are closed
    here, so they are a 400 naming the field and never a 500 or a silent change: a number too
    large to convert (`cpu_seconds="9...9"`, overflow) and a fraction written for a whole-number
    limit (`processes="4.9"`, which it would cut to 4)."""
    if isinstance(value, JobLimits):
        value = lim.as_dict(value)  # still checked: a struct can hold anything
    if isinstance(value, dict):
        value = {name: _exact(name, raw) for name, raw in value.items()}
        for name, raw in value.items():
            field = f"limits.{name}"
            if (name in lim.FIELDS and name != "max_timeout" and isinstance(raw, str)
                    and _FRACTION.match(raw.strip())):
                raise InvalidInput(f"{field} must be a whole number, got {raw!r}", field=field)
            try:
                lim.validate({name: raw})
            except OverflowError:
                raise InvalidInput(f"{field} is out of range, got {_short(raw)}",
                                   field=field) from None
    return lim.validate(value)


def _exact(name: object, raw: object) -> object:
    """`"600"` for a whole-number limit as the int 600, so it is not read through a float
    (which would change numbers above 2^53 and overflow on very long ones)."""
    if name in _WHOLE and isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        return int(raw.strip())
    return raw


_WHOLE = frozenset({"cpu_seconds", "processes"})
_FRACTION = re.compile(r"^\d*\.\d*[1-9]\d*$")


def _short(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_limits(text: str) -> JobLimits:
    """`memory=512M,cpu_seconds=600,...` (the CLI's --limits; `default` resets every limit), with
    the checks of validate_limits."""
    text = text.strip()
    if text in ("", "default"):
        return JobLimits()
    pairs: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise InvalidInput(f"limits: {part.strip()!r} must look like name=value"
                               " (e.g. memory=512M,processes=256), or `default`", field="limits")
        pairs[name.strip()] = value.strip()
    return validate_limits(pairs)


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
        new_limits = validate_limits(limits)
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
