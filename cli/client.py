"""How the CLI finds and calls the services: endpoints.json, env overrides, bearer token, urllib."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, TypeVar

import msgspec

from shared import idempotency
from shared.errors import GetOperateError

ENDPOINTS_FILE = "endpoints.json"
# Longer than the router's answer bound (services/router/service.py ANSWER_WITHIN, 10 s).
SUBMIT_TIMEOUT = 30.0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNKNOWN = 4  # a submission whose outcome is unknown: the job may have been queued
EXIT_WAITING = 5  # --wait's --timeout passed with the job still queued or running


class CliError(GetOperateError):
    """Raised to end a command with one line on stderr and a documented exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


T = TypeVar("T")


def answer_as(answer: Any, type_: type[T], what: str) -> T:
    """A service's JSON answer as the shared struct the service encoded it from (shared/jobs.py,
    shared/isolation.py): the CLI reads fields by name from the same types the services write,
    so a renamed or retyped field fails here, and in the tests that run the command, instead of
    printing a blank for users. Fields a newer service added are ignored."""
    try:
        return msgspec.convert(answer, type_)
    except msgspec.ValidationError as exc:
        name = getattr(type_, "__name__", None) or str(type_)
        raise CliError(f"{what}: the answer does not read as {name} ({exc}); are the CLI and the"
                       " services the same version?") from exc


class Endpoints:
    """Service URLs and token: flags, then env, then `<data dir>/endpoints.json`, then defaults."""

    def __init__(self, data_dir: Path, config_url: str | None = None, router_url: str | None = None):
        saved: dict[str, Any] = {}
        path = data_dir / ENDPOINTS_FILE
        if path.exists():
            saved = json.loads(path.read_text())
        self.data_dir = data_dir
        self.config_url = (config_url or os.environ.get("GETOPERATE_CONFIG_URL")
                           or saved.get("config_url") or "http://127.0.0.1:8001").rstrip("/")
        self.router_url = (router_url or os.environ.get("GETOPERATE_ROUTER_URL")
                           or saved.get("router_url") or "http://127.0.0.1:8002").rstrip("/")
        self.nats_url = os.environ.get("NATS_URL") or saved.get("nats_url") or "nats://127.0.0.1:4222"

    def nats_auth(self) -> dict[str, str]:
        """NATS_USER/NATS_PASSWORD, else the admin entry of the data dir's credentials file."""
        if os.environ.get("NATS_USER"):
            return {"user": os.environ["NATS_USER"], "password": os.environ.get("NATS_PASSWORD", "")}
        path = self.data_dir / "nats-credentials.json"
        if path.exists():
            return {"user": "admin", "password": json.loads(path.read_text())["admin"]}
        return {}

    def token(self) -> str | None:
        token = os.environ.get("GETOPERATE_TOKEN") or os.environ.get("GETOPERATE_ADMIN_TOKEN")
        if token:
            return token
        path = self.data_dir / "admin.token"
        return path.read_text().strip() if path.exists() else None


def submit(url: str, token: str | None, body: Any, key: str, retry_for: float,
           progress: Callable[[str], None]) -> Any:
    """POST a job with an idempotency key, repeating it while the outcome is unknown or the
    router cannot queue now (unreachable, no answer, 503) for up to `retry_for` seconds. Safe:
    the router answers a repeat of the key with the job it first queued (shared/idempotency.py).
    A refusal (4xx, 507) is final, and so is a router not running at the first attempt (nothing
    to wait for). Gives up with EXIT_UNKNOWN when some attempt may have queued the job."""
    deadline = time.monotonic() + retry_for
    headers = {idempotency.HEADER: key}
    delay, attempt, unknown = 0.5, 1, False
    while True:
        try:
            return _call_once("POST", url, token, body, SUBMIT_TIMEOUT, headers)
        except _Transient as exc:
            unknown = unknown or exc.outcome_unknown
            refused_at_once = attempt == 1 and isinstance(exc, _Unreachable) and not unknown
            if refused_at_once or time.monotonic() + delay > deadline:
                if unknown:
                    raise CliError(f"{exc.message}; repeat the same command with"
                                   f" --idempotency-key {key} to find or finish that job, never"
                                   " a second one", EXIT_UNKNOWN) from exc
                raise CliError(exc.message, exc.exit_code) from exc
            progress(f"submission not confirmed ({exc.message}); trying again with the same"
                     f" idempotency key (attempt {attempt + 1})")
            time.sleep(delay)
            delay, attempt = min(delay * 2, 5.0), attempt + 1


def call(method: str, url: str, token: str | None, body: Any = None, timeout: float = 30.0,
         retries: int = 5) -> Any:
    """One JSON HTTP call; reads are retried while a service answers 503 (NATS away or electing
    a leader); service errors become CliError with the service's message."""
    for attempt in range(retries + 1):
        try:
            return _call_once(method, url, token, body, timeout)
        except _Unavailable as exc:
            if method != "GET" or attempt == retries:
                raise CliError(exc.message, EXIT_FAILED) from exc
            time.sleep(min(0.2 * 2 ** attempt, 3.0))
    raise AssertionError("unreachable")


class _Transient(CliError):
    """A failure that may pass; `outcome_unknown` when the request may have taken effect."""

    def __init__(self, message: str, exit_code: int, outcome_unknown: bool = False):
        super().__init__(message, exit_code)
        self.outcome_unknown = outcome_unknown


class _Unavailable(_Transient):
    """Raised when a service answered 503 (`outcome_unknown`: a job may have been queued)."""


class _Unreachable(_Transient):
    """Raised when a service could not be reached (nothing sent), or took the request and did
    not answer in time or dropped the connection (outcome unknown)."""


def _call_once(method: str, url: str, token: str | None, body: Any, timeout: float,
               headers: dict[str, str] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        err: dict[str, Any] = {}
        try:
            err = json.loads(raw)
            message = err.get("message") or err.get("error") or raw.decode()
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace") or exc.reason
        code = EXIT_USAGE if exc.code in (400, 413, 422) else EXIT_FAILED
        if exc.code == 503:
            unknown = isinstance(err, dict) and err.get("error") == "outcome_unknown"
            raise _Unavailable(f"{message} (HTTP 503)", EXIT_FAILED, unknown) from exc
        raise CliError(f"{message} (HTTP {exc.code})", code) from exc
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (TimeoutError, socket.timeout)):  # it took the request: no answer
            raise _Unreachable(f"{_host(url)} did not answer within {timeout:g} s",
                               EXIT_UNREACHABLE, outcome_unknown=True) from exc
        if isinstance(reason, ConnectionError) and not isinstance(reason, ConnectionRefusedError):
            raise _Unreachable(f"{_host(url)} dropped the connection before answering ({reason})",
                               EXIT_UNREACHABLE, outcome_unknown=True) from exc
        raise _Unreachable(
            f"cannot reach {_host(url)}: {reason}; is `getoperate up` running here"
            " (or GETOPERATE_CONFIG_URL / GETOPERATE_ROUTER_URL set)?", EXIT_UNREACHABLE,
        ) from exc
    return json.loads(raw) if raw else None


def _host(url: str) -> str:
    return url.split("/", 3)[:3][-1]
