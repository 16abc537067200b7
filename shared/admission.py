"""What a follower of GO_CONFIG lets into its fold: the next signed event of the log, nothing else.

Pure (no NATS): a follower hands each message's subject, headers and bytes to `Gate.admit` and
folds what comes back. Everything else raises `Rejected` with a reason; the follower logs it and
goes on with the next message, so no message can stop it (docs/security.md, "Signed
configuration").

Two ways to know that nothing was skipped or replayed:
- the whole stream (a router): the next event is exactly `seq + 1` and its `prev_hash` is the
  hash of the last one admitted (the hash chain itself);
- one subject (a worker, which reads only its group's subject): the signed `Go-Subject-Prev`
  header names the previous event of that subject, which must be the last one admitted here.

After a gap the gate keeps waiting for the missing event: later events are rejected (`gap`) and
the follower keeps the configuration as of the last event it could check, never one with a
change missing in the middle.
"""

from __future__ import annotations

from typing import Mapping

from shared.codec import decode
from shared.errors import GetOperateError, InvalidInput
from shared.events import (
    GENESIS_HASH, RawRecorded, Recorded, _TypeOnly, chain_hash, readable, subject_for,
)
from shared.signing import SIGNATURE_HEADER, SUBJECT_PREV_HEADER, SignatureError, Verifier

REASONS = ("malformed", "unsigned", "unknown_key", "bad_signature", "bad_hash", "wrong_subject",
           "repeat", "gap", "broken_chain")


class Rejected(GetOperateError, ValueError):
    """Raised when a config message must not be folded; `reason` is one of REASONS."""

    code = "config_event_rejected"

    def __init__(self, message: str, *, reason: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.seq = seq


def check_signed(raw: RawRecorded, subject: str, headers: Mapping[str, str] | None, body: bytes,
                 verifier: Verifier) -> int:
    """Signature and self-consistency of one stored event; returns its signed subject-previous
    sequence. Shared by followers, the config service's own reading of the stream, and verify."""
    headers = headers or {}
    prev_text = headers.get(SUBJECT_PREV_HEADER, "")
    try:
        subject_prev = int(prev_text) if prev_text else -1
    except ValueError:
        subject_prev = -1
    try:
        verifier.verify_event(raw.seq, subject, subject_prev, body, headers.get(SIGNATURE_HEADER))
    except SignatureError as exc:
        raise Rejected(f"seq {raw.seq}: {exc.message}", reason=exc.reason, seq=raw.seq) from None
    if chain_hash(prev_hash=raw.prev_hash, seq=raw.seq, id=raw.id, time=raw.time,
                  actor=raw.actor, reason=raw.reason, event_bytes=raw.event) != raw.hash:
        raise Rejected(f"seq {raw.seq}: its hash does not match its fields", reason="bad_hash",
                       seq=raw.seq)
    return subject_prev


def decode_raw(body: bytes) -> RawRecorded:
    try:
        return decode(body, RawRecorded)
    except InvalidInput as exc:
        raise Rejected(f"not a config event: {exc.message}", reason="malformed") from None


class Gate:
    """A follower's position in the config log, and the check every message passes to move it."""

    def __init__(self, verifier: Verifier, *, subject: str | None = None) -> None:
        self.verifier = verifier
        self.subject = subject  # None: the whole stream, checked by the hash chain
        self.seq = 0
        self.hash = GENESIS_HASH
        self.snapshot_seq = 0  # events at or below it came with the snapshot started from

    def start_at(self, seq: int, hash: str) -> None:
        """Continue after a verified snapshot at `seq`, whose chain hash is `hash`."""
        self.seq, self.hash, self.snapshot_seq = seq, hash, seq

    def admit(self, subject: str, headers: Mapping[str, str] | None,
              body: bytes) -> Recorded | None:
        """The record to fold, or None for a genuine event of a type this version does not know
        (a newer writer's: the position moves past it). Raises Rejected for anything else."""
        raw = decode_raw(body)
        if raw.seq <= self.seq:  # checked first: cheap, and such a message is never folded
            raise Rejected(f"seq {raw.seq} is at or before seq {self.seq}, already folded",
                           reason="repeat", seq=raw.seq)
        subject_prev = check_signed(raw, subject, headers, body, self.verifier)
        try:
            head = decode(raw.event, _TypeOnly)
        except InvalidInput as exc:
            raise Rejected(f"seq {raw.seq}: its event has no type: {exc.message}",
                           reason="malformed", seq=raw.seq) from None
        kind = head.type
        rec: Recorded | None = None
        if readable(head):
            try:
                rec = decode(body, Recorded)
                where = subject_for(rec.event)
            except GetOperateError as exc:  # a field no subject can be made of
                raise Rejected(f"seq {raw.seq}: {exc.message}", reason="malformed",
                               seq=raw.seq) from None
            if where != subject:
                raise Rejected(f"seq {raw.seq} is a {kind} event published on {subject}",
                               reason="wrong_subject", seq=raw.seq)
        if self.subject is not None and subject != self.subject:
            raise Rejected(f"seq {raw.seq} is on {subject}, not {self.subject}",
                           reason="wrong_subject", seq=raw.seq)
        if self.subject is None:
            if raw.seq != self.seq + 1:
                raise Rejected(f"seq {raw.seq} arrived while seq {self.seq + 1} is awaited",
                               reason="gap", seq=raw.seq)
            if raw.prev_hash != self.hash:
                raise Rejected(f"seq {raw.seq} does not chain to seq {self.seq}",
                               reason="broken_chain", seq=raw.seq)
        elif subject_prev != self.seq:
            raise Rejected(f"seq {raw.seq} follows seq {subject_prev} on {subject}, but the last"
                           f" one folded here is seq {self.seq}", reason="gap", seq=raw.seq)
        self.seq, self.hash = raw.seq, raw.hash
        return rec


Item = tuple[str, Mapping[str, str] | None, bytes]  # (subject, headers, body) of one message


def admit_many(gate: Gate, items: list[Item]) -> list[Recorded | None | Rejected]:
    """`gate.admit` for a run of messages of the whole stream (a replay), checking one
    signature instead of one per event where it can: each event's hash is recomputed from its
    fields and must chain to the one before, so the last event's signature, over its hash,
    vouches for every event of the run (forging any of them would change that hash). Nothing of
    an event is decoded before that signature holds. If it does not verify, each event is
    checked on its own, as `admit` would, and the run folds up to the first bad one exactly as
    before. Followers of one subject (a worker's group) have no chain across their events:
    they take each event on its own."""
    if gate.subject is not None or len(items) < 2:
        return admit_each(gate, items)
    seq, last_hash = gate.seq, gate.hash
    out: list[RawRecorded | Rejected] = []
    last_ok = -1
    for i, (subject, headers, body) in enumerate(items):
        try:
            raw = decode_raw(body)
            if raw.seq <= seq:
                raise Rejected(f"seq {raw.seq} is at or before seq {seq}, already folded",
                               reason="repeat", seq=raw.seq)
            if chain_hash(prev_hash=raw.prev_hash, seq=raw.seq, id=raw.id, time=raw.time,
                          actor=raw.actor, reason=raw.reason, event_bytes=raw.event) != raw.hash:
                raise Rejected(f"seq {raw.seq}: its hash does not match its fields",
                               reason="bad_hash", seq=raw.seq)
            if raw.seq != seq + 1 or raw.prev_hash != last_hash:
                raise Rejected(f"seq {raw.seq} does not follow seq {seq} in the chain",
                               reason="gap", seq=raw.seq)
        except Rejected as exc:
            out.append(exc)
            continue
        seq, last_hash = raw.seq, raw.hash
        out.append(raw)
        last_ok = i
    if last_ok < 0:
        return list(out)  # type: ignore[arg-type]  # every item a Rejected
    subject, headers, body = items[last_ok]
    try:
        check_signed(decode_raw(body), subject, headers, body, gate.verifier)
    except Rejected:  # not all of them genuine: take each on its own, signature and all
        return admit_each(gate, items)
    gate.seq, gate.hash = seq, last_hash
    results: list[Recorded | None | Rejected] = []
    for (subject, _, body), checked in zip(items, out):
        if isinstance(checked, Rejected):
            results.append(checked)
            continue
        try:  # genuine (signed, through the chain): a record this version may not read
            results.append(_record(checked, subject, body))
        except Rejected as exc:
            results.append(exc)
    return results


def admit_each(gate: Gate, items: list[Item]) -> list[Recorded | None | Rejected]:
    """Each message on its own, as `gate.admit` takes it, the outcome in place of a raise: a
    follower never stops, so even an error no check foresaw rejects one message, not a run."""
    out: list[Recorded | None | Rejected] = []
    for item in items:
        try:
            out.append(gate.admit(*item))
        except Rejected as exc:
            out.append(exc)
        except Exception as exc:  # a message this version cannot take at all
            out.append(Rejected(f"not admitted: {exc!r}", reason="malformed"))
    return out


def _record(raw: RawRecorded, subject: str, body: bytes) -> Recorded | None:
    """The record of a chained event (None for a type this version does not know)."""
    try:
        head = decode(raw.event, _TypeOnly)
    except InvalidInput as exc:
        raise Rejected(f"seq {raw.seq}: its event has no type: {exc.message}",
                       reason="malformed", seq=raw.seq) from None
    kind = head.type
    if not readable(head):
        return None
    try:
        rec = decode(body, Recorded)
        where = subject_for(rec.event)
    except GetOperateError as exc:  # a field no subject can be made of (an empty group name)
        raise Rejected(f"seq {raw.seq}: {exc.message}", reason="malformed",
                       seq=raw.seq) from None
    if where != subject:
        raise Rejected(f"seq {raw.seq} is a {kind} event published on {subject}",
                       reason="wrong_subject", seq=raw.seq)
    return rec


class Sampled:
    """Which of a run of like rejections to log: the 1st, 2nd, 4th, 8th... A single replay
    (an attack) is always logged; a whole log republished by the config service repairing its
    stream (every event a `repeat`) costs a few lines, not one per event."""

    def __init__(self) -> None:
        self.count = 0

    def worth_logging(self) -> bool:
        self.count += 1
        return self.count & (self.count - 1) == 0

