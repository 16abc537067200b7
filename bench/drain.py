"""A worker that starts on eight tags with a backlog on each, against one tag holding the same jobs.

Both backlogs are queued before any worker serves them; then one worker of the group starts and
drains them. The time is from the first job.started to the last job.finished (the workers' own
event times, bench.suite.Backlog). A worker that found work on one tag per sweep interval (5 s)
took 35-65 s for the eight tags (issue 17); draining them back to back costs what one tag does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.suite import Backlog, LocalSuite, progress

TAGS = [f"drain-{i}" for i in range(8)]
PER_TAG = 10


def run(quick: bool = False) -> list[dict[str, Any]]:
    with LocalSuite() as suite:
        cfg = suite.config_url
        suite.http("PUT", f"{cfg}/groups/bench-one", {"tags": ["drain-one"]})
        suite.http("PUT", f"{cfg}/groups/bench-eight", {"tags": TAGS})

        async def drain(group: str, tags: list[str]) -> float:
            jobs = [{"workspace": "bench", "language": "bash", "code": "true\n", "tag": t}
                    for t in tags for _ in range(len(TAGS) * PER_TAG // len(tags))]
            async with Backlog(suite.nats_url, suite.token) as backlog:
                ids = await backlog.submit(jobs)
                progress(f"drain: {len(ids)} jobs on {len(tags)} tag(s); starting a worker")
                suite.worker(WORKER_GROUP=group)
                return len(ids) / await backlog.drain_rate(ids)

        one = asyncio.run(drain("bench-one", ["drain-one"]))
        eight = asyncio.run(drain("bench-eight", TAGS))
    return [{
        "name": f"a worker started on 8 tags with {PER_TAG} queued jobs each: drained in",
        "value": round(eight, 2), "unit": "s", "baseline": round(one, 2),
        "baseline_name": f"the same {len(TAGS) * PER_TAG} jobs on one tag, same worker",
        "ratio": round(eight / one, 2), "target": "within 2 s of the one-tag drain",
        "met": eight - one <= 2,
        "bound": "a bash job's start in the sandbox, one at a time (concurrency 1)",
    }]
