"""A group's init script in a sandbox that lasts: daemons it starts stay up, inside it, until the
script or the group's isolation changes or the worker stops.

Each run has a cgroup of its own (`init-<random>`): the one of the run it replaces is still being
emptied and removed in the background when the next is created, and a shared name let that
removal take the new run's cgroup away (its launcher failed) or hand the new run the old one's
limits. The next run also waits until the old cgroup is gone (`close`), so no daemon of the old
sandbox, network or limits is alive when the script runs again (a port it held is free)."""

from __future__ import annotations

import asyncio
import os
import signal

from services.worker import sandbox
from services.worker.cgroups import Cgroups, RunCgroup
from services.worker.runner import SECCOMP, close_later, log_tail, sandbox_fds
from services.worker.sandbox import Policy
from services.worker.workspace import Workspace, remove_tree

# An init script's sandbox outlives the script (daemons it started stay), until the worker stops
# or the script changes: report the script's status on fd $0, then keep the namespace alive.
_INIT_WRAPPER = 'bash ./init.sh; echo $? >&"$0"; exec sleep infinity'


class InitSandbox:
    """A group's init script, run in a sandbox that stays up (with any daemon the script
    started) until the worker stops or the script changes. Its folder, `/init` inside, is the
    one place it can install things: every job sees it read-only, with /init/bin on PATH."""

    def __init__(self, ws: Workspace, policy: Policy, cgroups: Cgroups | None):
        self.ws, self.policy, self.cgroups = ws, policy, cgroups
        self.proc: asyncio.subprocess.Process | None = None
        self.cg: RunCgroup | None = None
        self._closing: asyncio.Task[None] | None = None  # the stopped run's cgroup, going away
        self.dir = ws.root / "init"

    async def run(self, script: str, env: dict[str, str], timeout: float) -> tuple[bool, str]:
        """Run the script; (ok, log tail). Replaces an earlier init sandbox."""
        await self.close()
        remove_tree(self.dir)
        self.dir.mkdir()
        if self.ws.uid is not None:
            os.chown(self.dir, self.ws.uid, self.ws.uid)
        os.chmod(self.dir, 0o755)  # jobs (another sandbox, the same uid) read what it installed
        (self.dir / "init.sh").write_bytes(script.encode())
        if self.ws.uid is not None:
            os.chown(self.dir / "init.sh", self.ws.uid, self.ws.uid)
        log_path = self.ws.out("init.log")
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.cg = (self.cgroups.create(f"init-{os.urandom(3).hex()}", self.policy.limits)
                       if self.cgroups else None)
        except OSError as exc:  # a failed run, retried like any other
            os.close(log_fd)
            return False, f"init script could not run: its cgroup could not be created ({exc})"
        status_r, status_w = os.pipe()
        try:
            # An init script may listen (a daemon serving the group's jobs is its documented use).
            fds = (sandbox_fds({}, network=self.policy.network, listen=True)
                   if self.policy.kind == "bwrap" else {})
            full = sandbox.command(self.policy, ["bash", "-c", _INIT_WRAPPER, str(status_w)],
                                   job_dir=self.dir, cpu_limit=False,
                                   mount_at=sandbox.INIT_POINT, seccomp_fd=fds.get(SECCOMP),
                                   procs_files=self.cg.procs_files if self.cg else ())
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *full, cwd=str(self.dir), env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_fd, stderr=log_fd, pass_fds=(status_w, *fds.values()),
                    start_new_session=True)
            finally:
                for fd in fds.values():
                    os.close(fd)
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
            return False, f"init script timed out after {timeout:g}s\n{log_tail(log_path, 16384)}"
        except asyncio.CancelledError:
            self.stop()
            raise
        finally:
            transport.close()
        logs = log_tail(log_path, 16 * 1024)
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
        if (closing := close_later(self.cg)) is not None:
            self._closing = closing
        self.cg = None

    async def close(self) -> None:
        """`stop`, then wait until the run's cgroup is empty and removed: what a next run
        (another sandbox, network or limits) must start after. Cancelling the wait leaves the
        removal going."""
        self.stop()
        if self._closing is not None:
            await asyncio.shield(self._closing)
