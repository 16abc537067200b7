"""Cold bash job round trip, one job at a time, against its floor measured in the same run.

The floor is what no platform can avoid for a cold bash job: spawning `bash -c true` and one NATS
request round trip. The job goes the whole way: a `go.router.submit` request (resolve, two
JetStream writes), a worker woken by the publish pulls it, writes the script to a fresh
directory, spawns bash, stores the result (a JetStream write), acks; the client learns the result
from the job's `job.finished` event. The overhead is p50(job) - p50(floor).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats

from bench.stats import percentile
from bench.suite import LocalSuite, progress, run_jobs


async def _floor(nats_url: str, n: int) -> list[float]:
    server = await nats.connect(nats_url)
    client = await nats.connect(nats_url)

    async def echo(msg: Any) -> None:
        await msg.respond(msg.data)

    await server.subscribe("go.bench.echo", cb=echo)
    await server.flush()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec("bash", "-c", "true")
        await proc.wait()
        await client.request("go.bench.echo", b"x" * 200, timeout=5)
        samples.append(time.perf_counter() - started)
    await client.close()
    await server.close()
    return samples


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 100 if quick else 500
    with LocalSuite() as suite:
        suite.wait_workers(lambda ws: any("bash" in w["tags"] and w["state"] == "ready"
                                          for w in ws))
        job = {"workspace": "bench", "language": "bash", "code": "true\n"}
        asyncio.run(run_jobs(suite.nats_url, suite.token, [job] * 10, in_flight=1))  # warm-up
        progress(f"coldbash: {n} floor samples, then {n} bash jobs one at a time")
        floor = asyncio.run(_floor(suite.nats_url, n))
        jobs = asyncio.run(run_jobs(suite.nats_url, suite.token, [job] * n, in_flight=1))
    f50, j50, j99 = (percentile(floor, 50) * 1000, percentile(jobs, 50) * 1000,
                     percentile(jobs, 99) * 1000)
    overhead = j50 - f50
    return [{
        "name": f"cold bash job round trip, one at a time ({n} jobs): p50 overhead "
                f"(job p50 {j50:.1f} ms, p99 {j99:.1f} ms)",
        "value": round(overhead, 2), "unit": "ms",
        "baseline": round(f50, 2), "baseline_name": "p50 of bash -c true + one NATS request",
        "ratio": round(j50 / f50, 2), "target": "p50 overhead <= 5 ms", "met": overhead <= 5,
        "bound": "NATS round trips in series: submit request, 2 JetStream writes, wake-up + pull, "
                 "result write, ack; plus the job directory and script file",
    }]
