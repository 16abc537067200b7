"""Router throughput: jobs routed per second (resolve + durable publish) from many clients,
against raw pipelined JetStream publishes of the same payload, on the same server, in the same run.

The router under test is the one `getoperate up` starts. Clients are several NATS connections in
this process sending `go.router.submit` requests with a window of requests in flight each; the
router answers only after both JetStream acks (job.queued history and the job on its tag's
queue). No worker serves the tag, so the jobs stay queued and nothing else competes for CPU.

The baseline publishes the same routed-job bytes straight to a stream configured like GO_JOBS
(file storage, work-queue retention, deduplication by message id), with nats-py's own pipelining
(`publish_async`, up to 4,000 acks pending), from one connection: the fastest way a Python
client gets messages durably into JetStream, and so the ceiling a Python router is held to.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats
from nats.js import api

from bench.suite import LocalSuite, progress
from shared.codec import encode
from shared.jobs import Job

TAG = "bench-route"
CLIENTS = 8
WINDOW = 64  # requests in flight per client connection
CODE = "def main(x):\n    return x\n"


async def routed(connect: str | list[dict[str, Any]], token: str, n: int,
                 tag: str = TAG) -> float:
    """Jobs routed per second from CLIENTS connections (a URL, or nats.connect arguments each)."""
    kwargs = [{"servers": [connect]}] * CLIENTS if isinstance(connect, str) else connect
    conns = [await nats.connect(**kw) for kw in kwargs]
    payload = json.dumps({"workspace": "bench", "language": "python3", "code": CODE,
                          "args": {"x": 1}, "tag": tag}).encode()
    auth = {"Authorization": f"Bearer {token}"}  # checked per request: part of what is measured

    async def client(nc: Any, count: int) -> None:
        sem = asyncio.Semaphore(WINDOW)

        async def one() -> None:
            async with sem:
                reply = await nc.request("go.router.submit", payload, timeout=60, headers=auth)
                if b'"error"' in reply.data:
                    raise RuntimeError(reply.data.decode())

        await asyncio.gather(*(one() for _ in range(count)))

    # warm up: connections, subscriptions, the router's caches
    await asyncio.gather(*(client(nc, 20) for nc in conns))
    started = time.perf_counter()
    await asyncio.gather(*(client(nc, n // CLIENTS) for nc in conns))
    elapsed = time.perf_counter() - started
    for nc in conns:
        await nc.close()
    return (n // CLIENTS * CLIENTS) / elapsed


async def _raw(nats_url: str, n: int) -> float:
    nc = await nats.connect(nats_url)
    js = nc.jetstream(publish_async_max_pending=4000)
    await js.add_stream(api.StreamConfig(
        name="BENCH_RAW", subjects=["go.bench.raw.>"], retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE, duplicate_window=120.0))
    body = encode(Job(id="0" * 32, workspace="bench", language="python3", code=CODE,
                      args={"x": 1}, tag=TAG, submitted_at=time.time()))

    async def batch(count: int, offset: int) -> None:
        for i in range(count):
            await js.publish_async("go.bench.raw.q", body,  # the admin user publishes under go.>
                                   headers={"Nats-Msg-Id": f"r{offset + i}"})
        await js.publish_async_completed()

    await batch(200, 0)
    started = time.perf_counter()
    await batch(n, 1000)
    elapsed = time.perf_counter() - started
    await js.delete_stream("BENCH_RAW")
    await nc.close()
    return n / elapsed


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 4000 if quick else 20000
    rows = []
    # As shipped (`sync_interval: always`, every write fsynced), then with the server's default
    # fsync interval, where the router's own CPU shows instead of the disk.
    for sync in ("always", "interval"):
        with LocalSuite(GETOPERATE_NATS_SYNC=sync) as suite:
            progress(f"router ({sync} fsync): raw JetStream publish of {n} messages (baseline)")
            raw = asyncio.run(_raw(suite.nats_url, n))
            progress(f"router ({sync} fsync): {n} submissions from {CLIENTS} clients")
            rate = asyncio.run(routed(suite.nats_url, suite.token, n))
        ratio = rate / raw
        rows.append({
            "name": f"router: jobs routed per second ({CLIENTS} clients, {CLIENTS * WINDOW} in "
                    f"flight), nats-server fsync {sync}",
            "value": round(rate), "unit": "jobs/s",
            "baseline": round(raw), "baseline_name": "raw nats-py JetStream publish_async, same "
                                                     "payload, same server",
            "ratio": round(ratio, 2), "target": ">= 0.5", "met": ratio >= 0.5,
            "bound": BOUNDS[sync],
        })
    return rows


BOUNDS = {
    "always": "nats-server's fsync per write (both sides: the server is the busiest process); the "
              "router writes two messages per job (history + queue) on two streams",
    "interval": "the router's Python CPU (about 0.8 of a core): per job a request in, two "
                "JetStream publishes and their acks, a reply and a log line, against one publish "
                "and one ack per message in the baseline; 3 processes share 2 cores",
}
