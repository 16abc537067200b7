"""Heartbeats in GO_WORKERS: what the worker reports about itself, and when it writes it.

At once when its config, init status or state changes; within JOB_BEAT_GAP s when a job starts or
ends (never sooner than that after the previous write, so a busy worker does not write once per
job); otherwise every HEARTBEAT_EVERY s. The entry expires from the bucket when beats stop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any, Callable, Iterable

from services.common import tasks
from services.common.log import Logger
from shared import subjects
from services.worker import languages
from shared.codec import encode
from shared.jobs import WorkerStatus

HEARTBEAT_EVERY = 5.0
JOB_BEAT_GAP = 0.5


def build_status(*, worker_id: str, group: str | None, tags: list[str], tags_source: str,
                 config_version: int, current: Iterable[str], init_status: str,
                 init_error: str | None, state: str, started_at: float, jobs_done: int,
                 init_output: str | None = None,
                 priorities: dict[str, int], dedicated: Iterable[str],
                 config_applied_at: float | None, isolation: tuple[str, bool, str | None],
                 now: float | None = None) -> WorkerStatus:
    """The heartbeat value: one of the current jobs (if any), dedicated tags sorted."""
    sandbox, network, note = isolation
    return WorkerStatus(
        id=worker_id, group=group, tags=tags, tags_source=tags_source,  # type: ignore[arg-type]
        config_version=config_version, current_job=next(iter(current), None),
        init_status=init_status, init_error=init_error, init_output=init_output,
        state=state,  # type: ignore[arg-type]
        hostname=socket.gethostname(), pid=os.getpid(), started_at=started_at,
        heartbeat_at=time.time() if now is None else now, jobs_done=jobs_done,
        priorities=priorities, dedicated=sorted(dedicated), config_applied_at=config_applied_at,
        sandbox=sandbox, network=network, sandbox_note=note, runtimes=sorted(languages.registry().found),
    )


class Heartbeat:
    """Writes `status()` under the worker's key, rate-limited as the module says."""

    def __init__(self, worker_id: str, nats_user: str, nonce: str,
                 status: Callable[[], WorkerStatus], logger: Logger) -> None:
        # The nonce derives from the control connection's inbox token (subjects.heartbeat_nonce):
        # the authority lets that connection write this key only.
        self.key = subjects.heartbeat_key(nats_user, worker_id, nonce)
        self.status = status
        self.logger = logger
        self._kv: Any = None
        self._kick = asyncio.Event()
        self._urgent = False
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None

    def now(self) -> None:
        """Config, init or state changed: beat at once."""
        self._urgent = True
        self._kick.set()

    def soon(self) -> None:
        """The current job changed: beat within JOB_BEAT_GAP s."""
        self._kick.set()

    def start(self, kv: Any) -> None:
        self._kv = kv
        self._task = tasks.background(self._loop(), name="heartbeat", logger=self.logger,
                                      vital=True)

    async def stop(self) -> None:
        """Stop beating and leave the bucket."""
        if self._task is not None:
            self._task.cancel()
        if self._kv is not None:
            try:
                await self._kv.delete(self.key)
            except Exception:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), HEARTBEAT_EVERY)
            except TimeoutError:
                pass
            if not self._urgent:
                gap = self._last + JOB_BEAT_GAP - time.monotonic()
                if gap > 0:
                    await asyncio.sleep(gap)
            self._kick.clear()
            self._urgent = False
            self._last = time.monotonic()
            try:
                await self._kv.put(self.key, encode(self.status()))
            except Exception as exc:
                self.logger.warning("heartbeat_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)
