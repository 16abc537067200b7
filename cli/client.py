"""How the CLI finds and calls the services: endpoints.json, env overrides, bearer token, urllib."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from shared.errors import GetOperateError

ENDPOINTS_FILE = "endpoints.json"
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class CliError(GetOperateError):
    """Raised to end a command with one line on stderr and a documented exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


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


class _Unavailable(CliError):
    """Raised when a service answered 503."""


def _call_once(method: str, url: str, token: str | None, body: Any, timeout: float) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            err = json.loads(raw)
            message = err.get("message") or err.get("error") or raw.decode()
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace") or exc.reason
        code = EXIT_USAGE if exc.code in (400, 413, 422) else EXIT_FAILED
        if exc.code == 503:
            raise _Unavailable(f"{message} (HTTP 503)") from exc
        raise CliError(f"{message} (HTTP {exc.code})", code) from exc
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"cannot reach {url.split('/', 3)[:3][-1]}: {reason}; is `getoperate up` running here"
            " (or GETOPERATE_CONFIG_URL / GETOPERATE_ROUTER_URL set)?", EXIT_UNREACHABLE,
        ) from exc
    return json.loads(raw) if raw else None
