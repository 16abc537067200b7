"""Dedicated worker (warm Python runtime) against the same script run cold, in the same run.

Both drain a backlog of the same script on one worker with the same settings; only the
dedication differs. Rates come from the workers' own job events (see bench.suite.Backlog).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.suite import Backlog, LocalSuite, progress

SCRIPT = "import json\n\ndef main(x):\n    return {'x': x, 'twice': x * 2}\n"


def run(quick: bool = False) -> list[dict[str, Any]]:
    n_cold, n_warm = (40, 600) if quick else (150, 3000)
    with LocalSuite() as suite:
        cfg = suite.config_url
        suite.http("PUT", f"{cfg}/scripts/bench/f/warm", {"language": "python3", "content": SCRIPT})
        suite.http("PUT", f"{cfg}/scripts/bench/f/cold",
                   {"language": "python3", "content": SCRIPT, "tag": "bench-cold"})
        suite.http("PUT", f"{cfg}/groups/bench-ded", {"dedicated": ["bench:f/warm"]})
        suite.http("PUT", f"{cfg}/groups/bench-cold", {"tags": ["bench-cold"]})

        async def measure(path: str, n: int, group: str) -> float:
            async with Backlog(suite.nats_url, suite.token) as backlog:
                ids = await backlog.submit([{"workspace": "bench", "path": path, "args": {"x": i}}
                                            for i in range(n)])
                progress(f"dedicated: {n} jobs of {path} queued; starting a {group} worker")
                suite.worker(WORKER_GROUP=group)
                return await backlog.drain_rate(ids)

        cold_rate = asyncio.run(measure("f/cold", n_cold, "bench-cold"))
        warm_rate = asyncio.run(measure("f/warm", n_warm, "bench-ded"))
    ratio = warm_rate / cold_rate
    return [{
        "name": "dedicated python3 script: backlog drained by 1 worker",
        "value": round(warm_rate, 1), "unit": "jobs/s",
        "baseline": round(cold_rate, 1), "baseline_name": "same script, a cold python3 per job",
        "ratio": round(ratio, 1), "target": ">= 20x", "met": ratio >= 20,
        "bound": "cold: interpreter start per job; warm: NATS round trips (pull, result, ack) "
                 "and Python CPU per job",
    }]
