"""Warm runtimes for dedicated workers: one long-lived process per script version.

The process (a language's server: `warm_launch` in services/worker/languages/) loads the script
once, then answers one JSON line per job on a pipe, calling `main` each time: no runtime start
and no import per job. The protocol, the same for every language: the server gets its policy
kind (`bwrap` or `none`) and the number of its answer fd as its last two arguments; it writes
`{"ready": true|false, "error"?, "logs"}` once loaded, then reads `{"id", "args", "env"}` lines
on stdin and answers each with `{"id", "ok", "result"|"error", "logs", "ending"?}` (`ending`:
it exits after this answer). A new version of the script (a different launch) gets a new
process, and the old one is stopped: redeploying a dedicated script takes effect at once (the
reference platform keeps the stale process, issue #8638).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec

from services.worker import sandbox
from services.worker.languages import Launch
from services.worker.runner import (MAX_LOG_BYTES, SECCOMP, Outcome, close_later, mounts,
                                    sandbox_fds)
from services.worker.cgroups import Cgroups, RunCgroup
from services.worker.sandbox import Policy
from services.worker.workspace import Workspace



_ENCODER = msgspec.json.Encoder()  # the reply is read with json.loads: the child may write NaN


class WarmProcess:
    """One warm process serving one script version, one job at a time."""

    def __init__(self, launch: Launch, ws: Workspace, env: dict[str, str], policy: Policy,
                 cgroups: Cgroups | None, init_dir: Path | None):
        self.launch = launch
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
        files = self.launch.files
        boxed = self.policy.kind == "bwrap"
        job_dir = None if boxed else self.ws.job_dir(self.name, files)
        read_fd, write_fd = os.pipe()
        os.fchmod(write_fd, 0o622)  # servers that reopen it by path (/dev/fd/N) as the job's uid
        # Limits cover the runtime as a whole; CPU time is not capped per process here (it would
        # end a long-lived runtime), each job's timeout bounds it instead.
        self.cg = self.cgroups.create(self.name, self.policy.limits) if self.cgroups else None
        fds = sandbox_fds(files, network=self.policy.network) if boxed else {}
        argv = [*self.launch.argv, self.policy.kind, str(write_fd)]
        full = sandbox.command(self.policy, argv, job_dir=job_dir, cpu_limit=False,
                               ro=mounts(self.launch),
                               init_dir=self.init_dir,
                               procs_files=self.cg.procs_files if self.cg else (),
                               files={f: fd for f, fd in fds.items() if f != SECCOMP},
                               seccomp_fd=fds.get(SECCOMP))
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *full, cwd=str(job_dir or self.ws.root), env={**self.env, **self.launch.env},
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

    async def run(self, tag: str, launch: Launch, args: dict[str, Any], env: dict[str, str],
                  timeout: float, base_env: dict[str, str], policy: Policy,
                  init_dir: Path | None = None) -> Outcome:
        """Run one job; `env` is what changes per job, `base_env` the process's environment.
        A runtime started with another launch (new code, a new lock) or under another policy
        (a hot-reloaded sandbox or limit) is replaced."""
        proc = self.procs.get(tag)
        if proc is not None and (proc.launch != launch or not proc.alive()
                                 or proc.policy != policy):
            proc.stop()  # redeployed, crashed or reconfigured: the next job gets a fresh one
            proc = None
        if proc is None:
            proc = WarmProcess(launch, self.ws, {**base_env, **env}, policy, self.cgroups,
                               init_dir)
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
