"""Flows of 40 sequential python3 `fibo(10)` steps (issue 17's flow rows), against the cost of
one job in the same run.

Two flows, one after the other, 40 steps each, every step the deployed script `f/fibo`:
- dedicated: a group dedicated to the script, so each step runs in the worker's warm runtime
  (the reference platform's published run of this flow: 2.43 s, 61 ms a step);
- ordinary: the same script on a tag of an ordinary group, one python3 process per step
  (reference platform: 4.30 s, 107 ms a step).
The time is the flow's own, from its `job.started` to its `job.finished` (the orchestrating
worker's events), divided by 40. Baselines from the same run: a warm job's round trip (one job
of the dedicated script at a time, submit -> result) for the dedicated row; the bare start of
the interpreter the ordinary steps run (`python3 -I -S`) for the ordinary row.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import nats

from bench.suite import LocalSuite, progress, run_jobs
from shared import subjects

STEPS = 40
SCRIPT = ("def fibo(n):\n    return n if n < 2 else fibo(n - 1) + fibo(n - 2)\n\n"
          "def main(previous_result=None):\n    return fibo(10)\n")


async def _flow_times(nats_url: str, token: str, path: str, n: int) -> list[float]:
    """Run the flow `n` times, one at a time; each run's started -> finished, in seconds."""
    nc = await nats.connect(nats_url)
    events: dict[str, dict[str, float]] = {}
    ended: dict[str, asyncio.Event] = {}

    async def on_event(msg: Any) -> None:
        event = json.loads(msg.data)
        job = events.setdefault(event["job_id"], {})
        if event["type"] == "job.started":
            job.setdefault("started", event["time"])
        elif event["type"] == "job.finished":
            job.setdefault("finished", event["time"])
            # a run shorter than the worker's WORKER_STARTED_AFTER has no job.started
            job.setdefault("started", event.get("started_at") or event["time"])
            job["ok"] = float(event["status"] == "success")
            ended.setdefault(event["job_id"], asyncio.Event()).set()

    sub = await nc.subscribe(f"{subjects.JOB_EVENTS_PREFIX}.>", cb=on_event)
    times = []
    try:
        for _ in range(n):
            reply = await nc.request(
                subjects.SUBMIT_SUBJECT,
                json.dumps({"workspace": "bench", "path": path, "kind": "flow"}).encode(),
                timeout=30, headers={"Authorization": f"Bearer {token}"})
            answer = json.loads(reply.data)
            if "error" in answer:
                raise RuntimeError(answer)
            job_id = answer["id"]
            await asyncio.wait_for(ended.setdefault(job_id, asyncio.Event()).wait(), 300)
            job = events[job_id]
            if not job.get("ok"):
                raise RuntimeError(f"flow {path} failed: {job_id}")
            times.append(job["finished"] - job["started"])
    finally:
        await sub.unsubscribe()
        await nc.close()
    return times


def _bare_python_ms(n: int = 20) -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def run(quick: bool = False) -> list[dict[str, Any]]:
    runs = 2 if quick else 5
    steps = [{"script": "f/fibo"}] * STEPS
    cold_steps = [{"script": "f/fibo-cold"}] * STEPS
    with LocalSuite() as suite:
        cfg = suite.config_url
        suite.http("PUT", f"{cfg}/scripts/bench/f/fibo", {"language": "python3", "content": SCRIPT})
        suite.http("PUT", f"{cfg}/scripts/bench/f/fibo-cold",
                   {"language": "python3", "content": SCRIPT, "tag": "bench-fcold"})
        suite.http("PUT", f"{cfg}/flows/bench/fib40", {"steps": steps})
        suite.http("PUT", f"{cfg}/flows/bench/fib40-cold", {"steps": cold_steps})
        suite.http("PUT", f"{cfg}/groups/bench-fded", {"dedicated": ["bench:f/fibo"]})
        suite.http("PUT", f"{cfg}/groups/bench-fcold", {"tags": ["bench-fcold"]})
        suite.worker(WORKER_GROUP="bench-fded")
        suite.worker(WORKER_GROUP="bench-fcold")
        suite.wait_workers(lambda ws: {w["group"] for w in ws if w["state"] == "ready"}
                           >= {"bench-fded", "bench-fcold", "default"})
        progress(f"flows: {runs} runs of a {STEPS}-step flow on dedicated, then ordinary workers")
        warm = asyncio.run(_flow_times(suite.nats_url, suite.token, "fib40", runs + 1))[1:]
        cold = asyncio.run(_flow_times(suite.nats_url, suite.token, "fib40-cold", runs))
        trips = asyncio.run(run_jobs(suite.nats_url, suite.token,
                                     [{"workspace": "bench", "path": "f/fibo"}] * 100,
                                     in_flight=1))
    trip_ms = statistics.median(trips) * 1000
    bare_ms = _bare_python_ms()
    warm_step = statistics.median(warm) * 1000 / STEPS
    cold_step = statistics.median(cold) * 1000 / STEPS
    return [{
        "name": f"flow of {STEPS} sequential python3 fibo(10) steps, dedicated worker: per step"
                f" (flow p50 {statistics.median(warm):.2f} s; reference platform 2.43 s)",
        "value": round(warm_step, 2), "unit": "ms", "baseline": round(trip_ms, 2),
        "baseline_name": "p50 round trip of one job of the same dedicated script, submit ->"
                         " result, one at a time",
        "ratio": round(warm_step / trip_ms, 2), "target": "<= 3 ms a step",
        "met": warm_step <= 3.0,
        "bound": "per step: a submission through a router (2 fsynced writes), the worker's"
                 " pull, the warm call, the result write, the router's board waking the flow",
    }, {
        "name": f"flow of {STEPS} sequential python3 fibo(10) steps, ordinary worker: per step"
                f" (flow p50 {statistics.median(cold):.2f} s; reference platform 4.30 s)",
        "value": round(cold_step, 2), "unit": "ms", "baseline": round(bare_ms, 2),
        "baseline_name": "p50 bare start of `python3 -I -S -c pass`",
        "ratio": round(cold_step / bare_ms, 2), "target": "<= python3 start-up + 3 ms a step",
        "met": cold_step <= bare_ms + 3.0,
        "bound": "per step: a sandboxed python3 start (bwrap, cgroup) plus the dedicated row's"
                 " round trips",
    }]
