"""Run job code and init scripts in subprocesses: bash and python3, with timeouts and a clean env.

Output goes to a file, not a pipe, and we wait for the process itself: a script that leaves a
background process running (a daemon started by an init script) still counts as finished.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import msgspec

from shared.jobs import Job

MAX_LOG_BYTES = 256 * 1024
MAX_RESULT_BYTES = 512 * 1024
# Variables a job may see from the worker's own environment; everything else (NATS credentials,
# tokens) stays out of user code. Extend with WORKER_ENV_ALLOWLIST=A,B.
BASE_ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
EXECUTORS = ("bash", "python3")

_PY_WRAPPER = r'''
import importlib.util, json, sys, traceback
spec = importlib.util.spec_from_file_location("main_script", "script.py")
try:
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open("args.json") as fh:
        args = json.load(fh)
    if not hasattr(mod, "main"):
        raise RuntimeError("the script defines no main() function")
    result = mod.main(**args)
    with open("result.json", "w") as fh:
        json.dump(result, fh, default=str)
except BaseException as exc:
    traceback.print_exc()
    with open("error.txt", "w") as fh:
        fh.write(f"{type(exc).__name__}: {exc}")
    sys.exit(1)
'''


class Outcome(msgspec.Struct, kw_only=True):
    """What running a job produced."""

    status: Literal["success", "failure", "cancelled"]
    result: Any = None
    error: str | None = None
    logs: str = ""
    duration_ms: float = 0.0


def job_env(job: Job, extra: dict[str, str], allowlist: tuple[str, ...]) -> dict[str, str]:
    env = {k: os.environ[k] for k in BASE_ENV_ALLOWLIST + allowlist if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(extra)
    env.update({"GO_JOB_ID": job.id, "GO_WORKSPACE": job.workspace, "GO_TAG": job.tag})
    return env


def _tail(path: Path, limit: int) -> str:
    size = path.stat().st_size if path.exists() else 0
    with open(path, "rb") as fh:
        if size > limit:
            fh.seek(size - limit)
        data = fh.read()
    text = data.decode("utf-8", errors="replace")
    return ("[... log truncated ...]\n" + text) if size > limit else text


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _run_process(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float, *, kill_leftovers: bool
) -> tuple[int | None, Path]:
    """Run argv with output to `cwd/output.log`; returns (exit code or None on timeout, log path)."""
    log_path = cwd / "output.log"
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=str(cwd), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
    try:
        code: int | None = await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        _kill_group(proc)
        await proc.wait()
        code = None
    except asyncio.CancelledError:
        _kill_group(proc)
        await proc.wait()
        raise
    if kill_leftovers:
        _kill_group(proc)
    return code, log_path


async def run_job(
    job: Job, *, work_root: Path, timeout: float, extra_env: dict[str, str] | None = None,
    allowlist: tuple[str, ...] = (),
) -> Outcome:
    """Run one job and report its outcome; never raises for a failing script."""
    started = time.monotonic()
    if job.language not in EXECUTORS:
        return Outcome(status="failure",
                       error=f"no executor for language {job.language!r} on this worker "
                             f"(it runs {', '.join(EXECUTORS)})")
    work_root.mkdir(parents=True, exist_ok=True)
    cwd = Path(tempfile.mkdtemp(prefix=f"job-{job.id[:16]}-", dir=work_root))
    env = job_env(job, extra_env or {}, allowlist)
    try:
        if job.language == "bash":
            (cwd / "script.sh").write_text(job.code)
            argv = ["bash", "script.sh", *(_arg_text(v) for v in job.args.values())]
        else:
            (cwd / "script.py").write_text(job.code)
            (cwd / "args.json").write_text(json.dumps(job.args))
            argv = [sys.executable, "-c", _PY_WRAPPER]
        code, log_path = await _run_process(argv, cwd, env, timeout, kill_leftovers=True)
        logs = _tail(log_path, MAX_LOG_BYTES)
        elapsed = (time.monotonic() - started) * 1000
        if code is None:
            return Outcome(status="failure", error=f"timed out after {timeout:g}s", logs=logs,
                           duration_ms=elapsed)
        if code != 0:
            err_file = cwd / "error.txt"
            error = err_file.read_text() if err_file.exists() else f"exit code {code}"
            return Outcome(status="failure", error=error, logs=logs, duration_ms=elapsed)
        return _success(job, cwd, logs, elapsed)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)


def _success(job: Job, cwd: Path, logs: str, elapsed: float) -> Outcome:
    if job.language == "bash":
        lines = [line for line in logs.splitlines() if line.strip()]
        return Outcome(status="success", result=lines[-1] if lines else None, logs=logs,
                       duration_ms=elapsed)
    raw = (cwd / "result.json").read_bytes()
    if len(raw) > MAX_RESULT_BYTES:
        return Outcome(status="failure", logs=logs, duration_ms=elapsed,
                       error=f"result is {len(raw)} bytes; the limit is {MAX_RESULT_BYTES}")
    return Outcome(status="success", result=json.loads(raw), logs=logs, duration_ms=elapsed)


def _arg_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


async def run_init_script(
    script: str, *, work_dir: Path, timeout: float, env: dict[str, str]
) -> tuple[bool, str]:
    """Run a group's init script; returns (ok, log tail). Background processes it starts survive."""
    work_dir.mkdir(parents=True, exist_ok=True)
    cwd = Path(tempfile.mkdtemp(prefix="init-", dir=work_dir))
    try:
        (cwd / "init.sh").write_text(script)
        code, log_path = await _run_process(["bash", "init.sh"], cwd, env, timeout,
                                            kill_leftovers=False)
        logs = _tail(log_path, 16 * 1024)
        if code is None:
            return False, f"init script timed out after {timeout:g}s\n{logs}"
        if code != 0:
            return False, f"init script exited with {code}\n{logs}"
        return True, logs
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
