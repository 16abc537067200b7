"""Run one piece of user code to its end: files in, a sandboxed process, logs and a result out.

The worker's own files for a run (its log and its result) live in `<work root>/out`, outside
anything the job can see or name: a job can replace files in its own folder with symlinks, so
the worker never reads back a path the job could write. Results come through an inherited file
descriptor; bash's result is the last line it wrote to stdout (never stderr), read from a pipe.
Arguments never travel on a command line, where every process of the machine could read them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Literal

import msgspec

from services.worker import sandbox, seccomp
from services.worker import languages
from services.worker.cgroups import Cgroups, RunCgroup
from services.worker.sandbox import Policy
from services.worker.workspace import Workspace
from shared.jobs import Job

MAX_LOG_BYTES = 256 * 1024
MAX_RESULT_BYTES = 512 * 1024
MAX_OUTPUT_BYTES = 64 * 1024 * 1024  # what a job's output may cost the worker to copy
# Variables a job may see from the worker's own environment; everything else (NATS credentials,
# tokens) stays out of user code. Extend with WORKER_ENV_ALLOWLIST=A,B.
BASE_ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
SANDBOX_PATH = "/init/bin:/usr/local/bin:/usr/bin:/bin"


class Outcome(msgspec.Struct, kw_only=True):
    """What running a job produced."""

    status: Literal["success", "failure", "cancelled"]
    result: Any = None
    error: str | None = None
    logs: str = ""
    duration_ms: float = 0.0


class Finished(msgspec.Struct, kw_only=True):
    """How a sandboxed process ended: exit status (None on timeout), logs, result bytes."""

    code: int | None
    logs: str
    result: bytes = b""
    stdout_last: str | None = None
    limit: str | None = None


def job_env(job: Job, extra: dict[str, str], allowlist: tuple[str, ...],
            sandboxed: bool = False) -> dict[str, str]:
    env = {k: os.environ[k] for k in BASE_ENV_ALLOWLIST + allowlist if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    if sandboxed:  # inside, only these exist; the worker's own HOME is not there
        env.update(PATH=SANDBOX_PATH, HOME=sandbox.MOUNT_POINT, TMPDIR="/tmp")
    env.update(extra)
    env.update({"GO_JOB_ID": job.id, "GO_WORKSPACE": job.workspace, "GO_TAG": job.tag})
    return env


async def run_sandboxed(
    argv: list[str], *, ws: Workspace, name: str, policy: Policy, env: dict[str, str],
    timeout: float, cgroups: Cgroups | None, files: dict[str, bytes],
    result_fd: bool = False, ro: tuple[str, ...] | None = None, init_dir: Path | None = None,
) -> Finished:
    """Run argv under `policy` with `files` in its folder, to its end; kill all it left.

    Everything the job writes back (stdout, stderr, its result) comes through pipes the worker
    reads with a cap, so no job can make the worker store more than the cap on the host."""
    boxed = policy.kind == "bwrap"
    log_path = ws.out(f"{name}.log")
    job_dir = None if boxed else ws.job_dir(name, files)
    cg = cgroups.create(name, policy.limits) if cgroups else None
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
    res_r, res_w = os.pipe() if result_fd else (-1, -1)
    if res_w >= 0:  # runtimes that reopen it by path (/dev/fd/N, deno) as the job's user
        os.fchmod(res_w, 0o622)
    fds = sandbox_fds(files, network=policy.network) if boxed else {}
    try:
        if res_w >= 0:
            argv = [*argv, str(res_w)]
        file_fds = {f: fd for f, fd in fds.items() if f != SECCOMP}
        full = sandbox.command(policy, argv, job_dir=job_dir, init_dir=init_dir,
                               procs_files=cg.procs_files if cg else (), ro=ro,
                               files=file_fds, seccomp_fd=fds.get(SECCOMP))
        proc = await asyncio.create_subprocess_exec(
            *full, cwd=str(job_dir or ws.root), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            pass_fds=tuple(fds.values()) + ((res_w,) if res_w >= 0 else ()),
            start_new_session=True,
        )
    except BaseException:
        if res_r >= 0:
            os.close(res_r)
        raise
    finally:
        for fd in fds.values():
            os.close(fd)
        if res_w >= 0:
            os.close(res_w)
    cap = min(policy.limits.file_size or MAX_OUTPUT_BYTES, MAX_OUTPUT_BYTES)
    sink = _LogSink(log_fd, cap, lambda: _kill(proc, cg))
    assert proc.stdout is not None and proc.stderr is not None
    readers = [sink.copy(proc.stdout, True), sink.copy(proc.stderr, False)]
    result_box: list[bytes] = []
    if res_r >= 0:
        readers.append(_read_capped(res_r, MAX_RESULT_BYTES + 1, result_box))
    reader = asyncio.gather(*readers)
    code: int | None
    try:
        code = await asyncio.wait_for(_exited(proc), timeout)
    except asyncio.TimeoutError:
        code = None
    except asyncio.CancelledError:
        _kill(proc, cg)
        await proc.wait()
        reader.cancel()
        os.close(log_fd)
        close_later(cg)
        raise
    _kill(proc, cg)  # whatever the job left running (bwrap's namespace is already gone)
    await proc.wait()
    try:
        await asyncio.wait_for(reader, 5.0)
    except asyncio.TimeoutError:
        reader.cancel()
    last = sink.last_line()
    os.close(log_fd)
    if code is not None:
        code = code if code >= 0 else 128 - code  # killed by a signal: the shell convention
    # Timed out too (code None): a limit it ran into meanwhile (a fork bomb's) says why.
    limit = sandbox.limit_error(code, policy.limits, cg.hits() if cg else [])
    if sink.over:
        code, limit = code if code is not None else sandbox.EXIT_KILLED, (
            f"the job wrote more than {cap} bytes of output (stdout and stderr together) and was"
            " stopped")
    await _cleanup(cg)
    return Finished(code=code, logs=log_tail(log_path, MAX_LOG_BYTES),
                    result=result_box[0] if result_box else b"", stdout_last=last, limit=limit)


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The job's main process's exit status, as soon as it exits. `proc.wait()` also waits for
    its stdout and stderr to close, which a child the job left running keeps open (under
    `JOB_SANDBOX=none`; bwrap's namespace dies with its main process): the job would stay
    "running" until that child ended. asyncio's child watcher sets `returncode` when it reaps
    the process, before the pipes close; then the run kills what it left and the pipes close."""
    waiting = asyncio.ensure_future(proc.wait())
    delay = 0.001
    try:
        while proc.returncode is None and not waiting.done():
            await asyncio.wait([waiting], timeout=delay)
            delay = min(delay * 2, 0.05)
    finally:
        if not waiting.done():
            waiting.cancel()
    return proc.returncode if proc.returncode is not None else waiting.result()


async def _read_capped(fd: int, cap: int, into: list[bytes]) -> None:
    """Read a pipe to its end or `cap` bytes, whichever first (then close it: the writer gets
    EPIPE instead of the worker buffering whatever it sends)."""
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(fd, "rb"))
    data = b""
    try:
        while len(data) < cap and (chunk := await stream.read(cap - len(data))):
            data += chunk
    finally:
        transport.close()
        into.append(data)


class _LogSink:
    """The job's stdout and stderr, appended to its log in the order they reach the worker (both
    are pipes, so they interleave as written); stdout's last line is kept. Past `cap` bytes the
    job is stopped: copying a flood of output would cost the worker, not the job."""

    def __init__(self, log_fd: int, cap: int, on_over: Callable[[], None]):
        self.log_fd, self.cap, self.written, self.on_over = log_fd, cap, 0, on_over
        self.stdout_tail = b""
        self.over = False

    async def copy(self, stream: asyncio.StreamReader, is_stdout: bool) -> None:
        while chunk := await stream.read(65536):
            if self.over or self.written + len(chunk) > self.cap:
                if not self.over:
                    self.over = True
                    self.on_over()
                # Keep reading (and dropping) to the end: a pipe left unread pauses its
                # transport, and asyncio's `proc.wait()` then never returns (it waits for the
                # pipes to close): the worker hung on a flood, one time in four.
                continue
            os.write(self.log_fd, chunk)
            self.written += len(chunk)
            if is_stdout:
                self.stdout_tail = (self.stdout_tail + chunk)[-65536:]

    def last_line(self) -> str | None:
        text = self.stdout_tail.decode("utf-8", errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else None


def _kill(proc: asyncio.subprocess.Process, cg: RunCgroup | None) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if cg is not None:
        cg.kill_all()


async def _cleanup(cg: RunCgroup | None) -> None:
    if cg is not None:
        await cg.close()


_CLOSING: set[asyncio.Task[None]] = set()


def close_later(cg: RunCgroup | None) -> asyncio.Task[None] | None:
    """`_cleanup` from code that cannot wait (a stop, a cancellation): a task, kept referenced,
    returned for a caller that must later wait until the cgroup is gone."""
    if cg is None:
        return None
    cg.kill_all()
    task = asyncio.get_running_loop().create_task(cg.close())
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)
    return task


def log_tail(path: Path, limit: int) -> str:
    size = path.stat().st_size if path.exists() else 0
    with open(path, "rb") as fh:
        if size > limit:
            fh.seek(size - limit)
        data = fh.read()
    text = data.decode("utf-8", errors="replace")
    return ("[... log truncated ...]\n" + text) if size > limit else text


SECCOMP = "\0seccomp"  # the key of the seccomp program among a run's fds (never a file name)


def sandbox_fds(files: dict[str, bytes], *, network: bool, listen: bool = False
                ) -> dict[str, int]:
    """In-memory files bwrap copies into the sandbox, and the seccomp program: one fd each."""
    out: dict[str, int] = {}
    try:
        for name, data in files.items():
            out[name] = _memfd(name, data)
        try:  # a job on the host network may not listen (it could squat a service's port)
            out[SECCOMP] = _memfd("seccomp", seccomp.program(allow_listen=listen or not network))
        except seccomp.UnsupportedMachine:
            pass
    except BaseException:
        for fd in out.values():
            os.close(fd)
        raise
    return out


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(f"go-{name}")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


async def run_job(job: Job, *, ws: Workspace, policy: Policy, env: dict[str, str],
                  timeout: float, cgroups: Cgroups | None, cache: Path,
                  init_dir: Path | None = None) -> Outcome:
    """Run one job and report its outcome; never raises for a failing script."""
    started = time.monotonic()
    found = languages.registry()
    lang = found.get(job.language)
    if lang is None:
        return Outcome(status="failure", error=found.unavailable(job.language))
    ctx = languages.Context(runtime=found.found[job.language], cache=cache, timeout=timeout,
                            network=policy.network)
    try:
        if job.kind == "dependency":
            return await _resolve(lang, job, ctx, started)
        launch = await lang.launch(job, ctx)
    except languages.PrepareFailed as exc:
        return Outcome(status="failure", error=str(exc), logs=exc.logs,
                       duration_ms=(time.monotonic() - started) * 1000)
    left = max(timeout - (time.monotonic() - started), 0.001)  # preparing counts too
    name = f"job-{job.id[:40]}-{os.urandom(3).hex()}"
    try:
        done = await run_sandboxed(launch.argv, ws=ws, name=name, policy=policy,
                                   env={**env, **launch.env}, timeout=left, cgroups=cgroups,
                                   files=launch.files, result_fd=launch.result == "fd",
                                   init_dir=init_dir, ro=mounts(launch))
        return _outcome(launch, done, timeout, (time.monotonic() - started) * 1000, policy)
    finally:
        ws.clean(name)


async def _resolve(lang: languages.Language, job: Job, ctx: languages.Context, started: float
                   ) -> Outcome:
    """A dependency job: the language locks the script's dependencies; the lock is the result."""
    resolve = getattr(lang, "resolve", None)
    if resolve is None:
        return Outcome(status="failure", error=f"language {job.language!r} has no dependencies"
                                               " to resolve")
    result = await resolve(job, ctx)
    return Outcome(status="success", result=result,
                   duration_ms=(time.monotonic() - started) * 1000)


def _outcome(launch: languages.Launch, done: Finished, timeout: float, elapsed: float,
             policy: Policy) -> Outcome:
    def fail(error: str) -> Outcome:
        return Outcome(status="failure", error=error, logs=done.logs, duration_ms=elapsed)

    if done.code is None:
        return fail(f"timed out after {timeout:g}s" + (f"; {done.limit}" if done.limit else ""))
    if done.limit:
        return fail(done.limit)
    if launch.result == "stdout":
        if done.code != 0:
            return fail(f"exit code {done.code}")
        return Outcome(status="success", result=done.stdout_last, logs=done.logs,
                       duration_ms=elapsed)
    if len(done.result) > MAX_RESULT_BYTES:
        return fail(f"result is more than {MAX_RESULT_BYTES} bytes; the limit is"
                    f" {MAX_RESULT_BYTES}")
    try:
        reply = json.loads(done.result) if done.result else None
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        return fail(f"the job exited with code {done.code} before returning a result")
    if not reply.get("ok"):
        return fail(sandbox.explain(str(reply.get("error") or f"exit code {done.code}"),
                                    policy.limits))
    return Outcome(status="success", result=reply.get("result"), logs=done.logs,
                   duration_ms=elapsed)


def mounts(launch: languages.Launch) -> tuple[str, ...] | None:
    """The folders a launch reads, read-only in the sandbox: its runtime's own folder (where
    /usr and the Python prefix, always mounted, do not hold it) and its `ro` folders; None: the
    default mounts."""
    always = ("/usr/", *(p.rstrip("/") + "/" for p in sandbox.runtime_paths()))
    wanted = [os.path.dirname(os.path.realpath(launch.argv[0]))] if "/" in launch.argv[0] else []
    extra = [p for p in (*wanted, *launch.ro) if not (p.rstrip("/") + "/").startswith(always)]
    return (*sandbox.runtime_paths(), *dict.fromkeys(extra)) if extra else None
