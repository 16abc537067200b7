"""aiohttp edges shared by the services: JSON in/out with msgspec, typed errors as 4xx JSON, tokens."""

from __future__ import annotations

import asyncio
import hashlib
import math
import hmac
from typing import Any, Awaitable, Callable, TypeVar

from aiohttp import web
from nats import errors as nats_errors

from services.common.log import Logger
from shared.codec import decode, encode
from shared.errors import Forbidden, GetOperateError, InvalidInput, Unauthorized
from shared.identity import Identity, bearer_token
from shared.state import ApiToken, ConfigState

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
        except (asyncio.TimeoutError, nats_errors.Error) as exc:
            # NATS unreachable or electing a leader: the caller may retry; nothing was half-done
            # (writes are appended to SQLite before any publish, and publishes are idempotent).
            logger.warning("http_unavailable", path=request.path, error=repr(exc))
            return json_response({"error": "unavailable",
                                  "message": "NATS did not answer in time; retry shortly"},
                                 status=503)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json":
                return json_response(
                    {"error": "http", "message": exc.reason}, status=exc.status
                )
            raise
        except Exception as exc:
            logger.exception("http_unhandled", exc, path=request.path)
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
    """Bearer tokens: the bootstrap admin token, and tokens issued as config events (by hash).

    Only hashes are held. The admin token is one secret: its hash is compared in constant time.
    An issued token is found by looking up the SHA-256 of the presented one: the lookup's timing
    depends only on that digest, which says nothing about any stored hash unless one already
    holds a preimage of it (a valid token), so no comparison is needed after it.
    """

    def __init__(self, admin_token: str, state: Callable[[], ConfigState] | None = None):
        self._admin_hash = hash_token(admin_token)
        self._state = state
        self._index: dict[str, ApiToken] = {}
        self._index_seq = -1

    def _lookup(self, digest: str) -> ApiToken | None:
        if self._state is None:
            return None
        state = self._state()
        if state.seq != self._index_seq:
            self._index = {t.token_hash: t for t in state.tokens.values()}
            self._index_seq = state.seq
        return self._index.get(digest)

    def identity(self, request: web.Request) -> Identity:
        """The identity behind the request's token, or Unauthorized."""
        return self.identify(request.headers.get("Authorization"))

    def identify(self, authorization: str | None) -> Identity:
        """The identity behind an `Authorization: Bearer <token>` header value (HTTP or NATS)."""
        digest = hash_token(bearer_token(authorization))
        if hmac.compare_digest(digest, self._admin_hash):
            return Identity("admin")
        issued = self._lookup(digest)
        if issued is None:
            raise Unauthorized("invalid or revoked token")
        return Identity(issued.name, issued.workspace, issued.created_seq)

    def token_live(self, who: Identity) -> bool:
        """Is the token behind `who` still valid (not revoked, not replaced under its name)?"""
        if who.token_seq == 0 and who.admin and who.name == "admin":
            return True  # the bootstrap token: it lives as long as the process holds it
        issued = self._state().tokens.get(who.name) if self._state is not None else None
        return (issued is not None and issued.created_seq == who.token_seq
                and issued.workspace == who.workspace)

    def admin(self, request: web.Request) -> Identity:
        """The identity, which must be an admin (configuration changes, init scripts, tokens)."""
        who = self.identity(request)
        if not who.admin:
            raise Forbidden(f"token {who.name!r} is a workspace token ({who.workspace});"
                            " this needs an admin token")
        return who

    def admin_actor(self, request: web.Request) -> str:
        """The admin gate of configuration changes: the name recorded as the change's actor, or
        Unauthorized / Forbidden for anything but an admin token."""
        return self.admin(request).name


def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name} must be an integer, got {raw!r}", field=name)


def query_range(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; outside it, InvalidInput naming it."""
    value = query_int(request, name, default)
    assert value is not None
    if not low <= value <= high:
        raise InvalidInput(f"query parameter {name} must be between {low} and {high}, got"
                           f" {value}", field=name)
    return value


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
