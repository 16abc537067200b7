"""Submissions in batches (`go.router.submit` with `Go-Batch: 1`) against one job per request.

The same jobs, to a tag nobody serves (they stay queued, so only routing and queueing are
measured): first one `go.router.submit` request per job, 64 in flight; then batches of 100, 4 in
flight. Each job is two JetStream writes either way; a batch saves the request round trips and
overlaps its jobs' writes inside the router.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats

from bench.suite import LocalSuite, progress
from shared import subjects

JOB = {"workspace": "bench", "language": "bash", "code": "true\n", "tag": "bench-batch"}


async def _singles(url: str, token: str, n: int) -> float:
    nc = await nats.connect(url)
    sem = asyncio.Semaphore(64)
    headers = {"Authorization": f"Bearer {token}"}

    async def one() -> None:
        async with sem:
            reply = await nc.request(subjects.SUBMIT_SUBJECT, json.dumps(JOB).encode(),
                                     timeout=30, headers=headers)
            assert "error" not in json.loads(reply.data)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    took = time.perf_counter() - started
    await nc.close()
    return n / took


async def _batches(url: str, token: str, n: int, size: int) -> float:
    nc = await nats.connect(url)
    sem = asyncio.Semaphore(4)
    headers = {"Authorization": f"Bearer {token}", subjects.BATCH_HEADER: "1"}
    body = json.dumps({"jobs": [JOB] * size}).encode()

    async def one() -> None:
        async with sem:
            reply = await nc.request(subjects.SUBMIT_SUBJECT, body, timeout=60, headers=headers)
            assert all("error" not in j for j in json.loads(reply.data)["jobs"])

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n // size)))
    took = time.perf_counter() - started
    await nc.close()
    return n / took


def run(quick: bool = False) -> list[dict[str, Any]]:
    n, size = (1000, 100) if quick else (4000, 100)
    with LocalSuite() as suite:
        progress(f"batch: {n} jobs one per request, then in batches of {size}")
        single = asyncio.run(_singles(suite.nats_url, suite.token, n))
        batched = asyncio.run(_batches(suite.nats_url, suite.token, n, size))
    return [{
        "name": f"jobs routed and queued per second, in batches of {size} ({n} jobs)",
        "value": round(batched), "unit": "jobs/s", "baseline": round(single),
        "baseline_name": "one job per go.router.submit request, 64 in flight, same run",
        "ratio": round(batched / single, 2), "target": ">= 1.5x one per request",
        "met": batched >= 1.5 * single,
        "bound": "two fsynced JetStream writes per job (history, queue), in one router process",
    }]
