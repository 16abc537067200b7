"""The few pieces of NATS's JWT format an auth callout needs: an account nkey, signed claims.

nats-server's auth callout sends each new connection's details as a JWT and takes back an
authorization response JWT wrapping a user JWT, both signed by the account nkey named as
`issuer` in its config. An nkey is an Ed25519 key written as base32 of a type prefix byte, the
32-byte key and a CRC-16 (XMODEM, little-endian). A JWT is `header.claims.signature`, base64url
without padding; `alg` is `ed25519-nkey`. Written here (about 60 lines on `cryptography`'s
Ed25519) because the maintained libraries for this are Go and Java only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PREFIX_ACCOUNT = 0  # 'A...': the issuer of user JWTs
_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def encode_public(prefix: int, raw: bytes) -> str:
    """An nkey public key: base32(prefix byte, key, crc16), 56 characters."""
    data = bytes([prefix]) + raw
    data += _crc16(data).to_bytes(2, "little")
    return base64.b32encode(data).decode().rstrip("=")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AccountKey:
    """The account nkey the auth callout signs with (its public key goes into nats-server's
    config as `auth_callout.issuer`)."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed has 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                  serialization.PublicFormat.Raw)
        self.public = encode_public(PREFIX_ACCOUNT, raw)

    def sign(self, claims: dict[str, Any], now: float | None = None) -> str:
        """A JWT of `claims` issued by this key (`iss`, `iat` and `jti` filled in)."""
        body = dict(claims, iss=self.public, iat=int(now if now is not None else time.time()))
        body["jti"] = ""
        body["jti"] = base64.b32encode(
            hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()).decode().rstrip("=")
        signing_input = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(body).encode())}"
        return f"{signing_input}.{_b64(self._key.sign(signing_input.encode()))}"


def claims(jwt: str) -> dict[str, Any]:
    """The claims of a JWT (unverified: the callout's requests come from nats-server on a
    subject only it may publish to)."""
    parts = jwt.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    value = json.loads(_unb64(parts[1]))
    if not isinstance(value, dict):
        raise ValueError("JWT claims are not an object")
    return value
