"""Start-up: line the SQLite log up with the GO_CONFIG stream before the outbox runs.

| the stream | what happens |
|---|---|
| ends with the log's newest published event, signed by this key | the outbox goes on after it |
| has events the log lacks (an empty data dir) | they are copied back, once each signature and the hash chain check out |
| lacks the log's newest events (a crash, an empty NATS, a purge) | the outbox publishes them |
| lacks events below its newest (a purge of one subject, a deleted message) | the outbox's first check deletes the messages from the first missing event on and republishes the log from there (outbox.py) |
| is missing while the log has events (deleted, a nats-server that lost its store) | created again past any sequence followers reached (`ensure_stream`), then the outbox publishes the log |
| holds the log's events signed by another key, or unsigned (a new key, an upgrade) | the log is republished, signed, then the old copies are purged |
| ends with foreign messages | they are logged and deleted |
| holds an event signed by this key that the log does not have, below its newest | `stream_diverged`: another writer, or a log restored from an older backup while the stream went on |

The newest event of the log on the stream is found by reading back from the stream's end, which
normally is that event itself: start-up reads one message, not the stream.
"""

from __future__ import annotations

from nats.js import api
from nats.js.errors import NotFoundError

from services.common.log import Logger
from services.config.outbox import (
    STREAM_NOT_FOUND, Outbox, StreamDiverged, create_stream, fresh_first_seq, log_event_of,
    read_at, signer_of,
)
from services.config.store import EventLog
from shared import subjects
from shared.admission import Rejected, check_signed, decode_raw
from shared.events import GENESIS_HASH, RawRecorded
from shared.signing import SIGNATURE_HEADER


async def ensure_stream(log: EventLog, outbox: Outbox, logger: Logger) -> None:
    """Before `bus.ensure_streams`, which would create a missing GO_CONFIG from sequence 1: one
    missing while the log has events was deleted, or lost with nats-server's store, and routers
    and workers may still be positioned in it. They resume at their old sequence + 1, so it is
    created past any sequence it reached (`fresh_first_seq`); reconcile then finds it empty."""
    try:
        await outbox.js.stream_info(subjects.CONFIG_STREAM)
        return
    except NotFoundError as exc:
        if exc.err_code != STREAM_NOT_FOUND or log.last()[0] == 0:
            return  # a first start (nobody follows yet), or not our case: ensure_streams' turn
    first = fresh_first_seq(0)
    await create_stream(outbox.js, first)
    logger.warning("config_stream_recreated", first_seq=first, events=log.last()[0])


async def reconcile(log: EventLog, outbox: Outbox, logger: Logger) -> list[bytes]:
    """Set the outbox's position; return the bytes of events copied back into the log."""
    js = outbox.js
    info = await js.stream_info(subjects.CONFIG_STREAM)
    first, last = max(int(info.state.first_seq), 1), int(info.state.last_seq)
    log_last, _ = log.last()
    if log_last == 0 and last >= first:
        await _refuse_unverifiable_history(outbox, first)
    anchor = await _newest_known(log, outbox, first, last)
    copied: list[bytes] = []
    if anchor is not None and anchor[1].seq > log_last:
        copied = await _copy_back(log, outbox, first, anchor[0])
        logger.info("log_rebuilt_from_stream", events=len(copied), seq=anchor[1].seq)
    published, position, tail = 0, last, False
    if anchor is not None:
        stream_seq, raw, msg = anchor
        if signer_of(msg, raw, outbox.verifier) == outbox.signer.key_id:
            published, position, tail = raw.seq, stream_seq, stream_seq < last
        else:
            outbox.resign_until, outbox.purge_below = log.last()[0], last + 1
            logger.warning("config_stream_resign", events=log.last()[0], key_id=outbox.signer.key_id,
                           found=(msg.headers or {}).get(SIGNATURE_HEADER, "unsigned")[:16])
    log.reconcile(published)
    outbox.published_seq, outbox.position = published, position
    if tail:  # foreign messages after the newest event: removed now
        await outbox.catch_up()
    if log.last()[0] > published:
        logger.info("outbox_republish", from_seq=published + 1, to_seq=log.last()[0])
    return copied


async def _newest_known(log: EventLog, outbox: Outbox, first: int, last: int
                        ) -> tuple[int, RawRecorded, api.RawStreamMsg] | None:
    """The newest message that is an event of the log (same bytes), or a signed event the log
    does not have yet; read backwards from the stream's end, past foreign messages."""
    log_last, _ = log.last()
    for stream_seq in range(last, first - 1, -1):
        msg = await read_at(outbox.js, stream_seq)
        if msg is None:
            continue
        raw = log_event_of(msg, log)
        if raw is not None:
            return stream_seq, raw, msg
        try:
            raw = decode_raw(msg.data or b"")
        except Rejected:
            continue
        if raw.seq > log_last and signer_of(msg, raw, outbox.verifier) is not None:
            return stream_seq, raw, msg
    return None


async def _copy_back(log: EventLog, outbox: Outbox, first: int, until: int) -> list[bytes]:
    """Copy the signed events after the log's last into it, in order, checking the chain; a
    foreign message in between is skipped, a missing event stops the start."""
    expected, prev_hash = log.last()
    expected += 1
    items: list[tuple[bytes, str]] = []
    for stream_seq in range(max(first, expected), until + 1):  # stream seq >= log seq, always
        msg = await read_at(outbox.js, stream_seq)
        if msg is None:
            continue
        try:
            raw = decode_raw(msg.data or b"")
            check_signed(raw, msg.subject or "", msg.headers, msg.data or b"", outbox.verifier)
        except Rejected:
            continue
        if raw.seq < expected:
            continue  # a copy of an event already taken
        if raw.seq > expected or raw.prev_hash != prev_hash:
            raise StreamDiverged(
                f"config stream breaks the hash chain at seq {expected}: stream seq {stream_seq}"
                f" holds seq {raw.seq}, which does not follow it")
        items.append((msg.data or b"", msg.subject or ""))
        expected, prev_hash = raw.seq + 1, raw.hash
    log.insert(items, published=True)
    return [body for body, _ in items]


async def _refuse_unverifiable_history(outbox: Outbox, first: int) -> None:
    """An empty log and a stream that starts with a well-formed first event this service cannot
    verify: the data dir was lost with the key (or the stream predates signing). Copying it back
    unchecked would trust anyone who can write to NATS; starting afresh would fork the history."""
    msg = await read_at(outbox.js, first)
    if msg is None:
        return
    try:
        raw = decode_raw(msg.data or b"")
    except Rejected:
        return
    if raw.seq != 1 or raw.prev_hash != GENESIS_HASH:
        return
    try:
        check_signed(raw, msg.subject or "", msg.headers, msg.data or b"", outbox.verifier)
    except Rejected as exc:
        if exc.reason in ("unsigned", "unknown_key"):
            raise StreamDiverged(
                f"the log is empty and {subjects.CONFIG_STREAM} starts with events this service"
                f" cannot verify ({exc.message}): give it the key that signed them"
                " (GETOPERATE_CONFIG_SIGNING_KEY, or list its public key in"
                " GETOPERATE_CONFIG_PUBLIC_KEY), or restore config.sqlite from a backup") from None
