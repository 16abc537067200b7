"""An idle worker listening to 30 tags: CPU share and memory over a quiet window (no polling)."""

from __future__ import annotations

import os
import time
from typing import Any

from bench.suite import LocalSuite, progress

TAGS = [f"idle-{i}" for i in range(30)]


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(quick: bool = False) -> list[dict[str, Any]]:
    window = 10.0 if quick else 60.0
    with LocalSuite() as suite:
        suite.worker(WORKER_TAGS=",".join(TAGS))
        suite.wait_workers(lambda ws: any(len(w["tags"]) == 30 and w["state"] == "ready" for w in ws))
        pid = suite.procs[-1].pid
        time.sleep(2.0)  # let start-up settle
        progress(f"idle: measuring a worker on 30 tags for {window:.0f} s")
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(window)
        share = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
        rss = _rss_mb(pid)
    return [
        {"name": "idle worker on 30 tags: CPU", "value": round(share, 2), "unit": "% of a core",
         "baseline": 1.0, "baseline_name": "the 1% target", "same_run": False, "ratio": round(share / 1.0, 2),
         "target": "< 1%", "met": share < 1.0,
         "bound": "one 0.9 ms pull per tag every 5 s (sweep) and a heartbeat every 5 s"},
        {"name": "idle worker on 30 tags: memory (RSS)", "value": round(rss, 1), "unit": "MB",
         "baseline": 50, "baseline_name": "the 50 MB target", "same_run": False, "ratio": round(rss / 50, 2),
         "target": "<= 50 MB", "met": rss <= 50, "bound": "CPython + nats-py + aiohttp imports"},
    ]
