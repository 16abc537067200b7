"""The group's init script: run while no job runs and before any new one, retried until it works.

`ok` is set while jobs may run: no script, or the current one succeeded. A changed script clears
it, waits until no slot is held (running jobs finish, an in-flight pull ends), then runs; a
failing script is retried with backoff (1 s, doubling, at most INIT_RETRY_MAX) and never stops
the worker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from services.common import tasks
from services.common.log import Logger
from services.common.metrics import WorkerMetrics
from services.worker.executor import Executor
from services.worker.slots import Slots

INIT_RETRY_MAX = 60.0


class InitScript:
    """Runs the group's init script; `status` is none, running, ok or failed."""

    def __init__(self, executor: Executor, slots: Slots, metrics: WorkerMetrics, logger: Logger,
                 on_change: Callable[[], None]) -> None:
        self.executor = executor
        self.slots = slots
        self.metrics = metrics
        self.logger = logger
        self.on_change = on_change  # status changed: beat at once
        self.ok = asyncio.Event()
        self.error: str | None = None
        self.output: str | None = None  # the end of a successful run's output
        self.status = "none"
        self._task: asyncio.Task[None] | None = None

    @property
    def status(self) -> str:
        return self._status

    @status.setter
    def status(self, value: str) -> None:
        self._status = value
        self.metrics.init_status.state(value)

    def schedule(self, script: str | None) -> None:
        """Take the group's (new) init script: jobs wait until it succeeded."""
        self.stop()
        self.ok.clear()
        if script is None:
            self.status, self.error, self.output = "none", None, None
            self.ok.set()
            return
        self._task = tasks.background(self._run(script), name="init-script", logger=self.logger)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self, script: str) -> None:
        delay = 1.0
        while True:
            await self.slots.wait_idle()
            self.status = "running"
            self.on_change()
            started = time.monotonic()
            ok, logs = await self.executor.run_init(script)
            if ok:
                self.status, self.error, self.output = "ok", None, logs[-2000:] or None
                self.logger.info("init_script_ok",
                                 duration_ms=round((time.monotonic() - started) * 1000))
                self.ok.set()
                self.on_change()
                return
            self.status, self.error, self.output = "failed", logs[-2000:], None
            self.logger.error("init_script_failed", retry_in=delay, output=logs[-500:])
            self.on_change()
            await asyncio.sleep(delay)
            delay = min(delay * 2, INIT_RETRY_MAX)
