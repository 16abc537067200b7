"""The outbox: publish appended events to the config stream in order, exactly once.

Stream sequence equals log sequence. Each publish carries `Nats-Expected-Last-Sequence: seq-1`
and `Nats-Msg-Id: <event id>`, so a retry after a crash or a lost ack can never append twice,
however long NATS was away (the dedup window alone would only cover two minutes).
"""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext
from nats.js.errors import APIError

from services.common.log import Logger
from services.config.store import EventLog
from shared import subjects
from shared.codec import decode
from shared.errors import GetOperateError
from shared.events import RawRecorded

WRONG_LAST_SEQUENCE = 10071


class StreamDiverged(GetOperateError, RuntimeError):
    """Raised when the stream holds a different event at a sequence the log owns."""

    status = 500
    code = "stream_diverged"


class Outbox:
    """Publishes unpublished log rows; `kick()` after each append, `flushed` tells callers when done."""

    def __init__(self, log: EventLog, js: JetStreamContext, logger: Logger):
        self.log = log
        self.js = js
        self.logger = logger
        self._wake = asyncio.Event()
        self.published_seq = 0
        self._progress = asyncio.Condition()

    def kick(self) -> None:
        self._wake.set()

    async def wait_published(self, seq: int, timeout: float) -> bool:
        """Wait until `seq` is on the stream; False on timeout (the write is still durable in SQLite)."""
        async with self._progress:
            try:
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: self.published_seq >= seq), timeout
                )
            except asyncio.TimeoutError:
                return False
        return True

    async def run(self) -> None:
        """Forever: flush on wake; on failure retry with backoff until the stream takes it."""
        backoff = 0.1
        self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.logger.warning("outbox_publish_retry", error=str(exc) or type(exc).__name__,
                                    retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()

    async def flush(self) -> None:
        for rec, body, subject in self.log.unpublished():
            await self._publish_one(rec, body, subject)
            async with self._progress:  # the event is live: answer the writer before bookkeeping
                self.published_seq = rec.seq
                self._progress.notify_all()
            self.log.mark_published(rec.seq)

    async def _publish_one(self, rec: RawRecorded, body: bytes, subject: str) -> None:
        headers = {"Nats-Msg-Id": rec.id, "Nats-Expected-Last-Sequence": str(rec.seq - 1)}
        try:
            ack = await self.js.publish(subject, body, timeout=5.0, headers=headers)
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            await self._check_already_there(rec)
            return
        if not ack.duplicate and ack.seq != rec.seq:
            raise StreamDiverged(
                f"event {rec.id} (log seq {rec.seq}) landed at stream seq {ack.seq}"
            )

    async def _check_already_there(self, rec: RawRecorded) -> None:
        """A 'wrong last sequence' answer is fine only if our event already sits at its sequence."""
        try:
            msg = await self.js.get_msg(subjects.CONFIG_STREAM, rec.seq)
        except Exception as exc:
            raise StreamDiverged(
                f"stream is ahead of the log but has no message at seq {rec.seq}: {exc}"
            ) from exc
        stored = decode(msg.data or b"", RawRecorded)
        if stored.id != rec.id or stored.hash != rec.hash:
            raise StreamDiverged(
                f"stream seq {rec.seq} holds event {stored.id}, the log holds {rec.id}"
            )
