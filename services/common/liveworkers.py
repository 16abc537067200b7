"""A live view of worker heartbeats (the GO_WORKERS bucket), kept current by a KV watch."""

from __future__ import annotations

import asyncio
import time

from nats.js import JetStreamContext

from services.common import bus
from services.common.log import Logger
from shared.codec import decode
from shared.errors import InvalidInput
from shared.jobs import WorkerStatus


class LiveWorkers:
    """Heartbeats by worker id; entries older than the bucket TTL count as gone (KV expiry is silent)."""

    def __init__(self, js: JetStreamContext, logger: Logger):
        self.js = js
        self.logger = logger
        self._workers: dict[str, WorkerStatus] = {}
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        kv = await bus.workers_bucket(self.js)
        watcher = await kv.watchall()
        self._task = asyncio.create_task(self._run(watcher), name="live-workers")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def _run(self, watcher: object) -> None:
        async for entry in watcher:  # type: ignore[attr-defined]
            if entry is None:  # end of the initial values
                self.ready.set()
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self._workers.pop(entry.key, None)
                continue
            try:
                self._workers[entry.key] = decode(entry.value, WorkerStatus)
            except InvalidInput as exc:
                self.logger.warning("bad_heartbeat_skipped", key=entry.key, error=str(exc))
            self.ready.set()

    def _live(self) -> list[WorkerStatus]:
        cutoff = time.time() - bus.WORKER_TTL
        return [w for w in self._workers.values() if w.heartbeat_at >= cutoff]

    def all(self) -> list[WorkerStatus]:
        """Live workers, sorted for display."""
        return sorted(self._live(), key=lambda w: ((w.group or ""), w.id))

    def serving(self, tag: str) -> list[WorkerStatus]:
        """Ready workers whose current tag list includes `tag` (per submission: no sorting)."""
        return [w for w in self._live() if tag in w.tags and w.state == "ready"]
