"""`getoperate verify`: the SQLite log's hash chain, and the stream holding exactly the same events."""

from __future__ import annotations

from typing import AsyncIterator

import msgspec
from nats.js import JetStreamContext, api

from services.config.store import EventLog
from shared import subjects
from shared.codec import decode
from shared.events import GENESIS_HASH, RawRecorded, verify_chain


class Report(msgspec.Struct, kw_only=True):
    """The verdict: ok, or the first bad sequence and what is wrong there."""

    ok: bool
    log_events: int
    stream_events: int
    first_bad_seq: int | None = None
    problem: str | None = None


async def _stream_messages(js: JetStreamContext) -> AsyncIterator[tuple[int, bytes]]:
    info = await js.stream_info(subjects.CONFIG_STREAM)
    if info.state.messages == 0:
        return
    sub = await js.pull_subscribe(
        subjects.CONFIG_SUBJECTS, durable=None, stream=subjects.CONFIG_STREAM,
        config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL,
                                  max_ack_pending=-1, inactive_threshold=30.0),
    )
    try:
        seen = 0
        while seen < info.state.messages:
            for msg in await sub.fetch(1000, timeout=10):
                seen += 1
                yield msg.metadata.sequence.stream, msg.data
    finally:
        await sub.unsubscribe()


async def verify(log: EventLog, js: JetStreamContext, published_upto: int) -> Report:
    """Check the chain of the log, then compare the stream message by message.

    Events above `published_upto` are still in the outbox: not on the stream yet, not an error.
    """
    problems: list[tuple[int, str]] = []
    rows = list(log.raw_range(0))
    bad = verify_chain(rows, prev_hash=GENESIS_HASH, start_seq=1)
    if bad is not None:
        problems.append((bad, f"the SQLite log breaks the hash chain at seq {bad}"
                              " (a row was altered, removed or reordered)"))
    by_seq = {decode(body, RawRecorded).seq: body for body in rows}
    stream_seqs: set[int] = set()
    async for seq, data in _stream_messages(js):
        stream_seqs.add(seq)
        stored = by_seq.get(seq)
        if stored is None:
            problems.append((seq, f"stream seq {seq} has no event in the SQLite log"))
        elif stored != data:
            problems.append((seq, f"stream seq {seq} differs from the SQLite log"))
    for seq in sorted(by_seq):
        if seq <= published_upto and seq not in stream_seqs:
            problems.append((seq, f"log seq {seq} is missing from the stream"))
            break
    if not problems:
        return Report(ok=True, log_events=len(rows), stream_events=len(stream_seqs))
    first = min(problems)
    return Report(ok=False, log_events=len(rows), stream_events=len(stream_seqs),
                  first_bad_seq=first[0], problem=first[1])
