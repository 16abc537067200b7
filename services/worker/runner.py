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
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Literal

import msgspec

from services.worker import sandbox
from services.worker.sandbox import Cgroups, Policy, RunCgroup
from shared.errors import InvalidInput
from shared.jobs import Job

MAX_LOG_BYTES = 256 * 1024
MAX_RESULT_BYTES = 512 * 1024
# Variables a job may see from the worker's own environment; everything else (NATS credentials,
# tokens) stays out of user code. Extend with WORKER_ENV_ALLOWLIST=A,B.
BASE_ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
EXECUTORS = ("bash", "python3")
SANDBOX_PATH = "/init/bin:/usr/local/bin:/usr/bin:/bin"

# Runs the user's module; writes {"ok", "result"|"error"} as JSON to the inherited fd argv[1].
_PY_WRAPPER = r'''
import importlib.util, json, os, sys, traceback
out = os.fdopen(int(sys.argv[1]), "w")
spec = importlib.util.spec_from_file_location("main_script", "script.py")
try:
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open("args.json") as fh:
        args = json.load(fh)
    if not hasattr(mod, "main"):
        raise RuntimeError("the script defines no main() function")
    result = mod.main(**args)
    text = json.dumps({"ok": True, "result": result}, default=str)
except BaseException as exc:
    traceback.print_exc()
    text = json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
out.write(text)
out.close()
sys.exit(0 if text.startswith('{"ok": true') else 1)
'''
# bash gets its positional arguments from a NUL-separated file in its folder, not from argv.
_BASH_WRAPPER = 'mapfile -d "" -t __go_args < .args; set -- "${__go_args[@]}"; unset __go_args; . ./script.sh'
# An init script's sandbox outlives the script (daemons it started stay), until the worker stops
# or the script changes: report the script's status on fd $1, then keep the namespace alive.
_INIT_WRAPPER = 'bash ./init.sh; echo $? >&"$0"; exec sleep infinity'


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


class Workspace:
    """A worker's folders: `jobs/<run>` (a job's own, the only thing it sees) and `out/<run>`
    (the worker's log and result files of that run, never visible to it)."""

    def __init__(self, root: Path, uid: int | None):
        self.root = root
        self.uid = uid
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = root.lstat()
        if root.is_symlink() or info.st_uid != os.geteuid():
            raise InvalidInput(f"WORKER_DIR {root} is a symlink or belongs to another user;"
                               " the worker keeps its jobs only in a folder of its own",
                               field="WORKER_DIR")
        for d in (root, root / "jobs", root / "out"):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)

    def job_dir(self, name: str) -> Path:
        d = self.root / "jobs" / name
        d.mkdir()
        if self.uid is not None:
            os.chown(d, self.uid, self.uid)
        # Searchable for bwrap's own chdir (it has dropped DAC override by then); the folder is
        # under the worker's 0700 root, so no other host user reaches it anyway.
        os.chmod(d, 0o711)
        return d

    def write(self, job_dir: Path, name: str, data: bytes) -> None:
        path = job_dir / name
        path.write_bytes(data)
        if self.uid is not None:
            os.chown(path, self.uid, self.uid)

    def out(self, name: str) -> Path:
        return self.root / "out" / name

    def clean(self, name: str) -> None:
        shutil.rmtree(self.root / "jobs" / name, ignore_errors=True)
        for suffix in (".log", ".result"):
            try:
                (self.root / "out" / f"{name}{suffix}").unlink()
            except FileNotFoundError:
                pass


async def run_sandboxed(
    argv: list[str], *, ws: Workspace, name: str, policy: Policy, env: dict[str, str],
    timeout: float, cgroups: Cgroups | None, result_fd: bool = False,
    last_stdout_line: bool = False, ro: tuple[str, ...] | None = None,
    init_dir: Path | None = None,
) -> Finished:
    """Run argv in `name`'s folder under `policy` to its end; kill everything it left."""
    job_dir = ws.root / "jobs" / name
    log_path, result_path = ws.out(f"{name}.log"), ws.out(f"{name}.result")
    cg = cgroups.create(name, policy.limits) if cgroups else None
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
    res_fd = os.open(result_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) if result_fd else -1
    try:
        if res_fd >= 0:
            argv = [*argv, str(res_fd)]
        full = sandbox.command(policy, argv, job_dir=job_dir, init_dir=init_dir,
                               procs_files=cg.procs_files if cg else (), ro=ro)
        proc = await asyncio.create_subprocess_exec(
            *full, cwd=str(job_dir), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if last_stdout_line else log_fd,
            stderr=asyncio.subprocess.PIPE if last_stdout_line else log_fd,
            pass_fds=(res_fd,) if res_fd >= 0 else (), start_new_session=True,
        )
    finally:
        if res_fd >= 0:
            os.close(res_fd)
    sink = _LogSink(log_fd, policy.limits.file_size)
    reader = (asyncio.gather(sink.copy(proc.stdout, True), sink.copy(proc.stderr, False))
              if last_stdout_line and proc.stdout is not None and proc.stderr is not None
              else None)
    code: int | None
    try:
        code = await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        code = None
    except asyncio.CancelledError:
        _kill(proc, cg)
        await proc.wait()
        if reader:
            reader.cancel()
        os.close(log_fd)
        _cleanup(cg)
        raise
    _kill(proc, cg)  # whatever the job left running (bwrap's namespace is already gone)
    await proc.wait()
    if reader is not None:
        try:
            await asyncio.wait_for(reader, 5.0)
        except asyncio.TimeoutError:
            pass
    last = sink.last_line()
    os.close(log_fd)
    limit = None
    if code is not None:
        code = code if code >= 0 else 128 - code  # killed by a signal: the shell convention
        limit = sandbox.limit_error(code, policy.limits, cg.hits() if cg else [])
    _cleanup(cg)
    result = b""
    if result_fd:
        with open(result_path, "rb") as fh:
            result = fh.read(MAX_RESULT_BYTES + 1)
    return Finished(code=code, logs=_tail(log_path, MAX_LOG_BYTES), result=result,
                    stdout_last=last, limit=limit)


class _LogSink:
    """The job's stdout and stderr, appended to its log in the order they reach the worker (both
    are pipes, so they interleave as written), up to `cap` bytes; stdout's last line is kept."""

    def __init__(self, log_fd: int, cap: int | None):
        self.log_fd, self.cap, self.written = log_fd, cap or 1 << 62, 0
        self.stdout_tail = b""

    async def copy(self, stream: asyncio.StreamReader, is_stdout: bool) -> None:
        while chunk := await stream.read(65536):
            if self.written < self.cap:
                part = chunk[: self.cap - self.written]
                os.write(self.log_fd, part)
                self.written += len(part)
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


def _cleanup(cg: RunCgroup | None) -> None:
    if cg is not None:
        cg.kill_all()
        cg.remove()


def _tail(path: Path, limit: int) -> str:
    size = path.stat().st_size if path.exists() else 0
    with open(path, "rb") as fh:
        if size > limit:
            fh.seek(size - limit)
        data = fh.read()
    text = data.decode("utf-8", errors="replace")
    return ("[... log truncated ...]\n" + text) if size > limit else text


async def run_job(job: Job, *, ws: Workspace, policy: Policy, env: dict[str, str],
                  timeout: float, cgroups: Cgroups | None, init_dir: Path | None = None
                  ) -> Outcome:
    """Run one job and report its outcome; never raises for a failing script."""
    started = time.monotonic()
    if job.language not in EXECUTORS:
        return Outcome(status="failure",
                       error=f"no executor for language {job.language!r} on this worker "
                             f"(it runs {', '.join(EXECUTORS)})")
    name = f"job-{job.id[:40]}-{os.urandom(3).hex()}"
    job_dir = ws.job_dir(name)
    try:
        if job.language == "bash":
            ws.write(job_dir, "script.sh", job.code.encode())
            ws.write(job_dir, ".args", b"".join(_arg_text(v).encode().replace(b"\0", b"") + b"\0"
                                                for v in job.args.values()))
            argv = ["bash", "-c", _BASH_WRAPPER, "script.sh"]
        else:
            ws.write(job_dir, "script.py", job.code.encode())
            ws.write(job_dir, "args.json", json.dumps(job.args).encode())
            argv = [sys.executable, "-c", _PY_WRAPPER]
        done = await run_sandboxed(argv, ws=ws, name=name, policy=policy, env=env,
                                   timeout=timeout, cgroups=cgroups,
                                   result_fd=job.language == "python3",
                                   last_stdout_line=job.language == "bash",
                                   init_dir=init_dir)
        return _outcome(job, done, timeout, (time.monotonic() - started) * 1000, policy)
    finally:
        ws.clean(name)


def _outcome(job: Job, done: Finished, timeout: float, elapsed: float, policy: Policy) -> Outcome:
    def fail(error: str) -> Outcome:
        return Outcome(status="failure", error=error, logs=done.logs, duration_ms=elapsed)

    if done.code is None:
        return fail(f"timed out after {timeout:g}s" + (f"; {done.limit}" if done.limit else ""))
    if done.limit:
        return fail(done.limit)
    if job.language == "bash":
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


def _arg_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class InitSandbox:
    """A group's init script, run in a sandbox that stays up (with any daemon the script
    started) until the worker stops or the script changes. Its folder, `/init` inside, is the
    one place it can install things: every job sees it read-only, with /init/bin on PATH."""

    def __init__(self, ws: Workspace, policy: Policy, cgroups: Cgroups | None):
        self.ws, self.policy, self.cgroups = ws, policy, cgroups
        self.proc: asyncio.subprocess.Process | None = None
        self.cg: RunCgroup | None = None
        self.dir = ws.root / "init"

    async def run(self, script: str, env: dict[str, str], timeout: float) -> tuple[bool, str]:
        """Run the script; (ok, log tail). Replaces an earlier init sandbox."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir()
        if self.ws.uid is not None:
            os.chown(self.dir, self.ws.uid, self.ws.uid)
        os.chmod(self.dir, 0o755)  # jobs (another sandbox, the same uid) read what it installed
        self.ws.write(self.dir, "init.sh", script.encode())
        log_path = self.ws.out("init.log")
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        status_r, status_w = os.pipe()
        self.cg = self.cgroups.create("init", self.policy.limits) if self.cgroups else None
        try:
            full = sandbox.command(self.policy, ["bash", "-c", _INIT_WRAPPER, str(status_w)],
                                   job_dir=self.dir, cpu_limit=False,
                                   mount_at=sandbox.INIT_POINT,
                                   procs_files=self.cg.procs_files if self.cg else ())
            self.proc = await asyncio.create_subprocess_exec(
                *full, cwd=str(self.dir), env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd, stderr=log_fd, pass_fds=(status_w,), start_new_session=True)
        finally:
            os.close(status_w)
            os.close(log_fd)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(status_r, "rb"))
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except asyncio.TimeoutError:
            self.stop()
            return False, f"init script timed out after {timeout:g}s\n{_tail(log_path, 16384)}"
        except asyncio.CancelledError:
            self.stop()
            raise
        finally:
            transport.close()
        logs = _tail(log_path, 16 * 1024)
        if not line.strip():  # the sandbox died before the script could report
            self.stop()
            return False, f"init script could not run (sandbox exited)\n{logs}"
        code = int(line)
        if code != 0:
            self.stop()
            limit = sandbox.limit_error(code, self.policy.limits, [])
            return False, f"init script exited with {code}{f' ({limit})' if limit else ''}\n{logs}"
        return True, logs

    def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc = None
        _cleanup(self.cg)
        self.cg = None
