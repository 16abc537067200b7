"""Python dependencies with uv: a lock per requirement set, a virtual environment per lock.

Both are cached in the worker's cache folder (WORKER_CACHE_DIR) and built once: an inline job's
lock under its workspace and the digest of its requirements, for LOCK_TTL (one workspace's lock
never decides another's versions, and a release published since is picked up within a day); a
deployed script's lock comes with the job, resolved afresh by its dependency job. An environment
is cached under the digest of its lock, shared by every job and warm runtime whose lock is the
same: a lock pins every file by hash, so sharing it across workspaces shares nothing a workspace
chose. Environments are built in a scratch folder and renamed into place, under a file lock, so
workers sharing a cache never see half an environment.

uv runs on the worker, outside the sandbox, so nothing of a package may run there: only wheels
are installed (`--only-binary :all:`: installing a wheel unpacks files, building an sdist runs
its code), locks carry hashes, and an environment is mounted read-only into the jobs that use it.
The resolver's index comes from the worker's own UV_* variables (UV_INDEX_URL, UV_FIND_LINKS,
UV_NO_INDEX...), never from the script, and no uv.toml is read (UV_NO_CONFIG). uv runs bounded
(services/worker/hosttools.py): capped files, a time limit, entries too large refused, the
environments' folder pruned to its size. For a group with the network off, uv runs offline
(UV_OFFLINE): only what the worker already has.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import sys
import time
from pathlib import Path

from services.worker import hosttools
from shared import pydeps

ONLY_BINARY = ("--only-binary", ":all:")
LOCK_TTL = 24 * 3600.0  # an inline job's cached lock: newer releases are picked up after this


class ResolveFailed(Exception):
    """uv could not lock or install: the message is uv's own, trimmed."""


def find_uv() -> str | None:
    try:
        from uv import find_uv_bin  # the `uv` wheel, a dependency of getoperate

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def _env(cache: Path, network: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith("UV_")}
    env.update({k: os.environ[k] for k in ("PATH", "HOME", "LANG", "SSL_CERT_FILE",
                                           "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
                if k in os.environ})
    env.setdefault("UV_CACHE_DIR", str(cache / "uv"))
    env.update(UV_PYTHON_DOWNLOADS="never", NO_COLOR="1", UV_NO_PROGRESS="1", UV_NO_CONFIG="1")
    if not network:
        env["UV_OFFLINE"] = "1"
    return env


class PythonEnvs:
    """Locks and environments of one cache folder."""

    def __init__(self, cache: Path, uv: str | None = None, python: str = sys.executable):
        self.root = cache / "python"
        self.uv = uv or find_uv()
        self.python = python
        self._locks: dict[str, asyncio.Lock] = {}

    async def lock(self, requirements: tuple[str, ...], timeout: float, *, scope: str,
                   fresh: bool = False, network: bool = True) -> str:
        """The pinned, hashed lock of `requirements`: cached per `scope` (a workspace) by their
        digest for LOCK_TTL, unless `fresh` (a dependency job: what is recorded for a deploy is
        always resolved then)."""
        wanted = "\n".join(sorted(requirements)) + "\n"
        name = pydeps.digest(f"{scope}\n{wanted}")
        path = self.root / "locks" / f"{name}.txt"
        if not fresh and _current(path):
            return path.read_text()
        async with self._guard(f"lock-{name}"):
            if not fresh and _current(path):
                return path.read_text()
            text = await self._uv(["pip", "compile", "--quiet", "--no-header",
                                   "--generate-hashes", *ONLY_BINARY, "--python", self.python,
                                   "-"], timeout, stdin=wanted, what="resolve", network=network)
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_suffix(f".{os.getpid()}.tmp")
            scratch.write_text(text)
            os.replace(scratch, path)
            return text

    async def environment(self, lock: str, timeout: float, *, network: bool = True) -> Path:
        """The virtual environment of `lock`, built once."""
        name = pydeps.digest(lock)
        final = self.root / "envs" / name
        if (final / ".complete").exists():
            hosttools.touch(final)
            return final
        async with self._guard(name):
            if (final / ".complete").exists():
                return final
            final.parent.mkdir(parents=True, exist_ok=True)
            scratch = final.parent / f".{name}.{os.getpid()}"
            shutil.rmtree(scratch, ignore_errors=True)
            try:
                await self._uv(["venv", "--quiet", "--relocatable", "--python", self.python,
                                str(scratch)], timeout, what="create an environment",
                               network=network)
                (scratch / "lock.txt").write_text(lock)
                await self._uv(["pip", "sync", "--quiet", *ONLY_BINARY, "--python",
                                str(scratch / "bin" / "python"), str(scratch / "lock.txt")],
                               timeout, what="install", network=network)
                try:
                    hosttools.check_entry(scratch, "the environment")
                except hosttools.ToolFailed as exc:
                    raise ResolveFailed(f"uv could not install: {exc}") from None
                (scratch / ".complete").write_text("")
                hosttools.touch(scratch)
                for folder, _, _ in os.walk(scratch):  # read by the job's own uid
                    os.chmod(folder, 0o755)
                shutil.rmtree(final, ignore_errors=True)  # an unfinished one
                os.rename(scratch, final)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            hosttools.prune(final.parent, keep=final)
            return final

    def _guard(self, name: str) -> "Guard":
        return Guard(self._locks.setdefault(name, asyncio.Lock()), self.root / "guards" / name)

    async def _uv(self, args: list[str], timeout: float, *, what: str, network: bool,
                  stdin: str | None = None) -> str:
        if self.uv is None:
            raise ResolveFailed("uv is not installed on this worker (pip install uv)")
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            out, _ = await hosttools.run(
                [self.uv, *args], cwd=self.root, env=_env(self.root.parent, network),
                timeout=timeout, stdin=stdin.encode() if stdin is not None else None)
        except hosttools.ToolFailed as exc:
            raise ResolveFailed(f"uv could not {what}: {str(exc)[-4000:]}") from None
        return out.decode()


def _current(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime < LOCK_TTL
    except FileNotFoundError:
        return False


class Guard:
    """One builder per name: an asyncio lock in this worker, a file lock across workers."""

    def __init__(self, lock: asyncio.Lock, path: Path):
        self.lock, self.path, self.fd = lock, path, -1

    async def __aenter__(self) -> None:
        await self.lock.acquire()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            await asyncio.to_thread(fcntl.flock, self.fd, fcntl.LOCK_EX)
        except BaseException:
            if self.fd >= 0:
                os.close(self.fd)
            self.lock.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.lock.release()
