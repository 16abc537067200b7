"""The append-only SQLite event log (sqlite-utils): the source of truth for configuration.

Each row holds the sequence, event id, time, actor, the hash chain and the encoded envelope; the
`published` flag is the outbox: rows not yet on the JetStream stream.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import sqlite_utils

from services.common.runtime import make_private, private_dir
import msgspec

from shared.codec import decode, encode
from shared.errors import GetOperateError
from shared.events import (
    GENESIS_HASH, ConfigEvent, RawRecorded, Recorded, _TypeOnly, decode_known, seal, subject_for,
)
from shared.snapshots import SignedSnapshot


T = TypeVar("T")


class StoreError(GetOperateError, RuntimeError):
    """Raised when the SQLite log cannot be read or written."""

    status = 500
    code = "store_error"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# What SQLite keeps beside the database: its WAL, the WAL's index, a rollback journal.
SIDECARS = ("-wal", "-shm", "-journal")


def _private_database(path: Path) -> None:
    """The log holds group env values and init scripts: its folder is 0700 and the database
    0600 before SQLite opens it. SQLite creates -wal and -shm with the database's own mode, so
    they are 0600 too; files left readable by an older version are tightened."""
    private_dir(path.parent, recursive=False)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in ("", *SIDECARS):
        make_private(path.with_name(path.name + name))


def _serial(method: Callable[..., T]) -> Callable[..., T]:
    """One SQLite call at a time on the log's one connection, whichever thread makes it: an
    append's transaction (and mark_published's synchronous=NORMAL moment) is never interleaved
    with another caller's statements."""
    @functools.wraps(method)
    def serial(self: "EventLog", *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)
    return serial


class EventLog:
    """Append-only log of config events. Single writer: the config service.

    Its methods block (an append waits for its fsync; a verify or a history read walks the whole
    log), so the service's async code calls them through `call`, on the log's own thread: a slow
    disk delays the write that needs it, not the service's HTTP and NATS handling. Iterating
    methods read their rows under the lock and return them materialised.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="event-log")
        _private_database(self.path)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # an acknowledged config write survives power loss
        self.db = sqlite_utils.Database(conn)
        self.table = self.db.table("events")
        if not self.table.exists():
            self.db.create_table(
                "events",
                {
                    "seq": int, "id": str, "time": str, "actor": str, "reason": str, "type": str,
                    "subject": str, "prev_hash": str, "hash": str, "body": str, "published": int,
                },
                pk="seq",
                not_null={"id", "time", "actor", "type", "subject", "prev_hash", "hash", "body"},
            )
            self.table.create_index(["id"], unique=True)
            self.table.create_index(["published"])
            self.table.create_index(["time"])
        # The outbox asks, per event, for the previous event on its subject (Go-Subject-Prev).
        self.db.execute("CREATE INDEX IF NOT EXISTS idx_events_subject_seq ON events (subject, seq)")
        if not self.db.table("snapshots").exists():
            # A snapshot is the folded state at `seq`: a derived cache, rebuildable from the log.
            self.db.create_table("snapshots", {"seq": int, "time": str, "body": bytes}, pk="seq")
        if "signature" not in {c.name for c in self.db.table("snapshots").columns}:
            # Snapshots are signed now. Those of an older version are caches that no service
            # would accept any more (and verify would report): drop them, once.
            self.db.execute("DELETE FROM snapshots")
            for column, kind in (("hash", "TEXT"), ("stream_seq", "INTEGER"), ("signature", "TEXT")):
                self.db.execute(f"ALTER TABLE snapshots ADD COLUMN {column} {kind}")

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` (a method of this log, or a function that calls several) on the
        log's thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        with self._lock:
            self.db.conn.close()

    @_serial
    def last(self) -> tuple[int, str]:
        """(sequence, hash) of the newest record, or (0, genesis)."""
        row = self.db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    @_serial
    def append(
        self, events: list[ConfigEvent], *, actor: str, reason: str | None = None
    ) -> list[Recorded]:
        """Seal and append events in one transaction; they are all stored or none is."""
        if not events:
            return []
        seq, prev = self.last()
        time = now_iso()
        records: list[Recorded] = []
        for event in events:
            seq += 1
            rec = seal(prev_hash=prev, seq=seq, id=uuid.uuid4().hex, time=time, actor=actor,
                       reason=reason, event=event)
            records.append(rec)
            prev = rec.hash
        self.insert([(encode(r), subject_for(r.event)) for r in records], published=False)
        return records

    @_serial
    def insert(self, items: list[tuple[bytes, str]], *, published: bool) -> None:
        """Insert stored envelopes as (exact bytes, subject): appended ones, or copied from the stream.

        The bytes are kept as they are, so an event from a newer version keeps its fields and
        its hash still verifies.
        """
        rows = []
        for body, subject in items:
            r = decode(body, RawRecorded)
            rows.append({
                "seq": r.seq, "id": r.id, "time": r.time, "actor": r.actor, "reason": r.reason,
                "type": decode(r.event, _TypeOnly).type, "subject": subject,
                "prev_hash": r.prev_hash, "hash": r.hash, "body": bytes(body).decode(),
                "published": int(published),
            })
        if not rows:
            return
        cols = list(rows[0])
        sql = f"INSERT INTO events ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        conn = self.db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, [[row[c] for c in cols] for row in rows])
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"could not append to the event log {self.path}: {exc}") from exc

    @_serial
    def raw(self, since: int = 0, limit: int | None = None) -> Iterator[bytes]:
        """Stored envelope bytes with seq > since, in order (for verification)."""
        sql = "SELECT body FROM events WHERE seq > ? ORDER BY seq"
        params: list[object] = [since]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return iter([body.encode() for (body,) in self.db.execute(sql, params)])

    @_serial
    def raw_range(self, since: int, until: int | None = None) -> Iterator[bytes]:
        """Stored bytes with since < seq <= until, in order, without a row limit."""
        sql, params = "SELECT body FROM events WHERE seq > ?", [since]
        if until is not None:
            sql += " AND seq <= ?"
            params.append(until)
        return iter([body.encode() for (body,) in self.db.execute(sql + " ORDER BY seq", params)])

    @_serial
    def query(
        self, *, since_seq: int = 0, until_seq: int | None = None, since_time: str | None = None,
        until_time: str | None = None, type: str | None = None, actor: str | None = None,
        subject: str | None = None, limit: int = 1000,
    ) -> list[Recorded]:
        """Filtered read of the log (the `events` command and `GET /events`).

        Every filter reads the event bytes the hash chain covers, never the `type`, `actor`,
        `time` or `subject` columns: an edited column can neither hide an event from an audit
        nor slip one into it. Rows are addressed by their sequence (the primary key); `verify`
        checks that it equals the sequence in the bytes.
        """
        out: list[Recorded] = []
        for body in self.raw_range(since_seq, until_seq):
            head = _head(body)
            if ((since_seq and head.seq <= since_seq)
                    or (until_seq is not None and head.seq > until_seq)
                    or (since_time is not None and head.time < since_time)
                    or (until_time is not None and head.time > until_time)
                    or (type is not None and head.event.type != type)
                    or (actor is not None and head.actor != actor)):
                continue
            rec = decode_known(body)
            if rec is None or (subject is not None and subject_for(rec.event) != subject):
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        return out

    @_serial
    def seq_at_time(self, time: str) -> int:
        """The last sequence written at or before `time` (ISO UTC), 0 if none.

        The `time` column finds it; the bytes of the events on each side of the answer confirm
        it, and the whole log is read from its bytes if they do not (an edited column).
        """
        row = self.db.execute("SELECT max(seq) FROM events WHERE time <= ?", [time]).fetchone()
        found = int(row[0] or 0)
        before, after = self.body_at(found), self.body_at(found + 1)
        if ((found == 0 or (before is not None and _head(before, found).time <= time))
                and (after is None or _head(after, found + 1).time > time)):
            return found
        return max((h.seq for h in (_head(b) for b in self.raw_range(0)) if h.time <= time),
                   default=0)

    @_serial
    def body_at(self, seq: int) -> bytes | None:
        """The stored bytes of the event at `seq`, if the log has it."""
        row = self.db.execute("SELECT body FROM events WHERE seq = ?", [seq]).fetchone()
        return row[0].encode() if row else None

    @_serial
    def subject_prev(self, seq: int, subject: str) -> int:
        """The sequence of the previous event on `subject` before `seq` (0: none), which the
        config service signs with each event so that a follower of one subject sees any gap."""
        row = self.db.execute("SELECT max(seq) FROM events WHERE subject = ? AND seq < ?",
                              [subject, seq]).fetchone()
        return int(row[0] or 0)

    @_serial
    def rows(self) -> Iterator[dict[str, object]]:
        """Every row with all its columns, in order (for verify's column check)."""
        cursor = self.db.execute(
            "SELECT seq, id, time, actor, reason, type, subject, prev_hash, hash, body"
            " FROM events ORDER BY seq")
        names = [d[0] for d in cursor.description]
        return iter([dict(zip(names, row)) for row in cursor])

    @_serial
    def save_snapshot(self, snap: SignedSnapshot) -> None:
        time = self.db.execute("SELECT time FROM events WHERE seq = ?", [snap.seq]).fetchone()
        self.db.execute(
            "INSERT OR REPLACE INTO snapshots (seq, time, body, hash, stream_seq, signature)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [snap.seq, time[0] if time else "", snap.state, snap.hash, snap.stream_seq,
             snap.signature])

    @_serial
    def snapshots_at_or_before(self, seq: int) -> Iterator[SignedSnapshot]:
        """Stored snapshots at or before `seq`, newest first (the caller checks each)."""
        rows = self.db.execute(
            "SELECT seq, body, hash, stream_seq, signature FROM snapshots WHERE seq <= ?"
            " ORDER BY seq DESC", [seq])
        return iter([SignedSnapshot(seq=int(row[0]), state=bytes(row[1]), hash=str(row[2] or ""),
                                    stream_seq=int(row[3] or 0), signature=str(row[4] or ""))
                     for row in rows])

    @_serial
    def snapshots(self) -> list[SignedSnapshot]:
        """Every stored snapshot, oldest first (for verify)."""
        return list(reversed(list(self.snapshots_at_or_before(2**62))))

    @_serial
    def records(self, since: int = 0, limit: int | None = None) -> Iterator[Recorded]:
        """Decoded records with seq > since, in order; an event type this version does not know
        (written by a newer version) is skipped here but stays in the log."""
        return iter([rec for rec in (decode_known(body) for body in self.raw(since, limit))
                     if rec is not None])

    @_serial
    def unpublished(self) -> list[tuple[RawRecorded, bytes, str]]:
        """The outbox: records not yet on the stream, with their exact bytes and subject, in order."""
        rows = self.db.execute(
            "SELECT body, subject FROM events WHERE published = 0 ORDER BY seq"
        ).fetchall()
        return [(decode(body.encode(), RawRecorded), body.encode(), subject) for body, subject in rows]

    @_serial
    def mark_published(self, seq: int) -> None:
        """Not fsynced: the flag is a hint. The stream is the truth (`reconcile` at start), and a
        republish is a no-op (expected last sequence), so losing it to a power cut costs nothing,
        while an fsync here would add one to every config write."""
        conn = self.db.conn
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            conn.execute("UPDATE events SET published = 1 WHERE seq <= ? AND published = 0", [seq])
        finally:
            conn.execute("PRAGMA synchronous=FULL")

    @_serial
    def reconcile(self, published_upto: int) -> None:
        """Rows at or below `published_upto` (the newest event found on the stream) are on it,
        the others not."""
        self.db.execute("UPDATE events SET published = (seq <= ?)", [published_upto])


class _Kind(msgspec.Struct):
    type: str = ""


class _Head(msgspec.Struct):
    """What the audit filters read of an event's bytes (decoding only these is cheap)."""

    seq: int
    time: str
    actor: str
    event: _Kind


_head_decoder = msgspec.json.Decoder(_Head)


def _head(body: bytes, seq: int | None = None) -> _Head:
    try:
        return _head_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StoreError(f"the event log holds a row that is not an event"
                         f"{f' at seq {seq}' if seq else ''} ({exc}): run `getoperate verify`"
                         ) from exc
