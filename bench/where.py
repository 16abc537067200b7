"""`python -m bench.where [N]`: where a job's CPU goes, process by process.

The end-to-end load of `bench/endtoend.py` (a no-op dedicated python3 script, two workers of its
group, 500 jobs in flight through the router over NATS), with each process's CPU time
(`/proc/<pid>/stat`, user + system) read before and after and divided by the jobs. Not a
benchmark row (it has no baseline): the breakdown that says which process to work on next,
quoted in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time

from bench.endtoend import noop_workers
from bench.suite import LocalSuite, progress, run_jobs


def _cpu_by_process() -> dict[int, tuple[str, float]]:
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(pid)] = (cmd, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _name(cmd: str) -> str:
    if "nats-server" in cmd:
        return "nats-server"
    for service in ("router", "worker", "config", "up"):
        if f"cli.main {service}" in cmd:
            return service
    if "-c" in cmd.split() and "import contextlib" in cmd:
        return "warm python3 runtime"
    return cmd[:60]


def main(n: int = 4000) -> None:
    with LocalSuite() as suite:
        job = noop_workers(suite)
        progress(f"where: {n} jobs, 500 in flight")
        before = _cpu_by_process()
        mine = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        asyncio.run(run_jobs(suite.nats_url, suite.token, [job] * n, in_flight=500))
        elapsed = time.perf_counter() - started
        after = _cpu_by_process()
        mine_after = resource.getrusage(resource.RUSAGE_SELF)
    rows: dict[str, float] = {}
    for pid, (cmd, cpu) in after.items():
        if pid in before and pid != os.getpid():
            spent = cpu - before[pid][1]
            if spent > 0:
                rows[_name(cmd)] = rows.get(_name(cmd), 0.0) + spent
    rows["client (this process)"] = (mine_after.ru_utime + mine_after.ru_stime
                                     - mine.ru_utime - mine.ru_stime)
    print(f"{n / elapsed:.0f} jobs/s; CPU per job, summed over each kind of process:")
    for name, spent in sorted(rows.items(), key=lambda r: -r[1]):
        if spent * 1000 / n >= 0.01:
            print(f"  {spent * 1000 / n:6.3f} ms  {name}")
    print(f"  {sum(rows.values()) * 1000 / n:6.3f} ms  in all")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000)
