"""aiohttp edges shared by the services: JSON in/out with msgspec, typed errors as 4xx JSON, tokens."""

from __future__ import annotations

import hashlib
import math
import hmac
from typing import Any, Awaitable, Callable, TypeVar

from aiohttp import web

from services.common.log import Logger
from shared.codec import decode, encode
from shared.errors import GetOperateError, InvalidInput, Unauthorized

T = TypeVar("T")
MAX_BODY_BYTES = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=encode(obj), status=status, content_type="application/json")


def error_middleware(logger: Logger) -> Any:
    """Typed errors become JSON bodies naming the field; anything unexpected is a logged 500."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GetOperateError as exc:
            return json_response(exc.to_dict(), status=exc.status)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json":
                return json_response(
                    {"error": "http", "message": exc.reason}, status=exc.status
                )
            raise
        except Exception as exc:
            logger.error("http_unhandled", path=request.path, error=repr(exc))
            return json_response({"error": "internal", "message": "internal error"}, status=500)

    return middleware


async def read_body(request: web.Request, type_: type[T]) -> T:
    """Decode the JSON body into `type_`; malformed, wrong or unknown fields are 400 naming the field."""
    raw = await request.read()
    if not raw:
        raise InvalidInput("request body must be a JSON object", field="body")
    return decode(raw, type_)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenCheck:
    """Bearer-token check against a stored hash, compared in constant time."""

    def __init__(self, admin_token: str):
        self._admin_hash = hash_token(admin_token)

    def actor(self, request: web.Request) -> str:
        """The identity behind the request's token, or Unauthorized."""
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        if not token:
            raise Unauthorized("missing token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(hash_token(token), self._admin_hash):
            raise Unauthorized("invalid token")
        return "admin"


def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name} must be an integer, got {raw!r}", field=name)


def query_float(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name} must be a number, got {raw!r}", field=name)
    if not math.isfinite(value):
        raise InvalidInput(f"query parameter {name} must be a finite number, got {raw!r}", field=name)
    return value
