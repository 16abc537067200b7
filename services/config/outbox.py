"""The outbox: publish appended events to the config stream in order, each once, signed.

The stream holds every published event of the log once, in log order, each signed by the config
service; any other message there is foreign, and followers reject it. Stream sequences belong to
the transport: one message from anyone else shifts them for good, so they are not the log's
sequences (that invariant, which one junk message broke forever, is gone). The log sequence is
in the event's bytes and in its signature.

Each publish carries `Nats-Expected-Last-Sequence: <position>`, the stream sequence of the last
message the outbox has accounted for, and `Nats-Msg-Id: <event id>:<key id>`. A retry after a
lost ack is dropped as a duplicate within the dedup window, or found on the stream by the
catch-up after it, so an event is never appended twice however long NATS was away. A duplicate's
ack is believed only if its copy is still on the stream: the window outlives a purge, so an
event republished within two minutes of the copy a purge removed goes out again under
`<event id>:<key id>:<stream sequence of the lost copy>`. "Wrong last sequence" means something
landed after the position: the outbox reads it. Its own next event (an ack lost) counts as
published; anything else is logged (`config_stream_foreign_message`) and deleted, and the
publish is retried. A foreign message therefore costs one catch-up, never a wedge.

The stream can lose events under a running service (a purge, a purge of one subject, a deleted
message, a deleted stream, a nats-server that lost its store). Every CHECK_EVERY seconds, and
after any failed publish, `check` compares the stream with the log (one STREAM.INFO): a missing
stream is created again, starting past any sequence the old one reached (followers resume where
they were and skip nothing; `fresh_first_seq`); a stream holding fewer messages up to the
position than published events is read once, everything from the first missing event on is
deleted from it, and the log is republished from there, in order (`config_stream_repair`). The
log never changes: only the stream is rebuilt from it. At start, `reconcile.ensure_stream` does
the same for a stream deleted while the service was down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, BadRequestError, NotFoundError

from services.common import bus
from services.common.log import Logger
from services.config.store import EventLog
from shared import subjects
from shared.admission import Rejected, check_signed, decode_raw
from shared.errors import GetOperateError
from shared.events import RawRecorded
from shared.signing import SIGNATURE_HEADER, SUBJECT_PREV_HEADER, Signer, Verifier

STREAM_NOT_FOUND = 10059
SEQUENCE_NOT_FOUND = 10043  # a delete of a message that is not there (any more)
CHECK_EVERY = 5.0  # seconds between two looks at the stream (one STREAM.INFO)
MAX_LOST_COPIES = 10  # duplicate acks naming removed copies, in a row, before giving up


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


async def read_next(js: JetStreamContext, stream_seq: int) -> api.RawStreamMsg | None:
    """The first message at or after a stream sequence; None past the last one."""
    try:
        return await js.get_msg(subjects.CONFIG_STREAM, stream_seq, next=True,
                                subject=subjects.CONFIG_SUBJECTS)
    except NotFoundError:
        return None


def fresh_first_seq(after: int) -> int:
    """The first sequence of a GO_CONFIG created again while followers may be positioned in the
    old one: past `after` (the outbox's position) and past the clock in microseconds, which no
    earlier GO_CONFIG can have reached (that would take more than one message per microsecond
    since it was created). A follower resumes at its old position + 1 and skips nothing."""
    return max(after + 1, time.time_ns() // 1000)


async def create_stream(js: JetStreamContext, first_seq: int) -> None:
    """GO_CONFIG as every service declares it, starting at `first_seq` (`bus.ensure_streams`
    later updates it to the declared config; its sequences stay)."""
    declared = next(c for c in bus.stream_configs() if c.name == subjects.CONFIG_STREAM)
    try:
        await js.add_stream(dataclasses.replace(declared, first_seq=first_seq))
    except BadRequestError:  # 10058: created meanwhile (another start, a NATS peer)
        pass


async def declare_missing(js: JetStreamContext) -> None:
    """The suite's other streams and buckets, each created if missing and otherwise left as it
    is (declaring an existing one again is `bus.ensure_streams`' business, at start)."""
    for cfg in bus.stream_configs():
        try:
            await js.stream_info(cfg.name or "")
        except NotFoundError:
            await js.add_stream(cfg)
    await bus.workers_bucket(js)
    await bus.cancels_bucket(js)


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
                 verifier: Verifier, check_every: float = CHECK_EVERY) -> None:
        self.log = log
        self.check_every = check_every
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
        """Forever: flush on wake, check the stream every `check_every` seconds and after a
        failure; on failure retry with backoff until the stream takes it."""
        backoff = 0.1
        due = True  # start-up: the stream as it is now, past reconcile's one-message look
        self._wake.set()
        while True:
            if not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), self.check_every)
                except TimeoutError:
                    due = True
            self._wake.clear()
            step = "check" if due else "publish"
            try:
                if due:
                    await self.check()
                    due, step = False, "publish"
                await self.flush()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.logger.warning("outbox_publish_retry", error=str(exc) or type(exc).__name__,
                                    step=step, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                due = True  # "no response from stream": it may be gone
                self._wake.set()

    async def flush(self) -> None:
        for rec, body, subject in await self.log.call(self.log.unpublished):
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
        await self.log.call(self.log.mark_published, seq)

    def headers(self, rec: RawRecorded, body: bytes, subject: str,
                msg_id: str | None = None) -> dict[str, str]:
        """Id, position and the signature (over seq, subject, previous seq on the subject, bytes)."""
        prev = self.log.subject_prev(rec.seq, subject)
        # The id names this key's copy: re-signing republishes an event under the same event id
        # within the dedup window, and must not be taken for a repeat of the old copy.
        return {"Nats-Msg-Id": msg_id or f"{rec.id}:{self.signer.key_id}",
                "Nats-Expected-Last-Sequence": str(self.position),
                SIGNATURE_HEADER: self.signer.sign_event(rec.seq, subject, prev, body),
                SUBJECT_PREV_HEADER: str(prev)}

    async def _publish_one(self, rec: RawRecorded, body: bytes, subject: str) -> bool:
        """True once the event is on the stream; False when something else is in the way."""
        msg_id = f"{rec.id}:{self.signer.key_id}"
        for _ in range(MAX_LOST_COPIES):
            try:
                ack = await self.js.publish(subject, body, timeout=5.0,
                                            headers=self.headers(rec, body, subject, msg_id))
            except APIError as exc:
                if exc.err_code != bus.WRONG_LAST_SEQUENCE:
                    raise
                return False
            # A duplicate's ack names the first copy's sequence, never past what is on the stream.
            if not ack.duplicate or await self._holds(int(ack.seq), body, subject):
                self.position = max(self.position, int(ack.seq))
                return True
            # The dedup window remembers a copy that a purge or a delete removed since: the
            # event is not on the stream. Its next copy gets an id of its own.
            msg_id = f"{rec.id}:{self.signer.key_id}:{ack.seq}"
        raise RuntimeError(f"log seq {rec.seq}: {MAX_LOST_COPIES} duplicate acks in a row name"
                           " copies no longer on the stream")

    async def _holds(self, stream_seq: int, body: bytes, subject: str) -> bool:
        msg = await read_at(self.js, stream_seq)
        return msg is not None and msg.data == body and msg.subject == subject

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

    def own(self, msg: api.RawStreamMsg) -> tuple[RawRecorded, str] | None:
        """(event, signing key id) for an event of the log signed by an accepted key; None for a
        foreign message (junk, unsigned, forged). A validly signed event the log does not hold
        means another config service with this key is writing: StreamDiverged."""
        data = msg.data or b""
        try:
            raw = decode_raw(data)
        except Rejected:
            return None
        kid = signer_of(msg, raw, self.verifier)
        if kid is None:
            return None
        if self.log.body_at(raw.seq) != data:
            raise StreamDiverged(
                f"stream seq {msg.seq} holds an event signed by key {kid} as log seq {raw.seq},"
                " which this log does not hold: another config service with this key is writing"
                " to the stream (never run two); publishing stops until that is resolved")
        return raw, kid

    async def account(self, msg: api.RawStreamMsg) -> None:
        """One message after the position: the log's next event signed with this key (its ack
        was lost) counts as published; junk, forgeries and replayed copies of the log's events
        are foreign and removed. A validly signed event the log does not hold stops publishing
        (`own`), and nothing is deleted."""
        found = self.own(msg)
        if found is not None and found[0].seq == self.published_seq + 1 \
                and found[1] == self.signer.key_id:
            return await self._published(found[0].seq)
        await self.remove_foreign(msg)  # junk, or a replayed copy of an event already on it

    async def check(self) -> None:
        """Create the stream again if it is gone; rebuild it from the log if it holds fewer
        messages up to the position than published events. Messages after the position are
        left to the next publish (`account`)."""
        try:
            info = await self.js.stream_info(subjects.CONFIG_STREAM)
        except NotFoundError as exc:
            if exc.err_code != STREAM_NOT_FOUND:
                raise
            first = fresh_first_seq(self.position)
            await create_stream(self.js, first)
            await declare_missing(self.js)  # a nats-server that lost its store lost them all
            self.logger.warning("config_stream_recreated", first_seq=first,
                                events=self.log.last()[0])
            info = await self.js.stream_info(subjects.CONFIG_STREAM)
        last, messages = int(info.state.last_seq), int(info.state.messages)
        replaced = last < self.position
        if replaced:  # sequences went back: a stream created again by something else
            self.logger.warning("config_stream_replaced", last_seq=last, position=self.position,
                                hint="routers and workers wait past the old sequences: restart"
                                     " them once the log is republished")
            self.position = last
        accounted = messages - (last - self.position)  # at least this many up to the position
        if self.purge_below is None and (replaced or accounted < self.published_seq):
            await self.repair(int(info.state.first_seq))  # (a re-sign republishes it all anyway)

    async def repair(self, first: int) -> None:
        """Read the stream up to the position. The log's events in order, signed with this key,
        stay; from the first one missing on, every message is deleted (later events would be
        out of order once it is back, repeats, foreign ones), and the outbox republishes the
        log from there: the stream holds each event once, in order, again."""
        expected, hole, stale = 1, 0, []
        seq = first
        while seq <= self.position:
            msg = await read_next(self.js, seq)
            if msg is None or int(msg.seq or 0) > self.position:
                break
            seq = int(msg.seq or 0) + 1
            found = self.own(msg)
            if found is None:
                await self.remove_foreign(msg)
                continue
            raw, kid = found
            if not hole and raw.seq == expected and kid == self.signer.key_id:
                expected += 1
                continue
            if not hole and raw.seq >= expected:
                hole = expected
            stale.append(int(msg.seq or 0))
        kept = min((hole or expected) - 1, self.published_seq)
        if kept == self.published_seq and not stale:
            # Nothing missing: what made the count short lies past the position (a message
            # there deleted by someone else). Account for it now, or every check reads again.
            return await self.catch_up()
        for stream_seq in stale:
            try:
                await self.js.delete_msg(subjects.CONFIG_STREAM, stream_seq)
            except APIError as exc:
                if exc.err_code != SEQUENCE_NOT_FOUND:  # gone meanwhile is as good as deleted
                    raise
        self.logger.warning("config_stream_repair", kept=kept, from_seq=kept + 1,
                            to_seq=self.log.last()[0], deleted=len(stale), position=self.position)
        self.published_seq = kept
        self.log.reconcile(kept)
        self.kick()

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
