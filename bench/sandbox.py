"""What the sandbox costs per job: the same jobs on a bwrap worker and on a `none` worker, same run.

Two extra workers of one suite differ only in JOB_SANDBOX. Cold rows run bash and python3 jobs
one at a time (round trip p50: submit to `job.finished`); the warm row drains a backlog of a
dedicated script's jobs (the runtime is started once, so the sandbox costs nothing per job but the
runtime's start). Rows alternate between the two workers in rounds, so drift in the machine's
load hits both alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.stats import percentile
from bench.suite import Backlog, LocalSuite, progress, run_jobs

SCRIPT = "def main(x):\n    return x * 2\n"


def _cold(suite: LocalSuite, language: str, code: str, n: int) -> tuple[float, float]:
    """p50 round trip in ms on the bwrap worker and on the none worker."""
    samples: dict[str, list[float]] = {"on": [], "off": []}
    rounds = 5
    for r in range(rounds):
        for mode in ("on", "off"):
            job = {"workspace": "bench", "language": language, "code": code,
                   "tag": f"bench-sbx-{mode}"}
            samples[mode] += asyncio.run(run_jobs(suite.nats_url, suite.token,
                                                  [job] * (n // rounds), in_flight=1))
    return percentile(samples["on"], 50) * 1000, percentile(samples["off"], 50) * 1000


def run(quick: bool = False) -> list[dict[str, Any]]:
    n, n_warm = (60, 400) if quick else (300, 2000)
    with LocalSuite() as suite:
        cfg = suite.config_url
        for mode in ("on", "off"):
            suite.http("PUT", f"{cfg}/groups/bench-sbx-{mode}", {"tags": [f"bench-sbx-{mode}"]})
            suite.http("PUT", f"{cfg}/scripts/bench/f/warm-{mode}",
                       {"language": "python3", "content": SCRIPT})
            suite.http("PUT", f"{cfg}/groups/bench-ded-{mode}",
                       {"dedicated": [f"bench:f/warm-{mode}"]})
        suite.worker(WORKER_GROUP="bench-sbx-on", JOB_SANDBOX="bwrap")
        suite.worker(WORKER_GROUP="bench-sbx-off", JOB_SANDBOX="none")
        suite.wait_workers(lambda ws: {w["group"] for w in ws if w["state"] == "ready"}
                           >= {"bench-sbx-on", "bench-sbx-off"})
        for mode in ("on", "off"):  # warm up each worker's path
            asyncio.run(run_jobs(suite.nats_url, suite.token,
                                 [{"workspace": "bench", "language": "bash", "code": "true",
                                   "tag": f"bench-sbx-{mode}"}] * 5, in_flight=1))
        progress(f"sandbox: {n} cold bash and {n} cold python3 jobs on each worker")
        bash_on, bash_off = _cold(suite, "bash", "true\n", n)
        py_on, py_off = _cold(suite, "python3", SCRIPT.replace("x * 2", "1").replace("x", ""), n)

        async def drain(mode: str) -> float:
            async with Backlog(suite.nats_url, suite.token) as backlog:
                ids = await backlog.submit([{"workspace": "bench", "path": f"f/warm-{mode}",
                                             "args": {"x": i}} for i in range(n_warm)])
                suite.worker(WORKER_GROUP=f"bench-ded-{mode}",
                             JOB_SANDBOX="bwrap" if mode == "on" else "none")
                return await backlog.drain_rate(ids)

        progress(f"sandbox: {n_warm} jobs of a dedicated script on each kind of worker")
        warm_on, warm_off = asyncio.run(drain("on")), asyncio.run(drain("off"))
    rows = []
    for lang, on, off in (("bash", bash_on, bash_off), ("python3", py_on, py_off)):
        rows.append({
            "name": f"sandbox cost, cold {lang} job round trip p50 (bwrap {on:.1f} ms)",
            "value": round(on - off, 2), "unit": "ms per job",
            "baseline": round(off, 2), "baseline_name": "the same job on a JOB_SANDBOX=none worker",
            "ratio": round(on / off, 2), "target": "<= 10 ms per cold job", "met": on - off <= 10,
            "bound": "bwrap's namespace and mount set-up, the cgroup and the exec chain "
                     "(sh, prlimit, bwrap, setpriv) per job",
        })
    rows.append({
        "name": "sandbox cost, dedicated (warm) python3: backlog drained by 1 worker with bwrap",
        "value": round(warm_on, 1), "unit": "jobs/s",
        "baseline": round(warm_off, 1), "baseline_name": "the same on a JOB_SANDBOX=none worker",
        "ratio": round(warm_on / warm_off, 2), "target": ">= 0.9x (sandboxed once per runtime)",
        "met": warm_on / warm_off >= 0.9,
        "bound": "per job: none (the runtime is sandboxed once); its start adds one bwrap set-up",
    })
    return rows
