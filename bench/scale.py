"""50 dedicated workers draining a backlog of 100 ms jobs (issue 17's scale row).

A python3 script that sleeps 100 ms, a group dedicated to it, 50 workers of the group (a warm
runtime each). First one worker drains 100 jobs alone: its rate times 50 is the baseline, what
50 workers would do if adding workers cost nothing (about 500 jobs/s: 50 workers x 100 ms, less
the per-job overhead one worker pays). Then 5,000 jobs are queued and the 50 drain them; the
steady state is the middle 80% of the jobs (by finish time, from the workers' own job events),
so the start-up and the tail are left out. The reference platform's figure for this shape is
98-99% of 500 jobs/s.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.suite import Backlog, LocalSuite, progress

SCRIPT = "import time\n\ndef main(i=0):\n    time.sleep(0.1)\n    return i\n"
GROUP = "bench-scale"


def _steady_rate(backlog: Backlog, ids: list[str]) -> float:
    """Jobs per second over the middle 80% of the jobs, by finish time."""
    ends = sorted(backlog.finished[i]["time"] for i in ids)
    lo, hi = int(len(ends) * 0.1), int(len(ends) * 0.9) - 1
    return (hi - lo) / (ends[hi] - ends[lo])


def run(quick: bool = False) -> list[dict[str, Any]]:
    workers, n = (10, 600) if quick else (50, 5000)
    with LocalSuite() as suite:
        cfg = suite.config_url
        suite.http("PUT", f"{cfg}/scripts/bench/f/sleep100",
                   {"language": "python3", "content": SCRIPT})
        suite.http("PUT", f"{cfg}/groups/{GROUP}", {"dedicated": ["bench:f/sleep100"]})
        job = {"workspace": "bench", "path": "f/sleep100"}

        async def one_worker() -> float:
            async with Backlog(suite.nats_url, suite.token) as backlog:
                ids = await backlog.submit([{**job, "args": {"i": i}} for i in range(100)])
                await backlog.drain_rate(ids)
                return _steady_rate(backlog, ids)

        suite.worker(WORKER_GROUP=GROUP)
        suite.wait_workers(lambda ws: any(w["group"] == GROUP and w["state"] == "ready"
                                          for w in ws))
        progress("scale: one worker drains 100 jobs of 100 ms")
        single = asyncio.run(one_worker())
        progress(f"scale: starting {workers - 1} more workers")
        for _ in range(workers - 1):
            suite.worker(WORKER_GROUP=GROUP)
        suite.wait_workers(lambda ws: sum(w["group"] == GROUP and w["state"] == "ready"
                                          for w in ws) >= workers, timeout=180)

        async def all_workers() -> float:
            async with Backlog(suite.nats_url, suite.token) as backlog:
                progress(f"scale: {n} jobs of 100 ms on {workers} workers")
                ids = await backlog.submit([{**job, "args": {"i": i}} for i in range(n)])
                await backlog.drain_rate(ids)
                return _steady_rate(backlog, ids)

        rate = asyncio.run(all_workers())
    ideal = workers / 0.1
    baseline = single * workers
    share = rate / ideal * 100
    return [{
        "name": f"100 ms jobs, {workers} dedicated workers, a {n}-job backlog, steady state:"
                f" share of {ideal:.0f} jobs/s ({rate:.0f} jobs/s; one worker alone"
                f" {single:.2f} jobs/s; reference platform 98-99%)",
        "value": round(share, 1), "unit": "%", "baseline": round(baseline / ideal * 100, 1),
        "baseline_name": f"one worker's rate x {workers}, as a share of {ideal:.0f} jobs/s",
        "ratio": round(rate / baseline, 2), "target": ">= 98%", "met": share >= 98,
        "bound": "CPU on 2 cores: per job about 6 ms of CPU over the client, nats-server, the"
                 " router and the worker (python -m bench.where), so 2 cores carry about 300"
                 " jobs/s whatever the number of workers",
    }]
