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

# Safe for a shared machine, generous for ordinary jobs (docs/security.md explains each).
DEFAULTS = JobLimits(
    memory=2 * 1024**3,  # the job's processes together
    cpu_seconds=3600,  # CPU time of each process of the job
    processes=512,  # processes and threads of the job at once
    file_size=1024**3,  # the largest file a job may write
    max_timeout=86400.0,  # the longest timeout a job may ask for, and the cap of every job
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


def _value(name: str, raw: Any) -> int | float:
    field = f"limits.{name}"
    if isinstance(raw, bool):
        raise InvalidInput(f"{field} must be a number, got {raw!r}", field=field)
    if isinstance(raw, (int, float)):
        value: int | float = raw
    elif isinstance(raw, str) and name in _SIZE_FIELDS and (m := _SIZE.match(raw.strip())):
        value = int(m.group(1)) * _UNITS[m.group(2).upper()]
    elif isinstance(raw, str) and _NUMBER.match(raw.strip()):
        value = float(raw) if name == "max_timeout" else int(float(raw))
    else:
        hint = " (bytes, or a number with K, M, G or T)" if name in _SIZE_FIELDS else ""
        raise InvalidInput(f"{field} must be a positive number{hint}, got {raw!r}", field=field)
    if value != value or value in (float("inf"),) or value < MINIMUM[name]:
        raise InvalidInput(f"{field} must be at least {MINIMUM[name]}, got {raw!r}", field=field)
    if name != "max_timeout" and (not float(value).is_integer() or value > 2**62):
        raise InvalidInput(f"{field} must be a whole number below 2^62, got {raw!r}", field=field)
    return float(value) if name == "max_timeout" else int(value)


def validate(raw: object) -> JobLimits:
    """An HTTP/CLI limits object ({"memory": "512M", "processes": 256}) as JobLimits; null or {}
    resets to the defaults. Unknown names are refused with the known ones listed."""
    if raw is None:
        return JobLimits()
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
            raise InvalidInput(f"limits: {part.strip()!r} must look like name=value "
                               f"(e.g. memory=512M,processes=256)", field="limits")
        pairs[name.strip()] = value.strip()
    return validate(pairs)


def as_dict(limits: JobLimits) -> dict[str, int | float]:
    """Only the set fields, for display and JSON answers."""
    return {k: v for k, v in msgspec.structs.asdict(limits).items() if v is not None}
