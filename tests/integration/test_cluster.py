"""A 3-node NATS cluster with 3 replicas: killing a node while jobs flow loses nothing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Iterator

import nats
import pytest

from services.common.natsserver import NatsCluster, free_port
from tests.integration.harness import Api, Proc, cli_env, wait_until  # noqa: F401
from tests.integration.harness import finished_events

REPLICATED = {"GETOPERATE_REPLICAS": "3"}


async def _jetstream_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            nc = await nats.connect(url.split(","), connect_timeout=2)
            try:
                await nc.jetstream().account_info()
                return
            finally:
                await nc.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path / "cluster").start()
    try:
        asyncio.run(_jetstream_ready(c.url))
        yield c
    finally:
        c.stop()


def test_killing_one_node_while_jobs_flow_loses_nothing(cluster: NatsCluster, tmp_path: Path) -> None:
    data = tmp_path / "data"
    cport, rport = free_port(), free_port()
    while rport == cport:
        rport = free_port()
    env = {"NATS_URL": cluster.url, "GETOPERATE_DATA_DIR": str(data), "CONFIG_PORT": str(cport),
           "ROUTER_PORT": str(rport), "GETOPERATE_ADMIN_TOKEN": "cluster-token", **REPLICATED}
    procs = [Proc(["config"], cwd=tmp_path, env=env, name="config")]
    procs[0].wait_for('"http_listening"', timeout=60)
    procs.append(Proc(["router"], cwd=tmp_path, env=env, name="router"))
    procs[1].wait_for('"http_listening"', timeout=60)
    for i in range(2):
        procs.append(Proc(["worker"], cwd=tmp_path, env={**env, "WORKER_GROUP": "default"},
                          name=f"worker{i}"))
    (data / "endpoints.json").write_text(json.dumps({
        "config_url": f"http://127.0.0.1:{cport}", "router_url": f"http://127.0.0.1:{rport}"}))
    api = Api(data)
    import os

    os.environ["GETOPERATE_ADMIN_TOKEN"] = "cluster-token"
    try:
        api.wait_workers(lambda ws: len([w for w in ws if w["state"] == "ready"]) == 2, timeout=60)
        first = [api.submit(f"sleep 0.05; echo {i}")["id"] for i in range(20)]
        cluster.kill(1)  # one of three nodes dies while those run
        second = [api.submit(f"echo {i}")["id"] for i in range(20, 40)]
        views = [api.job(j, timeout=90) for j in first + second]
        assert [v["result"] for v in views] == [str(i) for i in range(40)]
        counts = asyncio.run(finished_events(",".join(
            f"nats://127.0.0.1:{p}" for i, p in enumerate(cluster.ports) if i != 1)))
        assert all(counts[j] == 1 for j in first + second)
        # The config stream may still be electing a leader among the two nodes left: a write
        # is durable at once and on the stream once the outbox gets through.
        written = api.set_group("after-kill", tags=["k"])
        wait_until(lambda: api.call("GET", "config", "/healthz")["published_seq"]
                   >= written["seq"], "the write published on the two nodes left", 60)
    finally:
        del os.environ["GETOPERATE_ADMIN_TOKEN"]
        for proc in reversed(procs):
            proc.stop()
