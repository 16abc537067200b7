"""Process wiring shared by the services: settings from the environment, signals, HTTP serving."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from services.common.log import Logger

DEFAULT_DATA_DIR = ".getoperate"
TOKEN_FILE = "admin.token"


def env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def data_dir() -> Path:
    return Path(env("GETOPERATE_DATA_DIR", DEFAULT_DATA_DIR))


def admin_token(directory: Path, *, create: bool) -> str | None:
    """GETOPERATE_ADMIN_TOKEN, else `<data dir>/admin.token` (generated, mode 0600, when `create`)."""
    token = os.environ.get("GETOPERATE_ADMIN_TOKEN")
    if token:
        return token
    path = directory / TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    token = "goa_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def stop_on_signals() -> asyncio.Event:
    """An event set on SIGINT/SIGTERM: services drain and exit instead of dying mid-write."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve_http(app: web.Application, host: str, port: int, logger: Logger) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    logger.info("http_listening", url=f"http://{host}:{port}")
    return runner


def run(main: Callable[[], Awaitable[None]]) -> int:
    """Run a service's async main; Ctrl-C is a clean stop, not a traceback."""
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0
