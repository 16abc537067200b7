"""Job resource limits: the safe defaults, the `memory=512M,...` syntax, and the effective values.

A group's `group.limits_set` event stores only what an admin set; everything unset falls back to
DEFAULTS here, so every service (CLI, config, router, worker) agrees on what a job may use.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from shared.errors import InvalidInput
from shared.events import JobLimits

# The longest timeout a job, a script or a group's limits may ask for: a day.
MAX_TIMEOUT = 86400.0

# Safe for a shared machine, generous for ordinary jobs (docs/security.md explains each).
DEFAULTS = JobLimits(
    memory=2 * 1024**3,  # the job's processes together
    cpu_seconds=3600,  # CPU time of each process of the job
    processes=512,  # processes and threads of the job at once
    file_size=1024**3,  # the largest file a job may write
    max_timeout=MAX_TIMEOUT,  # the longest timeout a job may ask for, and the cap of every job
)
FIELDS = tuple(DEFAULTS.__struct_fields__)
_SIZE_FIELDS = {"memory", "file_size"}
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"^(\d+)\s*([KMGT]?)(?:I?B)?$", re.IGNORECASE)
_NUMBER = re.compile(r"^\d+(\.\d+)?$")
# Below these a job cannot even start its interpreter: refuse them instead of failing every job.
MINIMUM = {"memory": 16 * 1024**2, "cpu_seconds": 1, "processes": 4, "file_size": 1024,
           "max_timeout": 1.0}


def effective(limits: JobLimits | None) -> JobLimits:
    """The limits a job runs under: what the group set, else the defaults."""
    if limits is None:
        return DEFAULTS
    merged = {f: getattr(limits, f) if getattr(limits, f) is not None else getattr(DEFAULTS, f)
              for f in FIELDS}
    return JobLimits(**merged)


MAXIMUM = {"memory": 2**62, "cpu_seconds": 2**31, "processes": 2**22, "file_size": 2**62,
           "max_timeout": 10 * 365 * 86400.0}


def _value(name: str, raw: Any) -> int | float:
    """One limit as a number: whole numbers exactly (never through a float), sizes with units,
    inside [MINIMUM, MAXIMUM]; anything else is refused naming the field."""
    field = f"limits.{name}"
    whole = name != "max_timeout"
    text = raw.strip() if isinstance(raw, str) else None
    value: int | float | None = None
    if isinstance(raw, bool):
        value = None
    elif isinstance(raw, int):
        value = raw
    elif isinstance(raw, float):
        value = int(raw) if whole and raw.is_integer() else (None if whole else raw)
    elif text is not None and name in _SIZE_FIELDS and (m := _SIZE.match(text)):
        value = int(m.group(1)) * _UNITS[m.group(2).upper()]
    elif text is not None and text.isascii() and text.isdigit():
        value = int(text) if whole else float(len(text) <= 20 and text or "inf")
    elif text is not None and not whole and _NUMBER.match(text):
        value = float(text)
    if value is None:
        kind = "a whole number" if whole else "a number of seconds"
        hint = " (bytes, or a number with K, M, G or T)" if name in _SIZE_FIELDS else ""
        shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:37] + "..."
        raise InvalidInput(f"{field} must be {kind}{hint}, got {shown}", field=field)
    shown = raw if len(str(raw)) <= 40 else str(raw)[:37] + "..."
    if value != value or value < MINIMUM[name]:
        raise InvalidInput(f"{field} must be at least {MINIMUM[name]}, got {shown}", field=field)
    if value > MAXIMUM[name]:
        raise InvalidInput(f"{field} must be at most {MAXIMUM[name]:.0f}, got {shown}",
                           field=field)
    return float(value) if not whole else int(value)


def validate(raw: object) -> JobLimits:
    """An HTTP/CLI limits object ({"memory": "512M", "processes": 256}) or a JobLimits, checked;
    null or {} resets to the defaults. Unknown names are refused with the known ones listed."""
    if raw is None:
        return JobLimits()
    if isinstance(raw, JobLimits):
        raw = as_dict(raw)  # still checked: a struct can hold anything
    if not isinstance(raw, dict):
        raise InvalidInput("limits must be an object like {\"memory\": \"512M\"}", field="limits")
    out: dict[str, int | float | None] = {}
    for name, value in raw.items():
        if name not in FIELDS:
            raise InvalidInput(f"limits.{name} is not a limit; known: {', '.join(FIELDS)}",
                               field=f"limits.{name}")
        out[name] = None if value is None else _value(name, value)
    return JobLimits(**out)  # type: ignore[arg-type]


def parse(text: str) -> JobLimits:
    """`memory=512M,cpu_seconds=600,...` (the CLI's --limits); `default` resets every limit."""
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
    return validate(pairs)


def as_dict(limits: JobLimits) -> dict[str, int | float]:
    """Only the set fields, for display and JSON answers."""
    return {k: v for k, v in msgspec.structs.asdict(limits).items() if v is not None}
