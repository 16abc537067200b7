"""Start a real local suite (`getoperate up` on free loopback ports) for a benchmark, and drive it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats

from services.common.natsserver import port_open
from shared import subjects

ROOT = Path(__file__).resolve().parents[1]


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _free_base() -> int:
    import random

    for _ in range(200):
        base = random.randint(20000, 32000)  # below the ephemeral range (32768+)
        if not any(port_open(base + i) for i in range(3)):
            return base
    raise RuntimeError("no free ports")


class LocalSuite:
    """`getoperate up` in a temp dir, plus extra workers, torn down on exit."""

    def __init__(self, **env: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="getoperate-bench-"))
        self.base = _free_base()
        self.nats_url = f"nats://127.0.0.1:{self.base}"
        self.config_url = f"http://127.0.0.1:{self.base + 1}"
        self.router_url = f"http://127.0.0.1:{self.base + 2}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for k in [k for k in self.env if k.startswith(("WORKER_", "GETOPERATE_"))
                  and k != "GETOPERATE_NATS_SYNC"]:  # kept: `GETOPERATE_NATS_SYNC=interval` runs
            del self.env[k]                             # a benchmark without fsync per write
        self.env.update(env)

    def __enter__(self) -> "LocalSuite":
        log = open(self.dir / "up.log", "wb")
        self.up = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--data-dir",
                                    str(self.dir / "data"), "--port-base", str(self.base)],
                                   cwd=self.dir, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while b"Ctrl-C stops everything" not in (self.dir / "up.log").read_bytes():
            if time.monotonic() > deadline or self.up.poll() is not None:
                raise RuntimeError((self.dir / "up.log").read_text()[-2000:])
            time.sleep(0.05)
        self.token = (self.dir / "data" / "admin.token").read_text().strip()
        admin = json.loads((self.dir / "data" / "nats-credentials.json").read_text())["admin"]
        self.plain_nats_url = self.nats_url
        self.nats_url = f"nats://admin:{admin}@127.0.0.1:{self.base}"
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.up.send_signal(signal.SIGINT)
        try:
            self.up.wait(60)
        except subprocess.TimeoutExpired:
            self.up.kill()
        if exc[0] is None:  # kept after a failure: its logs say why
            shutil.rmtree(self.dir, ignore_errors=True)

    def worker(self, **env: str) -> None:
        log = open(self.dir / f"worker-{len(self.procs)}.log", "wb")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"], cwd=self.dir,
            env={**self.env, "NATS_URL": self.plain_nats_url,
                 "GETOPERATE_DATA_DIR": str(self.dir / "data"), **env}, stdout=log,
            stderr=subprocess.STDOUT))

    def http(self, method: str, url: str, body: Any = None) -> Any:
        req = urllib.request.Request(url, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def wait_workers(self, predicate: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.http("GET", self.router_url + "/workers")):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not become ready")
            time.sleep(0.05)


async def run_jobs(nats_url: str, token: str, payloads: list[dict[str, Any]],
                   in_flight: int = 200) -> list[float]:
    """Submit jobs over NATS (up to `in_flight` at once) and wait until every one has finished.

    Returns the per-job submit->finished latencies in seconds; raises if any job failed.
    """
    nc = await nats.connect(nats_url)
    done: dict[str, asyncio.Future[dict[str, Any]]] = {}
    early: dict[str, dict[str, Any]] = {}
    loop = asyncio.get_running_loop()

    async def on_event(msg: Any) -> None:
        event = json.loads(msg.data)
        if event["type"] != "job.finished":
            return
        fut = done.get(event["job_id"])
        if fut is None:
            early[event["job_id"]] = event
        elif not fut.done():
            fut.set_result(event)

    sub = await nc.subscribe(f"{subjects.JOB_EVENTS_PREFIX}.>", cb=on_event)
    sem = asyncio.Semaphore(in_flight)
    latencies: list[float] = []
    auth = {"Authorization": f"Bearer {token}"}  # every submission carries a token

    async def one(payload: dict[str, Any]) -> None:
        async with sem:
            started = time.perf_counter()
            reply = await nc.request(subjects.SUBMIT_SUBJECT, json.dumps(payload).encode(),
                                     timeout=30, headers=auth)
            answer = json.loads(reply.data)
            if "error" in answer:
                raise RuntimeError(answer)
            fut = done.setdefault(answer["id"], loop.create_future())
            if answer["id"] in early:
                fut.set_result(early.pop(answer["id"]))
            event = await asyncio.wait_for(fut, 300)
            if event["status"] != "success":
                raise RuntimeError(f"job failed: {event.get('error')}")
            latencies.append(time.perf_counter() - started)

    try:
        await asyncio.gather(*(one(p) for p in payloads))
    finally:
        await sub.unsubscribe()
        await nc.close()
    return latencies


class Backlog:
    """Queue jobs while no worker serves their tag, then time how fast workers drain them.

    The rate is n / (last job.finished - first job.started), from the workers' own event
    timestamps: it measures the workers, not the submitting client or the router.
    """

    def __init__(self, nats_url: str, token: str):
        self.nats_url = nats_url
        self.auth = {"Authorization": f"Bearer {token}"}
        self.started: dict[str, float] = {}
        self.finished: dict[str, dict[str, Any]] = {}

    async def __aenter__(self) -> "Backlog":
        self.nc = await nats.connect(self.nats_url)

        async def on_event(msg: Any) -> None:
            event = json.loads(msg.data)
            if event["type"] == "job.started":
                self.started.setdefault(event["job_id"], event["time"])
            elif event["type"] == "job.finished":
                self.finished.setdefault(event["job_id"], event)
                # a job shorter than the worker's WORKER_STARTED_AFTER has no job.started
                self.started.setdefault(event["job_id"], event.get("started_at") or event["time"])

        self.sub = await self.nc.subscribe(f"{subjects.JOB_EVENTS_PREFIX}.>", cb=on_event)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sub.unsubscribe()
        await self.nc.close()

    async def submit(self, payloads: list[dict[str, Any]]) -> list[str]:
        async def one(payload: dict[str, Any]) -> str:
            reply = await self.nc.request(subjects.SUBMIT_SUBJECT, json.dumps(payload).encode(),
                                          timeout=30, headers=self.auth)
            answer = json.loads(reply.data)
            if "error" in answer:
                raise RuntimeError(answer)
            return str(answer["id"])

        ids: list[str] = []
        for i in range(0, len(payloads), 200):
            ids += await asyncio.gather(*(one(p) for p in payloads[i:i + 200]))
        return ids

    async def drain_rate(self, ids: list[str], timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while not all(i in self.finished for i in ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{sum(i in self.finished for i in ids)}/{len(ids)} finished")
            await asyncio.sleep(0.05)
        failed = [self.finished[i] for i in ids if self.finished[i]["status"] != "success"]
        if failed:
            raise RuntimeError(f"{len(failed)} jobs failed, e.g. {failed[0].get('error')}")
        first = min(self.started[i] for i in ids)
        last = max(self.finished[i]["time"] for i in ids)
        return len(ids) / (last - first)
