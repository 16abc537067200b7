"""Cancellation requests (GO_CANCELS): kill a job that runs here, skip one that comes later.

The whole bucket is watched from the start (existing keys included) and every id seen is kept,
so a job taken after its cancel is never run. A flow's step is cancelled with its flow: the
step's worker kills it when its parent's cancel comes, so no worker needs to write cancels
(only routers may: a stolen worker credential cannot cancel other people's jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Iterator

from nats.js import JetStreamContext

from services.common import bus
from services.common.log import Logger
from shared import subjects


class CancelWatch:
    """The job ids asked to cancel, and the running jobs to kill when theirs comes."""

    def __init__(self, js: JetStreamContext, logger: Logger) -> None:
        self.js = js
        self.logger = logger
        self.requested: set[str] = set()
        self.running: dict[str, list[asyncio.Future[Any]]] = {}
        self._watch: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cancels = await bus.cancels_bucket(self.js)
        self._watch = await cancels.watchall()
        self._task = asyncio.create_task(self._follow(), name="cancels")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def asked(self, job_id: str, parent: str | None = None) -> bool:
        """Was this job (or the flow it is a step of) asked to cancel (before it starts here)?"""
        return job_id in self.requested or (parent is not None and parent in self.requested)

    @contextlib.contextmanager
    def running_as(self, job_id: str, run: asyncio.Future[Any],
                   parent: str | None = None) -> Iterator[None]:
        """While the block runs, a cancel request for `job_id` (or for `parent`, the flow it is
        a step of) cancels `run`."""
        keys = [job_id] + ([parent] if parent else [])
        for key in keys:
            self.running.setdefault(key, []).append(run)
        try:
            yield
        finally:
            for key in keys:
                runs = self.running.get(key, [])
                if run in runs:
                    runs.remove(run)
                if not runs:
                    self.running.pop(key, None)

    def on_request(self, job_id: str) -> None:
        self.requested.add(job_id)
        for run in list(self.running.get(job_id, [])):
            if not run.done():
                self.logger.info("job_cancel_requested", job_id=job_id)
                run.cancel()

    async def _follow(self) -> None:
        async for entry in self._watch:
            if entry is None or entry.operation in ("DEL", "PURGE"):
                continue
            if entry.key.startswith(subjects.CANCELLED_QUEUED + "."):
                continue  # a mark for waiting counts (shared/subjects.py), not a job id
            self.on_request(entry.key)
