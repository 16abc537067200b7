"""Signed snapshots of the folded configuration: what GO_SNAPSHOTS and the SQLite table hold.

A snapshot is a cache (the log is the truth), so one that fails any check is ignored and the
reader folds the log or the stream instead; it is never an error that stops a service.
"""

from __future__ import annotations

import msgspec

from shared.codec import decode_compact, encode_compact
from shared.errors import GetOperateError, InvalidInput
from shared.signing import SignatureError, Signer, Verifier
from shared.state import ConfigState


class SignedSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The folded configuration at `seq`, signed by the config service.

    `state` stays encoded (MessagePack of ConfigState): the signature covers those exact bytes,
    which a newer reader could not re-encode identically.
    """

    v: int = 1
    seq: int
    hash: str  # the chain hash of the event at `seq`: where a follower continues the chain
    # Where a follower starts reading GO_CONFIG after it: no event past `seq` is at or before
    # this stream sequence (0: from the start).
    stream_seq: int = 0
    state: bytes
    signature: str


class SnapshotRejected(GetOperateError, ValueError):
    """Raised when a snapshot is unreadable, unsigned, badly signed or not at its own sequence."""

    code = "snapshot_rejected"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, field="snapshot")
        self.reason = reason


def seal_snapshot(signer: Signer, state: ConfigState, chain_hash: str,
                  stream_seq: int) -> SignedSnapshot:
    body = encode_compact(state)
    return SignedSnapshot(seq=state.seq, hash=chain_hash, stream_seq=stream_seq, state=body,
                          signature=signer.sign_snapshot(state.seq, chain_hash, stream_seq, body))


def encode_snapshot(snap: SignedSnapshot) -> bytes:
    return encode_compact(snap)


def decode_snapshot(data: bytes) -> SignedSnapshot:
    try:
        return decode_compact(data, SignedSnapshot)
    except InvalidInput as exc:
        raise SnapshotRejected(f"not a signed snapshot: {exc.message}",
                               reason="malformed") from None


def open_snapshot(snap: SignedSnapshot, verifier: Verifier) -> ConfigState:
    """The state a snapshot holds, once its signature and its sequence check out."""
    try:
        verifier.verify_snapshot(snap.seq, snap.hash, snap.stream_seq, snap.state, snap.signature)
    except SignatureError as exc:
        raise SnapshotRejected(f"snapshot at seq {snap.seq}: {exc.message}",
                               reason=exc.reason) from None
    try:
        state = decode_compact(snap.state, ConfigState)
    except InvalidInput as exc:
        raise SnapshotRejected(f"snapshot at seq {snap.seq}: {exc.message}",
                               reason="malformed") from None
    if state.seq != snap.seq:
        raise SnapshotRejected(f"snapshot signed for seq {snap.seq} holds the state at seq"
                               f" {state.seq}", reason="wrong_seq")
    return state
