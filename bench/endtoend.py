"""End to end against the peers: a no-op python3 job with a result, 2 workers, in the same run.

Ours: a script `bench:f/noop` (`def main(x): return x`), and two workers of a group dedicated to
it (a warm Python runtime each). Jobs go through the router over NATS (`go.router.submit`,
durable), and a result counts when its `job.finished` event arrives, as a client would see it.
The suite runs as `getoperate up` runs it: every JetStream write fsynced.

Peers: Celery + Redis and Dramatiq + Redis with 2 worker processes each, configured as
`bench/peers.py` says, on a private redis-server (no persistence: they are not asked to survive a
power cut, ours is).

- throughput: n jobs submitted as fast as the client goes, first submit -> last result;
- round trip: one job at a time, submit -> result (`delay().get()`, `send().get_result()`);
- throughput at equal durability: ours on a nats-server that fsyncs once a second
  (`GETOPERATE_NATS_SYNC=1s`, `sync_interval: 1s`) against the peers on a Redis that does too
  (`appendfsync everysec`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import peers
from bench.stats import machine_cpu_seconds, percentile
from bench.suite import LocalSuite, progress, run_jobs

NOOP = "def main(x):\n    return x\n"


def noop_workers(suite: LocalSuite) -> dict[str, object]:
    """The no-op script, its dedicated group and two warmed-up workers; the job to submit."""
    cfg = suite.config_url
    suite.http("PUT", f"{cfg}/scripts/bench/f/noop", {"language": "python3", "content": NOOP})
    suite.http("PUT", f"{cfg}/groups/bench-e2e", {"dedicated": ["bench:f/noop"]})
    suite.worker(WORKER_GROUP="bench-e2e")
    suite.worker(WORKER_GROUP="bench-e2e")
    suite.wait_workers(lambda ws: sum(w["group"] == "bench-e2e" and w["state"] == "ready"
                                      for w in ws) >= 2)
    job = {"workspace": "bench", "path": "f/noop", "args": {"x": 1}}
    asyncio.run(run_jobs(suite.nats_url, suite.token, [job] * 200))  # warm: runtimes, conns
    return job


def _ours(n: int, trips: int, sync: str | None = None,
          cpu: list[float] | None = None) -> tuple[float, list[float]]:
    """Throughput and round trips of ours; `sync`: GETOPERATE_NATS_SYNC for this suite; `cpu`
    gets the machine's CPU seconds spent during the throughput run."""
    with LocalSuite(**({"GETOPERATE_NATS_SYNC": sync} if sync else {})) as suite:
        job = noop_workers(suite)
        progress(f"endtoend: ours: {n} jobs on 2 dedicated workers")
        cpu_before = machine_cpu_seconds()
        started = time.perf_counter()
        asyncio.run(run_jobs(suite.nats_url, suite.token, [job] * n, in_flight=500))
        rate = n / (time.perf_counter() - started)
        if cpu is not None:
            cpu.append(machine_cpu_seconds() - cpu_before)
        latencies: list[float] = []
        if trips:
            progress(f"endtoend: ours: {trips} round trips one at a time")
            latencies = asyncio.run(run_jobs(suite.nats_url, suite.token, [job] * trips,
                                             in_flight=1))
    return rate, latencies


def run(quick: bool = False) -> list[dict[str, Any]]:
    n, trips = (2000, 100) if quick else (10000, 500)
    our_cpu: list[float] = []
    rate, latencies = _ours(n, trips, cpu=our_cpu)
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    reason = peers.unavailable()
    peer_rate: dict[str, float] = {}
    peer_p50: dict[str, float] = {}
    durable_p50 = 0.0
    everysec: dict[str, float] = {}
    peer_cpu: dict[str, list[float]] = {}
    if reason is None:
        for peer in ("celery", "dramatiq"):
            peer_cpu[peer] = []
            peer_rate[peer] = peers.throughput(peer, n, workers=2, cpu=peer_cpu[peer])
            peer_p50[peer] = percentile(peers.roundtrip(peer, trips), 50) * 1000
        # The fastest round-trip peer again, with the durability our suite gives every job.
        durable_p50 = percentile(peers.roundtrip("celery", trips, fsync="always"), 50) * 1000
        progress(f"endtoend: equal durability: ours with sync_interval 1s, {n} jobs")
        rate_1s, _ = _ours(n, 0, sync="1s")
        for peer in ("celery", "dramatiq"):
            everysec[peer] = peers.throughput(peer, n, workers=2, fsync="everysec")
    rows = []
    if peer_rate:
        best = max(peer_rate, key=lambda p: peer_rate[p])
        others = ", ".join(f"{p} {peer_rate[p]:.0f}" for p in sorted(peer_rate))
        rows.append({
            "name": f"end to end: no-op python3 job, 2 dedicated workers ({n} jobs); peers: "
                    f"{others} jobs/s",
            "value": round(rate), "unit": "jobs/s",
            "baseline": round(peer_rate[best]), "baseline_name": f"{best} + Redis, 2 processes",
            "ratio": round(rate / peer_rate[best], 2), "target": ">= 1.0x the faster peer",
            "met": rate >= peer_rate[best], "bound": THROUGHPUT_BOUND,
        })
        best_es = max(everysec, key=lambda p: everysec[p])
        others_es = ", ".join(f"{p} {everysec[p]:.0f}" for p in sorted(everysec))
        rows.append({
            "name": f"end to end at equal durability: the same, nats-server `sync_interval: 1s`"
                    f" ({n} jobs); peers on Redis `appendfsync everysec`: {others_es} jobs/s",
            "value": round(rate_1s), "unit": "jobs/s",
            "baseline": round(everysec[best_es]),
            "baseline_name": f"{best_es} + Redis appendfsync everysec, 2 processes",
            "ratio": round(rate_1s / everysec[best_es], 2), "target": ">= 2x the faster peer",
            "met": rate_1s >= 2 * everysec[best_es], "bound": EVERYSEC_BOUND,
        })
        ours_ms = our_cpu[0] * 1000 / n
        spent = {p: c[0] * 1000 / n for p, c in peer_cpu.items()}
        rows.append({
            "name": f"CPU per job, the whole machine (client, broker, services, workers), during"
                    f" the end-to-end run ({n} jobs); peers: "
                    + ", ".join(f"{p} {spent[p]:.2f}" for p in sorted(spent)) + " ms",
            "value": round(ours_ms, 2), "unit": "ms",
            "baseline": round(spent["dramatiq"], 2),
            "baseline_name": "dramatiq + Redis, the same measure",
            "ratio": round(ours_ms / spent["dramatiq"], 2), "target": "<= dramatiq's",
            "met": ours_ms <= spent["dramatiq"], "bound": CPU_BOUND,
        })
        fastest = min(peer_p50, key=lambda p: peer_p50[p])
        others = ", ".join(f"{p} {peer_p50[p]:.2f}" for p in sorted(peer_p50))
        rows.append({
            "name": f"round trip submit -> result, one at a time, warm ({trips} jobs): p50 "
                    f"(p99 {p99:.2f} ms); peers' p50: {others} ms; celery on a Redis that "
                    f"fsyncs every write (as we do): {durable_p50:.2f} ms",
            "value": round(p50, 2), "unit": "ms",
            "baseline": round(peer_p50[fastest], 2), "baseline_name": f"{fastest} + Redis p50",
            "ratio": round(p50 / peer_p50[fastest], 2), "target": "p50 <= the best peer's p50",
            "met": p50 <= peer_p50[fastest], "bound": ROUNDTRIP_BOUND,
        })
    else:
        for name, value, unit in (("end to end: no-op python3 job, 2 dedicated workers", rate,
                                   "jobs/s"), ("round trip, warm: p50", p50, "ms")):
            rows.append({"name": name, "value": round(value, 2), "unit": unit, "baseline": None,
                         "baseline_name": f"peers not measured: {reason}", "ratio": None,
                         "target": "against the peers", "met": False,
                         "bound": "install the bench extra and redis-server to compare"})
    return rows


THROUGHPUT_BOUND = ("CPU on 2 cores shared by the client, the router, nats-server and 2 workers; "
                    "per job 3 fsynced JetStream writes (history, queue, result; a job.started"
                    " only past 0.25 s of run)")
CPU_BOUND = ("per job about 20 NATS messages (submit and reply, 3 JetStream writes and their"
             " acks, wake-up, pull, ack, and every job event to each router's board and the"
             " client), each parsed by nats-py in a Python process and by nats-server")
EVERYSEC_BOUND = ("CPU on 2 cores shared by the client, the router, nats-server and 2 workers:"
                  " per job about 20 NATS messages through Python clients, against Redis list"
                  " operations for the peers")
ROUNDTRIP_BOUND = ("NATS round trips in series (submit, 2 writes, wake-up + pull, result write) "
                   "with an fsync each; the warm runtime's pipe")
