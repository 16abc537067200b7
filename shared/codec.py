"""The one place that owns msgspec encoders and decoders, built once, and maps their errors to ours."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from shared.errors import InvalidInput

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def encode(obj: object) -> bytes:
    """Encode any msgspec-supported value as compact JSON bytes."""
    return _encoder.encode(obj)


def decoder_for(type_: Any) -> msgspec.json.Decoder[Any]:
    """Return a cached decoder: building one per message would show up in the hot path."""
    dec = _decoders.get(type_)
    if dec is None:
        dec = _decoders[type_] = msgspec.json.Decoder(type_)
    return dec


def decode(data: bytes | str, type_: type[T] | Any) -> T:
    """Decode JSON into `type_`, raising InvalidInput that names the offending path."""
    try:
        return decoder_for(type_).decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid message: {exc}", field=_path_of(str(exc))) from exc
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from exc
    except RecursionError as exc:  # msgspec's nesting limit: a body nested thousands deep
        raise InvalidInput("malformed JSON: nested too deeply") from exc


def to_builtins(obj: object) -> Any:
    """Plain dicts/lists, for places that print or merge JSON."""
    return msgspec.to_builtins(obj)


def convert(obj: object, type_: type[T]) -> T:
    """Validate already-parsed data (dicts) into a typed struct."""
    try:
        return msgspec.convert(obj, type_)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid message: {exc}", field=_path_of(str(exc))) from exc


def _path_of(message: str) -> str | None:
    """msgspec ends validation errors with `- at `$.field``; keep the field for JSON error bodies."""
    marker = "at `$."
    i = message.rfind(marker)
    if i < 0:
        return None
    return message[i + len(marker):].rstrip("`").split("[")[0] or None


_mp_encoder = msgspec.msgpack.Encoder()


def encode_compact(obj: object) -> bytes:
    """MessagePack: for derived blobs (state snapshots) where size and speed matter, not reading."""
    return _mp_encoder.encode(obj)


def decode_compact(data: bytes, type_: type[T]) -> T:
    try:
        return msgspec.msgpack.decode(data, type=type_)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidInput(f"invalid snapshot: {exc}") from exc
