"""The outbox: publish appended events to the config stream in order, each once, signed.

The stream holds every published event of the log once, in log order, each signed by the config
service; any other message there is foreign, and followers reject it. Stream sequences belong to
the transport: one message from anyone else shifts them for good, so they are not the log's
sequences (that invariant, which one junk message broke forever, is gone). The log sequence is
in the event's bytes and in its signature.

Each publish carries `Nats-Expected-Last-Sequence: <position>`, the stream sequence of the last
message the outbox has accounted for, and `Nats-Msg-Id: <event id>:<key id>`. A retry after a lost ack is
dropped as a duplicate within the dedup window, or found on the stream by the catch-up after it,
so an event is never appended twice however long NATS was away. "Wrong last sequence" means
something landed after the position: the outbox reads it. Its own next event (an ack lost)
counts as published; anything else is logged (`config_stream_foreign_message`) and deleted, and
the publish is retried. A foreign message therefore costs one catch-up, never a wedge.
"""

from __future__ import annotations

import asyncio
import hashlib

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from services.common.log import Logger
from services.config.store import EventLog
from shared import subjects
from shared.admission import Rejected, check_signed, decode_raw
from shared.errors import GetOperateError
from shared.events import RawRecorded
from shared.signing import SIGNATURE_HEADER, SUBJECT_PREV_HEADER, Signer, Verifier

WRONG_LAST_SEQUENCE = 10071


class StreamDiverged(GetOperateError, RuntimeError):
    """Raised when the stream cannot be lined up with the log (a chain break, an unknown key)."""

    status = 500
    code = "stream_diverged"


async def read_at(js: JetStreamContext, stream_seq: int) -> api.RawStreamMsg | None:
    """The message at a stream sequence; None where there is none (deleted, purged)."""
    try:
        return await js.get_msg(subjects.CONFIG_STREAM, stream_seq)
    except NotFoundError:
        return None


def log_event_of(msg: api.RawStreamMsg, log: EventLog) -> RawRecorded | None:
    """The log's event if the message holds exactly its bytes, else None."""
    data = msg.data or b""
    try:
        raw = decode_raw(data)
    except Rejected:
        return None
    return raw if log.body_at(raw.seq) == data else None


def signer_of(msg: api.RawStreamMsg, raw: RawRecorded, verifier: Verifier) -> str | None:
    """The key id that signed the message, or None (unsigned, unknown key, bad signature)."""
    try:
        check_signed(raw, msg.subject or "", msg.headers, msg.data or b"", verifier)
    except Rejected:
        return None
    return (msg.headers or {}).get(SIGNATURE_HEADER, "").partition(".")[0]


class Outbox:
    """Publishes unpublished log rows; `kick()` after each append, `wait_published` for callers."""

    def __init__(self, log: EventLog, js: JetStreamContext, logger: Logger, signer: Signer,
                 verifier: Verifier) -> None:
        self.log = log
        self.js = js
        self.logger = logger
        self.signer = signer
        self.verifier = verifier
        self._wake = asyncio.Event()
        self.published_seq = 0  # log sequence of the newest event known to be on the stream
        self.position = 0  # stream sequence of the last message accounted for
        # Re-signing (start-up found the events signed by another key, or by none): once the log
        # is republished through `resign_until`, stream messages below `purge_below` are dropped.
        self.resign_until: int | None = None
        self.purge_below: int | None = None
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
            if rec.seq <= self.published_seq:  # found on the stream by a catch-up
                continue
            while not await self._publish_one(rec, body, subject):
                await self.catch_up()
                if self.published_seq >= rec.seq:
                    break
            await self._published(rec.seq)
        if self.purge_below is not None and self.published_seq >= (self.resign_until or 0):
            await self._purge_old_copies()

    async def _published(self, seq: int) -> None:
        async with self._progress:  # the event is live: answer the writer before bookkeeping
            self.published_seq = max(self.published_seq, seq)
            self._progress.notify_all()
        self.log.mark_published(seq)

    def headers(self, rec: RawRecorded, body: bytes, subject: str) -> dict[str, str]:
        """Id, position and the signature (over seq, subject, previous seq on the subject, bytes)."""
        prev = self.log.subject_prev(rec.seq, subject)
        # The id names this key's copy: re-signing republishes an event under the same event id
        # within the dedup window, and must not be taken for a repeat of the old copy.
        return {"Nats-Msg-Id": f"{rec.id}:{self.signer.key_id}",
                "Nats-Expected-Last-Sequence": str(self.position),
                SIGNATURE_HEADER: self.signer.sign_event(rec.seq, subject, prev, body),
                SUBJECT_PREV_HEADER: str(prev)}

    async def _publish_one(self, rec: RawRecorded, body: bytes, subject: str) -> bool:
        """True once the event is on the stream; False when something else is in the way."""
        try:
            ack = await self.js.publish(subject, body, timeout=5.0,
                                        headers=self.headers(rec, body, subject))
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            return False
        # A duplicate's ack names the first copy's sequence, never past what is on the stream.
        self.position = max(self.position, int(ack.seq))
        return True

    async def catch_up(self) -> None:
        """Account for every message after the position (see `account`)."""
        info = await self.js.stream_info(subjects.CONFIG_STREAM)
        last, first = int(info.state.last_seq), int(info.state.first_seq)
        for stream_seq in range(max(self.position + 1, first), last + 1):
            msg = await read_at(self.js, stream_seq)
            if msg is not None:
                await self.account(msg)
            self.position = stream_seq
        self.position = max(self.position, last)

    async def account(self, msg: api.RawStreamMsg) -> None:
        """One message after the position: the log's next event signed with this key (its ack
        was lost) counts as published; junk, forgeries and replayed copies of the log's events
        are foreign and removed. A validly signed event the log does not hold means another
        config service with this key is writing: that stops publishing (never run two), and
        nothing is deleted."""
        data = msg.data or b""
        try:
            raw = decode_raw(data)
        except Rejected:
            return await self.remove_foreign(msg)
        kid = signer_of(msg, raw, self.verifier)
        if kid is None:
            return await self.remove_foreign(msg)
        if self.log.body_at(raw.seq) != data:
            raise StreamDiverged(
                f"stream seq {msg.seq} holds an event signed by key {kid} as log seq {raw.seq},"
                " which this log does not hold: another config service with this key is writing"
                " to the stream (never run two); publishing stops until that is resolved")
        if raw.seq == self.published_seq + 1 and kid == self.signer.key_id:
            return await self._published(raw.seq)
        await self.remove_foreign(msg)  # a replayed copy of an event already on the stream

    async def remove_foreign(self, msg: api.RawStreamMsg) -> None:
        """Log a message that is not the log's next signed event, then delete it (best effort:
        followers reject it anyway, the log line is the evidence)."""
        data = msg.data or b""
        reason = "not an event of the log"
        try:
            raw = decode_raw(data)
            reason = f"a copy of log seq {raw.seq}" if self.log.body_at(raw.seq) == data else \
                f"claims log seq {raw.seq}, which the log does not hold with these bytes"
        except Rejected:
            pass
        deleted = True
        try:
            await self.js.delete_msg(subjects.CONFIG_STREAM, int(msg.seq or 0))
        except Exception as exc:  # a permission, a stream that denies deletes: keep going
            deleted = False
            self.logger.warning("config_stream_delete_failed", stream_seq=msg.seq,
                                error=str(exc) or type(exc).__name__)
        self.logger.warning("config_stream_foreign_message", stream_seq=msg.seq,
                            subject=msg.subject, bytes=len(data), reason=reason,
                            sha256=hashlib.sha256(data).hexdigest(), deleted=deleted)

    async def _purge_old_copies(self) -> None:
        """After re-signing: drop the old copies, now that each event is on the stream again."""
        below, self.purge_below, self.resign_until = self.purge_below, None, None
        try:
            await self.js.purge_stream(subjects.CONFIG_STREAM, seq=below)
            self.logger.info("config_stream_resigned", purged_below=below,
                             key_id=self.signer.key_id)
        except Exception as exc:
            self.logger.warning("config_stream_purge_failed", below=below,
                                error=str(exc) or type(exc).__name__)
