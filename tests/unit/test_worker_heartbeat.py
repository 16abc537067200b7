"""Heartbeats (services/worker/heartbeat.py): what a worker reports, and how often it writes."""

from __future__ import annotations

import asyncio
import os
import time

from services.common.log import Logger
from services.worker import heartbeat
from services.worker.heartbeat import Heartbeat, build_status
from shared.codec import decode
from shared.jobs import WorkerStatus


def status(**fields: object) -> WorkerStatus:
    base: dict[str, object] = dict(
        worker_id="w1", group="gpu", tags=["gpu", "main:f/x"], tags_source="group",
        config_version=7, current=[], init_status="ok", init_error=None, state="ready",
        started_at=100.0, jobs_done=3, priorities={"gpu": 2}, dedicated={"main:f/x", "main:a"},
        config_applied_at=101.0, isolation=("none", True, None), now=123.0)
    return build_status(**{**base, **fields})  # type: ignore[arg-type]


def test_status_reports_the_worker() -> None:
    s = status()
    assert (s.id, s.group, s.tags, s.tags_source, s.config_version) == (
        "w1", "gpu", ["gpu", "main:f/x"], "group", 7)
    assert (s.init_status, s.state, s.jobs_done, s.priorities) == ("ok", "ready", 3, {"gpu": 2})
    assert s.dedicated == ["main:a", "main:f/x"]
    assert (s.heartbeat_at, s.started_at, s.config_applied_at) == (123.0, 100.0, 101.0)
    assert (s.pid, s.current_job) == (os.getpid(), None)
    assert (s.sandbox, s.network, s.sandbox_note) == ("none", True, None)


def test_current_job_is_one_of_the_running_jobs() -> None:
    assert status(current=["j1"]).current_job == "j1"
    assert status(current={"j1", "j2"}).current_job in {"j1", "j2"}
    failed = status(init_status="failed", init_error="exit 3", isolation=("bwrap", False, "n"))
    assert (failed.init_error, failed.sandbox, failed.network) == ("exit 3", "bwrap", False)


class FakeKV:
    def __init__(self) -> None:
        self.puts: list[tuple[float, str, WorkerStatus]] = []

    async def put(self, key: str, value: bytes) -> None:
        self.puts.append((time.monotonic(), key, decode(value, WorkerStatus)))

    async def delete(self, key: str) -> None:
        self.puts.append((time.monotonic(), key + ":deleted", status()))


async def test_beats_at_once_on_changes_and_at_most_every_gap_for_jobs() -> None:
    kv = FakeKV()
    hb = Heartbeat("my.worker", "worker:default", "nonce", status, Logger("test"))
    hb.start(kv)
    hb.now()
    await asyncio.sleep(0.05)
    assert len(kv.puts) == 1 and kv.puts[0][1] == "worker_3Adefault.my_2Eworker.nonce"
    for _ in range(5):  # a busy worker: jobs start and end
        hb.soon()
        await asyncio.sleep(0.01)
    await asyncio.sleep(heartbeat.JOB_BEAT_GAP + 0.1)
    assert len(kv.puts) == 2  # one write for all of them, not sooner than the gap
    assert kv.puts[1][0] - kv.puts[0][0] >= heartbeat.JOB_BEAT_GAP - 0.01
    hb.now()  # urgent: no gap
    await asyncio.sleep(0.05)
    assert len(kv.puts) == 3 and kv.puts[2][0] - kv.puts[1][0] < heartbeat.JOB_BEAT_GAP
    await hb.stop()
    assert kv.puts[-1][1] == "worker_3Adefault.my_2Eworker.nonce:deleted"
