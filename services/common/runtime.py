"""Process wiring shared by the services: settings from the environment, signals, HTTP serving."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable, TypeVar

if TYPE_CHECKING:  # the CLI imports this module: aiohttp's 130 ms only where a server runs
    from aiohttp import web

from services.common import tasks
from services.common.log import Logger

DEFAULT_DATA_DIR = ".getoperate"
TOKEN_FILE = "admin.token"
# Processes writing into a data dir create what they write for their own user only: the dir
# holds the admin token, NATS passwords, the config log (group env values, init scripts) and the
# JetStream store. SQLite's -wal/-shm and nats-server's store files inherit this.
PRIVATE_UMASK = 0o077
_GROUP_OTHER = stat.S_IRWXG | stat.S_IRWXO


def env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def data_dir() -> Path:
    return Path(env("GETOPERATE_DATA_DIR", DEFAULT_DATA_DIR))


def make_private(path: Path) -> None:
    """Take group and other permission bits off one file or directory (best effort: a volume
    root owned by someone else, as Kubernetes mounts a PVC, cannot be changed and need not be)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & _GROUP_OTHER:
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~_GROUP_OTHER)
    except (FileNotFoundError, PermissionError):
        pass


def private_dir(directory: Path, *, recursive: bool = True) -> Path:
    """Create `directory` (mode 0700) or tighten an existing one, and with `recursive` everything
    in it (a data dir made by an older version was 0755 with 0644 files). Symlinks are not
    followed. Directories end up 0700 and files 0600 (an owner's x bit is kept)."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    make_private(directory)
    if recursive:
        for root, dirs, files in os.walk(directory):
            for name in dirs + files:
                make_private(Path(root) / name)
    return directory


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner only from the first byte on (a temp file
    created 0600 in the same directory, then renamed over it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    private_dir(directory, recursive=False)
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

    def failed() -> None:  # a vital background task died (services/common/tasks.py)
        _EXIT_CODE[0] = 1
        stop.set()
    tasks.on_vital_failure(failed)
    return stop


_EXIT_CODE = [0]  # what `run` returns: 1 once a vital task failed


async def serve_http(app: web.Application, host: str, port: int, logger: Logger) -> web.AppRunner:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    logger.info("http_listening", url=f"http://{host}:{port}")
    return runner


def nats_url() -> str:
    """NATS_URL, else the one `getoperate up` wrote in the data dir's endpoints.json (a service
    started in its folder joins that deployment, as every CLI command does), else the default."""
    if os.environ.get("NATS_URL"):
        return os.environ["NATS_URL"]
    try:
        saved = json.loads((data_dir() / "endpoints.json").read_text())
        if isinstance(saved, dict) and isinstance(saved.get("nats_url"), str):
            return saved["nats_url"]
    except (OSError, ValueError):
        pass
    return "nats://127.0.0.1:4222"


T = TypeVar("T")


async def until_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None when a stop signal came first (then `work` is cancelled): a
    service still connecting to an unreachable NATS must stop on SIGTERM at once."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except BaseException:  # cancelled as asked, or it failed meanwhile: it is stopping either way
        pass
    return None


def run(main: Callable[[], Awaitable[None]]) -> int:
    """Run a service's async main; Ctrl-C is a clean stop, not a traceback. The exit code is 1
    when a vital background task failed (services/common/tasks.py), else 0."""
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return _EXIT_CODE[0]
