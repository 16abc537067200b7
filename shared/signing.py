"""Ed25519 signatures of config events and snapshots: what is signed, and how to check it.

Pure: keys arrive as text or objects, never from files (that is `services/common/signingkeys.py`).
Ed25519, not HMAC: routers and workers must be able to check a signature without being able to
make one, and an HMAC key that verifies also signs (docs/security.md, "Signed configuration").

What is signed (each message starts with its own label, so a snapshot's signature can never
pass for an event's):

- an event: its log sequence, the subject it is published on, the log sequence of the previous
  event on that subject (0 for the first), and the SHA-256 of the stored bytes. The bytes carry
  the hash chain; the subject and the previous sequence are what a worker, which reads only its
  group's subject, needs to know that it missed nothing and that the event is for its subject.
- a snapshot: the sequence it stands for, the chain hash at that sequence, the stream sequence
  a reader continues after, and the SHA-256 of the encoded state.

A signature travels as `<key id>.<base64url signature>`; the key id (16 hex digits of the
SHA-256 of the public key) picks the key among those a follower accepts, so a rotation can
list two.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.errors import GetOperateError, InvalidInput

# NATS headers of every GO_CONFIG message the config service publishes.
SIGNATURE_HEADER = "Go-Signature"
SUBJECT_PREV_HEADER = "Go-Subject-Prev"

_EVENT_LABEL = b"getoperate config event v1\n"
_SNAPSHOT_LABEL = b"getoperate config snapshot v1\n"
KEY_BYTES = 32


class SignatureError(GetOperateError, ValueError):
    """Raised when a signature is missing, malformed, made by an unknown key or does not verify."""

    code = "bad_signature"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, field="signature")
        self.reason = reason


class BadKey(InvalidInput):
    """Raised when a configured key is not a base64 Ed25519 key."""

    code = "bad_key"


def event_message(seq: int, subject: str, subject_prev: int, body: bytes) -> bytes:
    """The bytes an event's signature covers."""
    return (_EVENT_LABEL + b"%d\n%s\n%d\n" % (seq, subject.encode(), subject_prev)
            + hashlib.sha256(body).digest())


def snapshot_message(seq: int, chain_hash: str, stream_seq: int, state: bytes) -> bytes:
    """The bytes a snapshot's signature covers."""
    return (_SNAPSHOT_LABEL + b"%d\n%s\n%d\n" % (seq, chain_hash.encode(), stream_seq)
            + hashlib.sha256(state).digest())


def _raw(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """Short name of a public key (in every signature, in logs and in `verify`)."""
    return hashlib.sha256(_raw(key)).hexdigest()[:16]


def public_text(key: Ed25519PublicKey) -> str:
    """A public key as base64 of its 32 bytes (GETOPERATE_CONFIG_PUBLIC_KEY, config-signing.pub)."""
    return base64.b64encode(_raw(key)).decode()


def private_text(key: Ed25519PrivateKey) -> str:
    """A private key as base64 of its 32-byte seed (GETOPERATE_CONFIG_SIGNING_KEY)."""
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    return base64.b64encode(
        key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()


def _key_bytes(text: str, field: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise BadKey(f"{field} is not an Ed25519 key: expected base64 of {KEY_BYTES} bytes"
                     " (make a pair with `python -m services.config.signing keygen`)",
                     field=field)
    return raw


def parse_private_key(text: str, *, field: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_key_bytes(text, field))


def parse_public_keys(text: str, *, field: str) -> list[Ed25519PublicKey]:
    """One key, or several separated by commas (during a rotation: new and old)."""
    parts = [p for p in text.replace("\n", ",").split(",") if p.strip()]
    if not parts:
        raise BadKey(f"{field} is empty", field=field)
    return [Ed25519PublicKey.from_public_bytes(_key_bytes(p, field)) for p in parts]


def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


class Signer:
    """The config service's signing key (nothing else holds one)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, message: bytes) -> str:
        return f"{self.key_id}.{base64.urlsafe_b64encode(self._key.sign(message)).decode()}"

    def sign_event(self, seq: int, subject: str, subject_prev: int, body: bytes) -> str:
        return self.sign(event_message(seq, subject, subject_prev, body))

    def sign_snapshot(self, seq: int, chain_hash: str, stream_seq: int, state: bytes) -> str:
        return self.sign(snapshot_message(seq, chain_hash, stream_seq, state))


class Verifier:
    """The public keys a follower accepts, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys = {key_id(k): k for k in keys}
        if not self._keys:
            raise BadKey("a verifier needs at least one public key", field="public_key")

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def verify(self, message: bytes, signature: str | None) -> str:
        """Check `signature` over `message`; return the key id that made it."""
        if not signature:
            raise SignatureError("not signed", reason="unsigned")
        kid, _, sig = signature.partition(".")
        key = self._keys.get(kid)
        if key is None:
            raise SignatureError(f"signed by unknown key {kid[:16]!r} (accepted:"
                                 f" {', '.join(self._keys)})", reason="unknown_key")
        try:
            key.verify(base64.urlsafe_b64decode(sig.encode()), message)
        except (InvalidSignature, binascii.Error, ValueError):
            raise SignatureError(f"signature by key {kid} does not verify",
                                 reason="bad_signature") from None
        return kid

    def verify_event(self, seq: int, subject: str, subject_prev: int, body: bytes,
                     signature: str | None) -> str:
        return self.verify(event_message(seq, subject, subject_prev, body), signature)

    def verify_snapshot(self, seq: int, chain_hash: str, stream_seq: int, state: bytes,
                        signature: str | None) -> str:
        return self.verify(snapshot_message(seq, chain_hash, stream_seq, state), signature)
