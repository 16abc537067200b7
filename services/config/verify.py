"""`getoperate verify`: everything stored about the configuration agrees with the signed log.

Checks, each reporting the exact log sequence where it first fails:
- chain: the SQLite log's hash chain over the stored bytes;
- column: every column derived from an event (seq, id, time, actor, reason, type, subject,
  prev_hash, hash) equals what the event's bytes say;
- stream: GO_CONFIG holds each published event once, in log order, with the row's bytes, signed
  by an accepted key over its subject and previous sequence on that subject; anything else
  there is reported (check `foreign`, with its stream sequence);
- snapshot: every snapshot (the SQLite table and the GO_SNAPSHOTS object) is signed and equals
  the fold of the log at its sequence (`field` names the first part of the state that differs).
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable, Mapping

import msgspec
from nats.js import JetStreamContext, api
from nats.js.errors import BadObjectMetaError, DigestMismatchError

from services.common import bus
from services.config.store import EventLog
from shared import state as st
from shared import subjects
from shared.admission import Rejected, check_signed
from shared.codec import decode
from shared.errors import InvalidInput
from shared.events import (
    GENESIS_HASH, RawRecorded, Recorded, _TypeOnly, decode_known, subject_for, verify_chain,
)
from shared.signing import SUBJECT_PREV_HEADER, Verifier
from shared.snapshots import SignedSnapshot, SnapshotRejected, decode_snapshot, open_snapshot

MAX_FINDINGS = 100
DERIVED = ("seq", "id", "time", "actor", "reason", "type", "subject", "prev_hash", "hash")


class Finding(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One thing that does not agree with the signed log."""

    check: str  # chain, column, stream, foreign, snapshot
    problem: str
    seq: int | None = None  # the log sequence concerned (none for a foreign stream message)
    field: str | None = None  # the column, or the state path of a snapshot
    stream_seq: int | None = None


class Report(msgspec.Struct, kw_only=True):
    """The verdict: ok, or the first bad sequence and what is wrong there, then every finding."""

    ok: bool
    log_events: int
    stream_events: int
    first_bad_seq: int | None = None
    problem: str | None = None
    check: str | None = None
    field: str | None = None
    stream_seq: int | None = None
    snapshots_checked: int = 0
    foreign_messages: int = 0
    problems: list[Finding] = msgspec.field(default_factory=list)


class _Msg(msgspec.Struct):
    stream_seq: int
    subject: str
    headers: dict[str, str] | None
    data: bytes


async def _stream_messages(js: JetStreamContext) -> AsyncIterator[_Msg]:
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
                yield _Msg(msg.metadata.sequence.stream, msg.subject, msg.headers, msg.data)
    finally:
        await sub.unsubscribe()


def _check_columns(log: EventLog, out: list[Finding]) -> dict[int, str]:
    """Each derived column against the bytes; returns the subject of each event by its bytes."""
    subject_of: dict[int, str] = {}
    for row in log.rows():
        body = str(row["body"]).encode()
        try:
            raw = decode(body, RawRecorded)
            rec = decode_known(body)
            kind = decode(raw.event, _TypeOnly).type
        except InvalidInput as exc:
            out.append(Finding(check="column", seq=int(row["seq"]),  # type: ignore[call-overload]
                               field="body", problem=f"row {row['seq']} is not an event: {exc}"))
            continue
        said: dict[str, Any] = {"seq": raw.seq, "id": raw.id, "time": raw.time,
                                "actor": raw.actor, "reason": raw.reason, "type": kind,
                                "prev_hash": raw.prev_hash, "hash": raw.hash}
        if rec is not None:
            said["subject"] = subject_for(rec.event)
        subject_of[raw.seq] = said.get("subject", str(row["subject"]))
        for name in DERIVED:
            if name in said and row[name] != said[name]:
                out.append(Finding(
                    check="column", seq=int(row["seq"]), field=name,  # type: ignore[call-overload]
                    problem=f"column {name} of seq {row['seq']} is {row[name]!r} but the event"
                            f" says {said[name]!r}"))
                break
    return subject_of


def _expected_prev(subject_of: Mapping[int, str]) -> dict[int, int]:
    """The previous sequence on the same subject, for each event (what the outbox signed)."""
    last: dict[str, int] = {}
    prev: dict[int, int] = {}
    for seq in sorted(subject_of):
        prev[seq] = last.get(subject_of[seq], 0)
        last[subject_of[seq]] = seq
    return prev


async def _check_stream(js: JetStreamContext, by_seq: Mapping[int, bytes],
                        subject_of: Mapping[int, str], published_upto: int, verifier: Verifier,
                        out: list[Finding]) -> tuple[int, int]:
    """Returns (messages read, foreign messages)."""
    prev_of = _expected_prev(subject_of)
    where: dict[int, int] = {}
    newest, read, foreign = 0, 0, 0
    async for msg in _stream_messages(js):
        read += 1
        try:
            raw = decode(msg.data, RawRecorded)
            check_signed(raw, msg.subject, msg.headers, msg.data, verifier)
        except (InvalidInput, Rejected) as exc:
            foreign += 1
            out.append(Finding(check="foreign", stream_seq=msg.stream_seq,
                               problem=f"stream seq {msg.stream_seq} ({msg.subject}) is not a"
                                       f" signed event of the log: {exc}; followers ignore it"))
            continue
        seq, stored = raw.seq, by_seq.get(raw.seq)
        problem = None
        if stored is None:
            problem = f"stream seq {msg.stream_seq} holds a signed seq {seq} the log does not have"
        elif stored != msg.data:
            problem = f"log seq {seq} on the stream (stream seq {msg.stream_seq}) differs from" \
                      " the SQLite log"
        elif seq in where:
            problem = f"log seq {seq} is on the stream twice (stream seqs {where[seq]} and" \
                      f" {msg.stream_seq})"
        elif seq < newest:
            problem = f"log seq {seq} is on the stream after log seq {newest}"
        elif msg.subject != subject_of.get(seq, msg.subject):
            problem = f"log seq {seq} is published on {msg.subject}, not {subject_of[seq]}"
        elif (msg.headers or {}).get(SUBJECT_PREV_HEADER) != str(prev_of.get(seq, 0)):
            problem = f"log seq {seq} is signed as following seq" \
                      f" {(msg.headers or {}).get(SUBJECT_PREV_HEADER)} on its subject; the log" \
                      f" says {prev_of.get(seq, 0)}"
        if problem:
            out.append(Finding(check="stream", seq=seq, stream_seq=msg.stream_seq,
                               problem=problem))
        where.setdefault(seq, msg.stream_seq)
        newest = max(newest, seq)
    for seq in sorted(by_seq):
        if seq <= published_upto and seq not in where:
            out.append(Finding(check="stream", seq=seq,
                               problem=f"log seq {seq} is missing from the stream"))
            break
    return read, foreign


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """The first path where two plain values differ (`tokens.ci`, `groups.gpu.tags`)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
    return path or "(whole state)"


def _check_snapshots(records: Iterable[Recorded], snaps: list[tuple[str, SignedSnapshot]],
                     last_seq: int, verifier: Verifier, out: list[Finding]) -> None:
    """Open each snapshot, fold the log once, and compare at each snapshot's sequence."""
    opened: list[tuple[str, SignedSnapshot, st.ConfigState]] = []
    for source, snap in snaps:
        try:
            opened.append((source, snap, open_snapshot(snap, verifier)))
        except SnapshotRejected as exc:
            out.append(Finding(check="snapshot", seq=snap.seq, field=source,
                               problem=f"{source} snapshot at seq {snap.seq}: {exc.reason}"
                                       f" ({exc.message}); services ignore it"))
    opened.sort(key=lambda item: item[1].seq)
    state, pending = st.ConfigState(), iter(records)
    upcoming = next(pending, None)
    for source, snap, claimed in opened:
        if snap.seq > last_seq:
            out.append(Finding(check="snapshot", seq=snap.seq, field=source,
                               problem=f"{source} snapshot at seq {snap.seq} is past the log's"
                                       f" last event ({last_seq})"))
            continue
        batch: list[Recorded] = []
        while upcoming is not None and upcoming.seq <= snap.seq:
            batch.append(upcoming)
            upcoming = next(pending, None)
        state = st.fold(batch, state)
        want, got = msgspec.to_builtins(state), msgspec.to_builtins(claimed)
        if want != got:
            path = _first_difference(got, want)
            out.append(Finding(check="snapshot", seq=snap.seq, field=f"{source}:{path}",
                               problem=f"{source} snapshot at seq {snap.seq} differs from the"
                                       f" fold of the log at {path}"))


async def verify(log: EventLog, js: JetStreamContext, published_upto: int,
                 verifier: Verifier) -> Report:
    """Every check above. Events above `published_upto` are still in the outbox: not on the
    stream yet, not an error."""
    found: list[Finding] = []
    rows = list(await log.call(log.raw_range, 0))
    bad = verify_chain(rows, prev_hash=GENESIS_HASH, start_seq=1)
    if bad is not None:
        found.append(Finding(check="chain", seq=bad,
                             problem=f"the SQLite log breaks the hash chain at seq {bad}"
                                     " (a row was altered, removed or reordered)"))
    subject_of = await log.call(_check_columns, log, found)
    by_seq: dict[int, bytes] = {}
    for body in rows:
        try:
            by_seq.setdefault(decode(body, RawRecorded).seq, body)
        except InvalidInput:
            continue
    read, foreign = await _check_stream(js, by_seq, subject_of, published_upto, verifier, found)
    snaps: list[tuple[str, SignedSnapshot]] = [("sqlite", s) for s in await log.call(log.snapshots)]
    try:
        stored = await bus.get_snapshot(js)
    except (DigestMismatchError, BadObjectMetaError) as exc:  # NATS away: raised, a 503
        found.append(Finding(check="snapshot", field=subjects.SNAPSHOT_BUCKET,
                             problem=f"{subjects.SNAPSHOT_BUCKET} cannot be read ({exc!r});"
                                     " services ignore it"))
        stored = None
    if stored is not None:
        try:
            snaps.append((subjects.SNAPSHOT_BUCKET, decode_snapshot(stored)))
        except SnapshotRejected as exc:
            found.append(Finding(check="snapshot", field=subjects.SNAPSHOT_BUCKET,
                                 problem=f"{subjects.SNAPSHOT_BUCKET} holds no signed snapshot:"
                                         f" {exc.message}; services ignore it"))
    records = (r for r in (decode_known(b) for b in rows) if r is not None)
    await log.call(_check_snapshots, records, snaps, max(by_seq, default=0), verifier, found)
    found.sort(key=lambda f: (f.seq is None, f.seq or 0, f.stream_seq or 0))
    report = Report(ok=not found, log_events=len(rows), stream_events=read,
                    snapshots_checked=len(snaps), foreign_messages=foreign,
                    problems=found[:MAX_FINDINGS])
    if found:
        first = found[0]
        report.first_bad_seq, report.problem, report.check = first.seq, first.problem, first.check
        report.field, report.stream_seq = first.field, first.stream_seq
    return report

