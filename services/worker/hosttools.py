"""Tools the worker runs on its host for jobs (uv, go build), bounded, and the caches they fill.

They run outside the sandbox because their output is shared (an environment per lock, a binary
per script) and must not be writable by jobs. What a job chooses still decides what they do
(the packages, the code compiled), so each run is bounded: every file it writes is capped
(RLIMIT_FSIZE: a wheel that unpacks to gigabytes, a binary of a huge array, fail), it has a time
limit of its own, and a finished entry larger than `MAX_ENTRY_BYTES` is deleted and refused.
Each cache folder is kept under `WORKER_CACHE_MAX_BYTES` by removing the entries used least
recently (never one used in the last `KEEP_RECENT` seconds: a running job may be reading it).
Memory is not capped here (Go's runtime reserves more address space than it uses, so an
address-space limit breaks the compiler); docs/security.md says so.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

from shared.errors import InvalidInput


def parse_size(name: str, default: int, strict: bool = True) -> int:
    """A size from the environment. The worker checks them strictly at start (settings.py), so
    a bad value stops it with one clear line; here it falls back to the default."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        if not strict:
            return default
        raise InvalidInput(f"{name} must be a number of bytes, got {raw!r}", field=name) from None
    if value < 1 << 20:
        if not strict:
            return default
        raise InvalidInput(f"{name} must be at least 1048576 (1 MiB)", field=name)
    return value


SIZES = {"WORKER_TOOL_FILE_BYTES": 1 << 30,  # any one file a tool writes
         "WORKER_CACHE_ENTRY_BYTES": 2 << 30,  # one environment, one binary
         "WORKER_CACHE_MAX_BYTES": 10 << 30}  # each cache folder in all
FILE_BYTES = parse_size("WORKER_TOOL_FILE_BYTES", SIZES["WORKER_TOOL_FILE_BYTES"], strict=False)
MAX_ENTRY_BYTES = parse_size("WORKER_CACHE_ENTRY_BYTES", SIZES["WORKER_CACHE_ENTRY_BYTES"],
                         strict=False)
CACHE_MAX_BYTES = parse_size("WORKER_CACHE_MAX_BYTES", SIZES["WORKER_CACHE_MAX_BYTES"],
                         strict=False)
MAX_SECONDS = 600.0  # a tool run, whatever the job's own timeout
KEEP_RECENT = 600.0
USED = ".used"  # touched on every use: the entry's age for eviction


class ToolFailed(Exception):
    """The tool exited non-zero, timed out or wrote too much: its output is the message."""


async def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float,
              stdin: bytes | None = None) -> tuple[bytes, bytes]:
    """Run a host tool with its files capped and a time limit; (stdout, stderr)."""
    limit = min(timeout, MAX_SECONDS)
    proc = await asyncio.create_subprocess_exec(
        "prlimit", f"--fsize={FILE_BYTES}", "--", *argv, cwd=str(cwd), env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), limit)
    except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the tool and whatever it started
        except ProcessLookupError:
            pass
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise ToolFailed(f"did not finish within {limit:g}s") from None
    if proc.returncode != 0:
        text = (err or out).decode(errors="replace").strip()
        if proc.returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ) or "File too large" in text:
            text = f"it wrote a file larger than {FILE_BYTES} bytes (WORKER_TOOL_FILE_BYTES)"
        raise ToolFailed(text or f"exit code {proc.returncode}")
    return out, err


def size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def check_entry(path: Path, what: str) -> None:
    """Refuse (and delete) a finished entry larger than MAX_ENTRY_BYTES."""
    found = size(path)
    if found > MAX_ENTRY_BYTES:
        shutil.rmtree(path, ignore_errors=True)
        raise ToolFailed(f"{what} is {found} bytes; the limit is {MAX_ENTRY_BYTES}"
                         " (WORKER_CACHE_ENTRY_BYTES)")


def touch(entry: Path) -> None:
    try:
        (entry / USED).touch()
    except OSError:
        pass


def prune(folder: Path, keep: Path | None = None) -> list[str]:
    """Remove the least recently used entries of `folder` until it holds at most
    CACHE_MAX_BYTES; never `keep` nor an entry used in the last KEEP_RECENT seconds."""
    entries = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        used = entry / USED
        at = used.stat().st_mtime if used.exists() else entry.stat().st_mtime
        entries.append((at, entry, size(entry)))
    total = sum(s for _, _, s in entries)
    removed = []
    now = time.time()
    for at, entry, bytes_ in sorted(entries, key=lambda e: e[0]):
        if total <= CACHE_MAX_BYTES:
            break
        if entry == keep or now - at < KEEP_RECENT:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        total -= bytes_
        removed.append(entry.name)
    return removed
