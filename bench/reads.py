"""`GET /jobs/{id}` while many ids are polled at once, against the router's `GET /healthz`.

1,000 jobs are queued on a tag nobody serves (so every read finds a job and none changes); 50
clients then read them over HTTP, each id in turn, for several rounds. The baseline is the same
clients calling the router's `/healthz` (the same HTTP stack, no job read) in the same run: the
difference is what a job read costs (from the router's job board in memory, or, for a job the
board does not hold, a JetStream message get per event). Errors are counted: a read that
created a JetStream consumer per call answered 503 at this load (issue 17).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bench.stats import percentile
from bench.suite import Backlog, LocalSuite, progress

CLIENTS = 50


async def _poll(urls: list[str], token: str) -> tuple[list[float], int]:
    samples: list[float] = []
    errors = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def client() -> None:
            nonlocal errors
            while not queue.empty():
                url = queue.get_nowait()
                started = time.perf_counter()
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                samples.append(time.perf_counter() - started)

        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return samples, errors


def run(quick: bool = False) -> list[dict[str, Any]]:
    n, rounds = (300, 2) if quick else (1000, 5)
    with LocalSuite() as suite:
        async def queue_jobs() -> list[str]:
            async with Backlog(suite.nats_url, suite.token) as backlog:
                return await backlog.submit([{"workspace": "bench", "language": "bash",
                                              "code": "true\n", "tag": "bench-reads"}] * n)

        ids = asyncio.run(queue_jobs())
        progress(f"reads: {n} queued jobs, {CLIENTS} clients, {rounds} rounds of reads")
        base = suite.router_url
        reads, errors = asyncio.run(_poll([f"{base}/jobs/{i}" for i in ids] * rounds,
                                          suite.token))
        health, _ = asyncio.run(_poll([f"{base}/healthz"] * (n * rounds), suite.token))
    p50, p99, h50 = (percentile(reads, 50) * 1000, percentile(reads, 99) * 1000,
                     percentile(health, 50) * 1000)
    return [{
        "name": f"GET /jobs/{{id}}, {n} ids polled by {CLIENTS} clients ({len(reads)} reads,"
                f" {errors} errors, p99 {p99:.1f} ms): p50",
        "value": round(p50, 2), "unit": "ms", "baseline": round(h50, 2),
        "baseline_name": f"p50 of GET /healthz from the same {CLIENTS} clients",
        "ratio": round(p50 / h50, 2), "target": "no error; p50 <= 1 ms over the baseline",
        "met": errors == 0 and p50 - h50 <= 1,
        "bound": "the router's HTTP handling in one Python process (the job comes from its"
                 " job board in memory: services/router/board.py)",
    }]
