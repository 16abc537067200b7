"""Full storage is survivable (issue 14, point 4): submissions are refused at once with
`storage_full` (507), /readyz and a metric say so, and everything resumes when space returns,
without a restart. Two ways to fill it: the job queue at its own `max_bytes` (a share of
GETOPERATE_STORE_BYTES), and nats-server's whole store used up by something else (a result
that cannot be stored then waits in its worker and is stored once there is room)."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import nats
import pytest
from nats.js import api
from nats.js.errors import APIError

from tests.integration.harness import Deployment, counts, request, wait_until

BIG = "echo ok # " + "x" * 200_000  # a job of about 200 KB


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    status, body, _ = request(port, "GET", "/readyz")
    return status, body


def metric(port: int, name: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return "\n".join(line for line in resp.read().decode().splitlines()
                         if line.startswith(name))


@pytest.fixture
def small_queue(tmp_path: Path) -> Iterator[Deployment]:
    # 64 MiB in all: the job queue (GO_JOBS) may hold 20% of it, about 64 of these jobs.
    d = Deployment(tmp_path, routers=1, env={"GETOPERATE_STORE_BYTES": str(64 * 1024 * 1024)})
    try:
        d.start()
        yield d
    finally:
        d.stop()


def test_a_full_job_queue_refuses_at_once_and_recovers_when_drained(small_queue: Deployment) -> None:
    d = small_queue
    port = d.router_ports[0]
    status, body, _ = request(d.config_port, "PUT", "/groups/full", {"tags": ["full"]})
    assert status in (200, 201), body
    accepted: list[str] = []
    for _ in range(200):  # nobody serves `full` yet: the queue only grows
        status, body, _ = request(port, "POST", "/jobs", {"language": "bash", "code": BIG,
                                                          "tag": "full", "workspace": "ws-full"})
        if status != 201:
            break
        accepted.append(body["id"])
    assert status == 507 and body["error"] == "storage_full", body
    assert "nothing was queued" in body["message"] and 30 < len(accepted) < 200, len(accepted)
    # A keyed submission refused for storage does not use its key up (it never ran).
    keyed_body = {"language": "bash", "code": BIG, "tag": "full", "workspace": "ws-full"}
    status, body, _ = request(port, "POST", "/jobs", keyed_body, key="after-space")
    assert status == 507, body
    status, ready = readyz(port)
    assert status == 503 and ready["checks"]["storage_ok"] is False, ready
    assert "GO_JOBS" in ready["storage_full"]
    assert metric(port, "getoperate_storage_full").endswith('{stream="GO_JOBS"} 1.0')
    d.start_worker("full")  # drains the queue: room again, with no restart of anything
    wait_until(lambda: readyz(port)[0] == 200, "the router ready again", 120)
    assert "1.0" not in metric(port, "getoperate_storage_full")
    status, body, _ = request(port, "POST", "/jobs", {"language": "bash", "code": "echo after",
                                                      "tag": "full", "workspace": "ws-full"})
    assert status == 201, body
    accepted.append(body["id"])
    status, keyed, _ = request(port, "POST", "/jobs", keyed_body, key="after-space")
    assert status == 201 and not keyed["replayed"], keyed
    status, again, _ = request(port, "POST", "/jobs", keyed_body, key="after-space")
    assert again["id"] == keyed["id"] and again["replayed"], again
    accepted.append(keyed["id"])
    for job_id in accepted:
        _, view, _ = request(port, "GET", f"/jobs/{job_id}?wait=1&timeout=60", timeout=90)
        assert view["status"] == "success", view
    queued, finished = counts(d, "ws-full")
    assert set(finished.values()) == {1} and finished.keys() == queued.keys()
    # The refused submissions are recorded as what they were: never queued, never run.
    refused = set(queued) - set(accepted)
    assert len(refused) == 2
    for job_id in refused:
        _, view, _ = request(port, "GET", f"/jobs/{job_id}")
        assert view["status"] == "failure" and "not enqueued" in view["error"], view


async def _fill(url: str, stream: str) -> int:
    """Fill nats-server's store with a stream of our own until JetStream refuses: what another
    tenant of the server, or a runaway stream, does."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"],
                                             storage=api.StorageType.FILE))
        for i in range(10_000):
            try:
                await js.publish(f"{stream.lower()}.x", b"x" * 256 * 1024, timeout=10)
            except APIError as exc:
                assert exc.err_code == 10023, exc  # insufficient resources
                return i
        raise AssertionError("the store never filled")
    finally:
        await nc.close()


async def _drop(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


@pytest.fixture
def small_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    # nats-server's whole store is 48 MiB; the services reserve nothing (budget 0), so the store
    # can fill under them, as on a server whose limits nobody sized for the suite.
    monkeypatch.setenv("GETOPERATE_STORE_BYTES", str(48 * 1024 * 1024))
    d = Deployment(tmp_path, routers=1, env={"GETOPERATE_STORE_BYTES": "0"})
    monkeypatch.delenv("GETOPERATE_STORE_BYTES")
    try:
        d.start(group="slow")
        yield d
    finally:
        d.stop()


def test_a_result_waits_for_space_and_is_stored_once_without_a_restart(
        small_server: Deployment) -> None:
    d = small_server
    port = d.router_ports[0]
    status, answer, _ = request(port, "POST", "/jobs", {
        "language": "bash", "code": "sleep 2; echo done", "tag": "slow", "workspace": "ws-slow"})
    assert status == 201, answer
    wait_until(lambda: request(port, "GET", f"/jobs/{answer['id']}")[1]["status"] == "running",
               "the job running")
    asyncio.run(_fill(d.nats.url, "FILLER"))
    status, body, _ = request(port, "POST", "/jobs", {"language": "bash", "code": "echo no",
                                                      "tag": "slow", "workspace": "ws-slow"})
    assert status == 507 and body["error"] == "storage_full", body
    assert readyz(port)[0] == 503
    worker = d.procs[-1]
    wait_until(lambda: worker.log_events("job_result_retry"), "the worker retrying the result", 60)
    asyncio.run(_drop(d.nats.url, "FILLER"))  # space returns
    _, view, _ = request(port, "GET", f"/jobs/{answer['id']}?wait=1&timeout=60", timeout=90)
    assert view["status"] == "success" and view["result"] == "done" and view["attempts"] == 1, view
    wait_until(lambda: readyz(port)[0] == 200, "the router ready again", 60)
    queued, finished = counts(d, "ws-slow")
    assert finished[answer["id"]] == 1
    assert worker.p.poll() is None  # the same worker process: no restart


async def _flood_history(url: str, megabytes: int) -> None:
    """Other writes filling GO_JOB_EVENTS past its share: its oldest events are dropped."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for i in range(megabytes):
            await js.publish("go.jobev.filler", b"x" * (1000 * 1000),
                             headers={"Nats-Msg-Id": f"filler-{i}"})
    finally:
        await nc.close()


async def _history_kept(url: str, job_id: str) -> int:
    """How many of the job's events GO_JOB_EVENTS still holds."""
    from shared import subjects

    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(
            subjects.JOB_EVENTS_STREAM, subjects_filter=subjects.job_events_subject(job_id))
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()


def test_a_job_whose_history_was_dropped_for_room_still_records_its_result(
        small_queue: Deployment) -> None:
    """GO_JOB_EVENTS at its share drops its oldest events, a running job's job.started among
    them: the job's result is still stored, once, and it is not run again."""
    d = small_queue
    port = d.router_ports[0]
    status, body, _ = request(d.config_port, "PUT", "/groups/hist", {"tags": ["hist"]})
    assert status in (200, 201), body
    worker = d.start_worker("hist")
    status, answer, _ = request(port, "POST", "/jobs", {
        "language": "bash", "code": "sleep 3; echo kept", "tag": "hist", "workspace": "ws-h"})
    assert status == 201, answer
    wait_until(lambda: request(port, "GET", f"/jobs/{answer['id']}")[1]["status"] == "running",
               "the job running")
    asyncio.run(_flood_history(d.nats.url, 40))  # 40 MB into a 32 MiB share
    # Its history is gone from the stream while it runs (the routers' job boards still know it).
    assert asyncio.run(_history_kept(d.nats.url, answer["id"])) == 0
    wait_until(lambda: request(port, "GET", f"/jobs/{answer['id']}")[0] == 200,
               "the job's result stored", 60)
    _, view, _ = request(port, "GET", f"/jobs/{answer['id']}?wait=1&timeout=30", timeout=60)
    assert view.get("status") == "success" and view["result"] == "kept", view
    assert worker.log_events("job_history_gone") and not worker.log_events("job_not_started")
    assert len(worker.log_events("job_started")) == 1
