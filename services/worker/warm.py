"""Warm runtimes for dedicated workers: one long-lived Python process per script version.

The process imports the script once, then answers one JSON line per job on a pipe, calling
`main(**args)` each time: no interpreter start and no import per job. A new version of the script
(different code) gets a new process, and the old one is stopped: redeploying a dedicated script
takes effect at once (the reference platform keeps the stale process, issue #8638).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from services.worker import sandbox
from services.worker.runner import MAX_LOG_BYTES, SECCOMP, Outcome, close_later, sandbox_fds
from services.worker.cgroups import Cgroups, RunCgroup
from services.worker.sandbox import Policy
from services.worker.workspace import Workspace

_SERVER = r'''
import contextlib, importlib.util, io, json, os, signal, sys, threading, traceback
out = os.fdopen(int(sys.argv[3]), "w", buffering=1)
own_namespace = sys.argv[2] == "bwrap"
MAX_LOGS, MAX_REPLY = 256 * 1024, 8 * 1024 * 1024

def kill_leftovers():
    # In its own PID namespace every process but bwrap's init (1) and this one is something a
    # job started: end it with the job, as a cold job's would be (and reap our own children).
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (1, os.getpid()):
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
    reap()

def reap():
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass

spec = importlib.util.spec_from_file_location("main_script", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
buf = io.StringIO()
try:
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        spec.loader.exec_module(mod)
    if not hasattr(mod, "main"):
        raise RuntimeError("the script defines no main() function")
    out.write(json.dumps({"ready": True, "logs": buf.getvalue()[-MAX_LOGS:]}) + "\n")
    base_threads = threading.active_count()
except BaseException as exc:
    out.write(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}",
                          "logs": (buf.getvalue() + traceback.format_exc())[-MAX_LOGS:]}) + "\n")
    sys.exit(1)
base_env = dict(os.environ)
for line in sys.stdin:
    req = json.loads(line)
    os.environ.clear()  # what one job set in its environment is not the next job's
    os.environ.update(base_env)
    os.environ.update(req.get("env", {}))
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            result = mod.main(**req["args"])
        logs = buf.getvalue()[-MAX_LOGS:]
        try:
            text = json.dumps({"id": req["id"], "ok": True, "result": result, "logs": logs},
                              default=str)
        except ValueError as exc:
            text = json.dumps({"id": req["id"], "ok": False,
                               "error": f"result is not JSON: {exc}", "logs": logs})
    except BaseException as exc:
        text = json.dumps({"id": req["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}",
                           "logs": (buf.getvalue() + traceback.format_exc())[-MAX_LOGS:]})
    if len(text) > MAX_REPLY:
        text = json.dumps({"id": req["id"], "ok": False, "error": f"the result is {len(text)}"
                           f" bytes of JSON; the limit is {MAX_REPLY}",
                           "logs": buf.getvalue()[-65536:]})
    if own_namespace:
        kill_leftovers()
    # A thread the job left would run on after it (and see later jobs): end this runtime instead.
    ending = threading.active_count() > base_threads
    if ending:
        text = text[:-1] + ', "ending": true}'
    out.write(text + "\n")
    if ending:
        out.flush()
        os._exit(0)
'''


_ENCODER = msgspec.json.Encoder()  # the reply is read with json.loads: the child may write NaN


class WarmProcess:
    """One warm Python process serving one script version, one job at a time."""

    def __init__(self, code: str, ws: Workspace, env: dict[str, str], policy: Policy,
                 cgroups: Cgroups | None, init_dir: Path | None,
                 python: tuple[str, tuple[str, ...]] = (sys.executable, ())):
        self.code = code
        self.python = python  # the interpreter (the script's environment's) and its mounts
        self.ws = ws
        self.env = env
        self.policy = policy
        self.cgroups = cgroups
        self.init_dir = init_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.StreamReader | None = None
        self.lock = asyncio.Lock()
        self.name = f"warm-{os.urandom(6).hex()}"
        self.cg: RunCgroup | None = None
        self.retired = False  # it said it ends after this job (a job left a thread running)
        self.tasks = 0

    async def start(self) -> dict[str, Any]:
        files = {"script.py": self.code.encode()}
        boxed = self.policy.kind == "bwrap"
        job_dir = None if boxed else self.ws.job_dir(self.name, files)
        read_fd, write_fd = os.pipe()
        # Limits cover the runtime as a whole; CPU time is not capped per process here (it would
        # end a long-lived runtime), each job's timeout bounds it instead.
        self.cg = self.cgroups.create(self.name, self.policy.limits) if self.cgroups else None
        fds = sandbox_fds(files, network=self.policy.network) if boxed else {}
        argv = [self.python[0], "-c", _SERVER, "script.py", self.policy.kind, str(write_fd)]
        ro = (*sandbox.runtime_paths(), *self.python[1]) if self.python[1] else None
        full = sandbox.command(self.policy, argv, job_dir=job_dir, cpu_limit=False, ro=ro,
                               init_dir=self.init_dir,
                               procs_files=self.cg.procs_files if self.cg else (),
                               files={f: fd for f, fd in fds.items() if f != SECCOMP},
                               seccomp_fd=fds.get(SECCOMP))
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *full, cwd=str(job_dir or self.ws.root), env=self.env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, pass_fds=(write_fd, *fds.values()),
                start_new_session=True,
            )
        finally:
            for fd in fds.values():
                os.close(fd)
        os.close(write_fd)
        self.reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.reader),
                                     os.fdopen(read_fd, "rb"))
        try:
            hello = await self._read(timeout=60)
        except (EOFError, asyncio.TimeoutError) as exc:
            hello = {"ready": False, "error": f"the warm runtime did not start: {exc or 'exit'}"}
        if not hello.get("ready"):
            self.stop()
        elif self.cg is not None:
            self.tasks = self.cg.task_count()  # the runtime at rest: bwrap, its init, the server
        return hello

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.reader is not None
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise EOFError("warm process exited")
        return json.loads(line)  # type: ignore[no-any-return]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and not self.retired

    async def call(self, args: dict[str, Any], env: dict[str, str], timeout: float) -> Outcome:
        assert self.proc is not None and self.proc.stdin is not None
        started = time.monotonic()
        # A fresh id a job cannot guess: an answer that does not carry it (one a job wrote
        # itself into the pipe, or one left over) is never taken for this job's.
        nonce = os.urandom(12).hex()
        self.proc.stdin.write(_ENCODER.encode({"id": nonce, "args": args, "env": env}) + b"\n")
        await self.proc.stdin.drain()
        try:
            reply = await self._read(timeout)
        except asyncio.TimeoutError:
            self.stop()
            return Outcome(status="failure", error=f"timed out after {timeout:g}s",
                           duration_ms=(time.monotonic() - started) * 1000)
        except (EOFError, ValueError, asyncio.LimitOverrunError) as exc:
            # Gone, or an answer we cannot read: the pipe can no longer be trusted to line up
            # with the next job, so this runtime ends here.
            self.stop()
            why = ("the warm process exited during the job" if isinstance(exc, EOFError)
                   else f"the warm process answered something unreadable ({type(exc).__name__})")
            return Outcome(status="failure", error=why,
                           duration_ms=(time.monotonic() - started) * 1000)
        if reply.get("id") != nonce:
            self.stop()
            return Outcome(status="failure", error="the warm runtime answered out of turn (the job"
                           " wrote into its answer pipe); the runtime was stopped",
                           duration_ms=(time.monotonic() - started) * 1000)
        # Counted from outside, where a job cannot patch the count: anything it left running
        # (a thread, a process) ends the runtime, so it cannot see the next job.
        if reply.get("ending") or (self.cg is not None and self.cg.task_count() > self.tasks):
            self.retired = True
        elapsed = (time.monotonic() - started) * 1000
        logs = str(reply.get("logs", ""))[-MAX_LOG_BYTES:]
        if reply.get("ok"):
            return Outcome(status="success", result=reply.get("result"), logs=logs, duration_ms=elapsed)
        return Outcome(status="failure", error=reply.get("error"), logs=logs, duration_ms=elapsed)

    def stop(self) -> None:
        """End the runtime and everything it started; never raises (it runs on every path)."""
        self.retired = True
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        close_later(self.cg)
        self.cg = None
        self.ws.clean(self.name)


class WarmPool:
    """Warm processes by dedicated tag (one tag = one script); new code replaces the process."""

    def __init__(self, ws: Workspace, cgroups: Cgroups | None):
        self.ws = ws
        self.cgroups = cgroups
        self.procs: dict[str, WarmProcess] = {}
        self.starts = 0

    async def run(self, tag: str, code: str, args: dict[str, Any], env: dict[str, str],
                  timeout: float, base_env: dict[str, str], policy: Policy,
                  init_dir: Path | None = None,
                  python: tuple[str, tuple[str, ...]] = (sys.executable, ())) -> Outcome:
        """Run one job; `env` is what changes per job, `base_env` the process's environment.
        A runtime started under another policy (a hot-reloaded sandbox or limit) or with
        another interpreter (a new lock) is replaced."""
        proc = self.procs.get(tag)
        if proc is not None and (proc.code != code or not proc.alive() or proc.policy != policy
                                 or proc.python != python):
            proc.stop()  # redeployed, crashed or reconfigured: the next job gets a fresh one
            proc = None
        if proc is None:
            proc = WarmProcess(code, self.ws, {**base_env, **env}, policy, self.cgroups,
                               init_dir, python)
            self.starts += 1
            hello = await proc.start()
            if not hello.get("ready"):
                return Outcome(status="failure", error=hello.get("error"), logs=hello.get("logs", ""))
            self.procs[tag] = proc
        async with proc.lock:
            try:
                return await proc.call(args, env, timeout)
            except asyncio.CancelledError:
                proc.stop()  # cancelled mid-call: its state is unknown, start afresh next time
                raise

    def keep_only(self, tags: set[str]) -> list[str]:
        """Stop warm processes of tags the worker is no longer dedicated to."""
        stale = [t for t in self.procs if t not in tags]
        for t in stale:
            self.procs.pop(t).stop()
        return stale

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        self.procs.clear()
