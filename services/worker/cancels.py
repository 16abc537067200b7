"""Cancellation requests (GO_CANCELS): kill a job that runs here, skip one that comes later.

The whole bucket is followed from the start (the last message of each key, then what comes) and
every id seen is kept, so a job taken after its cancel is never run. It is read with our own
pulls, not a nats-py KV watch: workers write (delete) the bucket's cancelled-queued marks, so a
message's headers may be a hostile worker's (services/common/streamreads.py). A flow's step is cancelled with its flow: the
step's worker kills it when its parent's cancel comes, so no worker needs to write cancels
(only routers may: a stolen worker credential cannot cancel other people's jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Iterator

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common import bus, tasks
from services.common.log import Logger
from services.common.streamreads import Follow, client_of
from shared import subjects


_KEYS = f"$KV.{subjects.CANCELS_BUCKET}."


class CancelWatch:
    """The job ids asked to cancel, and the running jobs to kill when theirs comes."""

    def __init__(self, js: JetStreamContext, logger: Logger) -> None:
        self.js = js
        self.logger = logger
        self.requested: set[str] = set()
        self.running: dict[str, list[asyncio.Future[Any]]] = {}
        self._follow: Follow | None = None

    async def start(self) -> None:
        await bus.cancels_bucket(self.js)  # declared if it is not yet
        self._follow = Follow(client_of(self.js), f"KV_{subjects.CANCELS_BUCKET}", f"{_KEYS}>",
                              self._on_message, self.logger, last_per_subject=True,
                              name="cancels")
        self._follow.start()

    def stop(self) -> None:
        if self._follow is not None:
            tasks.background(self._follow.stop(), name="cancels-stop", logger=self.logger)
            self._follow = None

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

    def _on_message(self, msg: Msg) -> None:
        if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            return
        key = msg.subject[len(_KEYS):]
        if key.startswith(subjects.CANCELLED_QUEUED + "."):
            return  # a mark for waiting counts (shared/subjects.py), not a job id
        self.on_request(key)
