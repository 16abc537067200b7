"""What a language is to the worker: how to find its runtime and how to launch one job."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import msgspec

from services.common.log import Logger
from shared.jobs import Job


class PrepareFailed(Exception):
    """The job cannot start (its dependencies did not resolve, it did not compile): the job
    fails with this message, and the log the preparation wrote."""

    def __init__(self, message: str, logs: str = ""):
        super().__init__(message)
        self.logs = logs


class Launch(msgspec.Struct, kw_only=True):
    """How to run one job: the runner does the rest the same way for every language.

    `files` are written into the job's folder (its working directory). `result` says where the
    JSON result comes from: "fd" (an `{"ok", "result"|"error"}` object written to the file
    descriptor whose number is appended to `argv`) or "stdout" (the last line of stdout, as
    text). `ro` are extra host folders the job may read (a runtime outside /usr, a cached
    virtual environment or build), at the same path inside the sandbox."""

    argv: list[str]
    files: dict[str, bytes]
    env: dict[str, str] = msgspec.field(default_factory=dict)
    result: Literal["fd", "stdout"] = "fd"
    ro: tuple[str, ...] = ()


class Context(msgspec.Struct, kw_only=True):
    """What a language may use to prepare a launch: its runtime, the worker's cache folder
    (lasting across jobs and restarts: virtual environments, builds), the worker's log, the
    job's timeout and whether its group has the network."""

    runtime: str
    cache: Path
    logger: Logger | None = None
    timeout: float = 300.0
    # Whether the job's group lets it use the network: tools run on the host for the job (a
    # resolver, a compiler) then stay offline too.
    network: bool = True


class Language(Protocol):
    """A language, built in or from a plugin (entry-point group `getoperate.languages`)."""

    name: str
    how_to_get: str  # what to install when its runtime is missing (named in the job's error)

    def find_runtime(self) -> str | None:
        """The runtime's executable, or None: this worker cannot run the language."""
        ...

    async def launch(self, job: Job, ctx: Context) -> Launch:
        """The launch of one job; raise PrepareFailed when it cannot start."""
        ...


def args_json(job: Job) -> bytes:
    """The job's arguments as the JSON file every language but bash reads (`args.json`)."""
    import json

    return json.dumps(job.args).encode()

