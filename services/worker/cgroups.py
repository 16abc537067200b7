"""Cgroups of a worker's runs: the whole job's memory and process count, and killing all of it.

One cgroup per run (v1 `memory` and `pids` controllers, or v2) under a parent named for the
worker process, so a SIGKILLed worker's leftovers are found and removed by the next worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from services.worker.sandbox import size_text
from shared.events import JobLimits


class Cgroups:
    """Where this worker may create one cgroup per run (v1 memory+pids, or v2), if anywhere."""

    def __init__(self, dirs: dict[str, Path], v2: bool):
        self.dirs = dirs  # controller -> this worker's parent directory
        self.v2 = v2

    @classmethod
    def detect(cls) -> tuple[Cgroups | None, str | None]:
        """The worker's cgroup parents, or (None, why not): then limits are per process only.
        Named for this process (pid and start time), so what a SIGKILLed worker left is found
        and removed by the next worker to start there."""
        own = _own_cgroups()
        name = f"getoperate-{_process_key(os.getpid())}"
        try:
            root = Path("/sys/fs/cgroup")
            if (root / "cgroup.controllers").exists():  # v2, unified
                base = root / own.get("", "/").lstrip("/") / name
                _remove_stale(base.parent)
                base.mkdir(parents=True, exist_ok=True)
                (base / "cgroup.subtree_control").write_text("+memory +pids")
                return cls({"": base}, True), None
            dirs = {}
            for ctl in ("memory", "pids"):
                mount = root / ctl
                if not (mount / "cgroup.procs").exists():
                    return None, f"the {ctl} cgroup controller is not mounted"
                d = mount / own.get(ctl, "/").lstrip("/") / name
                _remove_stale(d.parent)
                d.mkdir(parents=True, exist_ok=True)
                dirs[ctl] = d
            return cls(dirs, False), None
        except OSError as exc:
            return None, f"cgroups are not writable here ({exc.strerror or exc})"

    def create(self, name: str, limits: JobLimits) -> RunCgroup:
        """A fresh cgroup for one run, with the memory and process limits written."""
        made: list[Path] = []
        try:
            for ctl, parent in self.dirs.items():
                d = parent / name
                d.mkdir(exist_ok=True)
                made.append(d)
                if self.v2:
                    if limits.memory:
                        (d / "memory.max").write_text(str(limits.memory))
                        _try_write(d / "memory.swap.max", "0")
                    if limits.processes:
                        (d / "pids.max").write_text(str(limits.processes))
                elif ctl == "memory" and limits.memory:
                    (d / "memory.limit_in_bytes").write_text(str(limits.memory))
                    _try_write(d / "memory.memsw.limit_in_bytes", str(limits.memory))
                elif ctl == "pids" and limits.processes:
                    (d / "pids.max").write_text(str(limits.processes))
        except OSError:
            for d in made:
                _rmdir(d)
            raise
        return RunCgroup(made, self.v2, limits)

    def remove(self) -> None:
        """The worker is stopping: end whatever is left in its runs' cgroups, remove them all."""
        for d in self.dirs.values():
            for child in (c for c in d.iterdir() if c.is_dir()) if d.is_dir() else ():
                RunCgroup([child], self.v2, JobLimits()).remove()
                _rmdir(child)
            _rmdir(d)


class RunCgroup:
    """One run's cgroup(s): join files for the launcher, limit counters, kill-all, removal."""

    def __init__(self, dirs: list[Path], v2: bool, limits: JobLimits):
        self.dirs, self.v2, self.limits = dirs, v2, limits

    @property
    def procs_files(self) -> tuple[str, ...]:
        return tuple(str(d / "cgroup.procs") for d in self.dirs)

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs:
            try:
                out.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return out

    def task_count(self) -> int:
        """Threads of every process of the run: what a warm runtime must not grow across jobs."""
        name = "cgroup.threads" if self.v2 else "tasks"
        for d in self.dirs:
            try:  # one id per line; read raw: this runs after every warm job (issue 17)
                with open(os.path.join(d, name), "rb", buffering=0) as fh:
                    return fh.read().count(b"\n")
            except OSError:
                continue
        return 0

    def hits(self) -> list[str]:
        """Which limits the run went over, as sentences naming them."""
        out = []
        if self._counter("memory.events" if self.v2 else "memory.oom_control", "oom_kill"):
            out.append(f"the job went over its memory limit of {size_text(self.limits.memory)}"
                       " (limits.memory) and was killed")
        if self._counter("pids.events", "max"):
            out.append(f"the job tried to run more than {self.limits.processes} processes at once"
                       " (limits.processes); the extra ones were refused")
        return out

    def _counter(self, filename: str, key: str) -> int:
        for d in self.dirs:
            try:
                for line in (d / filename).read_text().splitlines():
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
            except (OSError, ValueError):
                continue
        return 0

    def kill_all(self) -> None:
        """SIGKILL every process of the run now (what `none` jobs left behind, setsid
        included); `close` then waits for them to be gone and removes the cgroup."""
        if self.v2 and self.dirs and _try_write(self.dirs[0] / "cgroup.kill", "1"):
            return
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    async def close(self) -> None:
        """Kill until empty (a fork bomb refills as we kill: its pids limit bounds this), then
        remove the cgroup. Waits without blocking the worker's event loop."""
        for _ in range(400):
            self.kill_all()
            if not self.pids():
                break
            await asyncio.sleep(0.005)
        for d in self.dirs:
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    await asyncio.sleep(0.01)  # processes still leaving

    def remove(self) -> None:
        """Best effort, at once (the worker is stopping)."""
        self.kill_all()
        for d in self.dirs:
            try:
                d.rmdir()
            except OSError:
                pass


def _process_key(pid: int) -> str:
    """`<pid>-<start time>`: names a process uniquely, even after its pid is reused."""
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return f"{pid}-0"
    return f"{pid}-{start}"


def _remove_stale(parent: Path) -> None:
    """Remove `getoperate-<pid>-<start>` cgroups of workers that no longer run."""
    try:
        entries = [d for d in parent.iterdir() if d.is_dir() and d.name.startswith("getoperate-")]
    except OSError:
        return
    for d in entries:
        parts = d.name.split("-")
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        if _process_key(int(parts[1])) == f"{parts[1]}-{parts[2]}":
            continue  # its worker is alive
        try:
            Cgroups({"": d}, False).remove()
        except OSError:
            pass


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path ("" for v2), from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctls, path = line.split(":", 2)
            for ctl in ctls.split(",") if ctls else [""]:
                out[ctl] = path
    except OSError:
        pass
    return out


def _try_write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def _rmdir(d: Path) -> None:
    for _ in range(50):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)  # processes still leaving
