"""Worker settings, parsed once from the environment (docs/configuration.md)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import msgspec

from services.common.runtime import env
from shared.errors import InvalidInput
from shared.isolation import SANDBOXES
from shared.tags import validate_group_name, validate_tags


class WorkerSettings(msgspec.Struct, kw_only=True):
    """Parsed once from the environment (see docs/configuration.md)."""

    group: str | None = "default"
    env_tags: tuple[str, ...] | None = None
    concurrency: int = 1
    job_timeout: float = 300.0
    init_timeout: float = 300.0
    work_dir: Path = Path("/tmp/getoperate-worker")
    env_allowlist: tuple[str, ...] = ()
    sandbox: str = "bwrap"  # JOB_SANDBOX: bwrap | none (a group's sandbox setting overrides)
    devices: tuple[str, ...] = ()  # JOB_DEVICES: device paths or globs jobs may use (GPUs)
    work_dir_owned: bool = False  # made for this worker (no WORKER_DIR): removed when it stops
    # WORKER_CACHE_DIR: what lasts across jobs and restarts (Python environments, locks, builds);
    # workers of one host may share it.
    cache_dir: Path = Path.home() / ".cache" / "getoperate"
    # WORKER_STARTED_AFTER: a job shows as running (job.started is written) once it has run this
    # long; one that ends sooner stores job.finished alone. 0: at once, for every job.
    started_after: float = 0.25

    @property
    def nats_user(self) -> str:
        """The NATS user this worker connects as: `worker:<group>`, whose rights follow the
        group's tags, or with WORKER_TAGS `worker-tags:<tags>` (and `(<group>)` with both),
        whose rights are those tags."""
        from services.common.natsauth import worker_user

        return worker_user(self.group, self.env_tags)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _seconds(name: str, default: str, most: float) -> float:
    """A number of seconds from 0 to `most`, or InvalidInput naming the variable."""
    raw = env(name, default).strip()
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= most:
        raise InvalidInput(f"{name} must be a number of seconds from 0 to {most:g}, got {raw!r}",
                           field=name)
    return value


NATIVE_GROUP = "native"
NATIVE_CONCURRENCY = 8  # the reference platform's: native jobs mostly wait on the network


def default_concurrency(group: str | None) -> int:
    """Jobs at once when WORKER_CONCURRENCY is unset: 8 in group `native` (nativets, SQL,
    GraphQL: waiting on a network), 1 elsewhere (a job may use a whole core)."""
    return NATIVE_CONCURRENCY if group == NATIVE_GROUP else 1


def settings_from_env() -> WorkerSettings:
    """WORKER_GROUP and WORKER_TAGS precedence (docs/configuration.md):
    - only WORKER_GROUP: tags, init script and version come from the group's stored config;
    - only WORKER_TAGS: no group, exactly these tags (community mode);
    - both: the group's init script, but exactly WORKER_TAGS (shown as tags_source=env);
    - neither: group `default`.
    """
    group_raw = os.environ.get("WORKER_GROUP", "").strip()
    tags_raw = os.environ.get("WORKER_TAGS")
    env_tags = validate_tags(list(_csv(tags_raw)), field="WORKER_TAGS") if tags_raw else None
    if tags_raw and tags_raw.strip() and not env_tags:
        raise InvalidInput(f"WORKER_TAGS={tags_raw!r} lists no tag (comma-separated names;"
                           " unset it to take the group's tags)", field="WORKER_TAGS")
    group = validate_group_name(group_raw, field="WORKER_GROUP") if group_raw else None
    if group is None and env_tags is None:
        group = "default"
    try:
        concurrency = int(env("WORKER_CONCURRENCY", str(default_concurrency(group))))
        job_timeout = float(env("JOB_TIMEOUT", "300"))
        init_timeout = float(env("INIT_SCRIPT_TIMEOUT", "300"))
    except ValueError as exc:
        raise InvalidInput(f"bad numeric worker setting: {exc}") from exc
    started_after = _seconds("WORKER_STARTED_AFTER", "0.25", most=60.0)
    sandbox = env("JOB_SANDBOX", "bwrap").strip().lower()
    if sandbox not in SANDBOXES:
        raise InvalidInput(f"JOB_SANDBOX must be one of {', '.join(SANDBOXES)}, got {sandbox!r}",
                           field="JOB_SANDBOX")
    devices = _csv(os.environ.get("JOB_DEVICES", ""))
    for pattern in devices:
        if not pattern.startswith("/dev/"):
            raise InvalidInput(f"JOB_DEVICES entries must be paths under /dev/, got {pattern!r}",
                               field="JOB_DEVICES")
    from services.worker.hosttools import SIZES, parse_size

    for name, default in SIZES.items():  # host tools' bounds (hosttools.py)
        parse_size(name, default)
    if concurrency < 1:
        raise InvalidInput("WORKER_CONCURRENCY must be at least 1", field="WORKER_CONCURRENCY")
    return WorkerSettings(
        group=group, env_tags=env_tags, concurrency=concurrency, job_timeout=job_timeout,
        init_timeout=init_timeout,
        # Unset: a fresh private folder (mkdtemp: 0700, a name nobody could plant beforehand).
        work_dir=Path(os.environ.get("WORKER_DIR") or tempfile.mkdtemp(prefix="getoperate-worker-")),
        work_dir_owned=not os.environ.get("WORKER_DIR"),
        env_allowlist=_csv(os.environ.get("WORKER_ENV_ALLOWLIST", "")),
        sandbox=sandbox,
        devices=devices,
        started_after=started_after,
        cache_dir=Path(os.environ.get("WORKER_CACHE_DIR")
                       or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                       / "getoperate"),
    )
