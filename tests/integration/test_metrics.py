"""Prometheus metrics and probes of every service, read over HTTP from real processes."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from tests.integration.conftest import Suite
from tests.integration.harness import free_port_base, scrape


def probe(port: int, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until(check, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never true; last: {value!r}")
        time.sleep(0.1)


def test_config_and_router_are_ready_and_count_what_they_do(suite: Suite) -> None:
    config_port, router_port = suite.base + 1, suite.base + 2
    assert probe(config_port, "/readyz") == (200, {"ready": True, "checks": {"log_loaded": True},
                                                   "nats_connected": True, "unpublished": 0})
    assert probe(router_port, "/readyz")[0] == 200

    before = scrape(config_port)
    answer = suite.api.set_group("metrics-g", tags=["metrics-unserved"])
    after = scrape(config_port)
    assert after[("getoperate_config_seq", ())] == answer["seq"]
    assert after[("getoperate_config_published_seq", ())] == answer["seq"]
    key = ("getoperate_config_events_total", (("type", "group.created"),))
    assert after[key] == before.get(key, 0) + 1

    # Jobs on a tag no worker ever served wait on the stream (no consumer yet): counted anyway.
    for _ in range(3):
        suite.api.submit("echo hi", tag="metrics-unserved")
    m = scrape(router_port)
    assert m[("getoperate_jobs_routed_total", (("tag", "metrics-unserved"),))] == 3
    assert m[("getoperate_jobs_waiting", (("tag", "metrics-unserved"),))] == 3
    assert m[("getoperate_router_config_seq", ())] >= answer["seq"]
    assert m[("getoperate_workers_live", (("group", "default"),))] >= 1
    default_workers = [w for w in suite.api.workers() if w["group"] == "default"]
    for w in default_workers:
        assert m[("getoperate_worker_config_version", (("group", "default"), ("worker", w["id"])))] \
            == w["config_version"]


def test_worker_metrics_port_serves_metrics_and_probes(extra_workers: Suite) -> None:
    s = extra_workers
    port = free_port_base() + 5
    s.api.set_group("metered", tags=["metered-a"], init_script="echo init")
    proc = s.worker("metered", WORKER_GROUP="metered", METRICS_PORT=str(port))
    wait_until(lambda: probe(port, "/readyz")[0] == 200 if _listening(port) else False)
    assert probe(port, "/healthz")[1]["ok"] is True
    assert set(probe(port, "/openapi.json")[1]["paths"]) == {"/healthz", "/readyz", "/metrics"}

    ok = s.api.submit("echo fine", tag="metered-a")
    bad = s.api.submit("exit 3", tag="metered-a")
    assert s.api.job(ok["id"])["status"] == "success"
    assert s.api.job(bad["id"])["status"] == "failure"
    m = wait_until(lambda: (lambda m: m if m.get(
        ("getoperate_jobs_finished_total", (("status", "failure"), ("tag", "metered-a")))) else None)(
            scrape(port)))
    assert m[("getoperate_jobs_finished_total", (("status", "success"), ("tag", "metered-a")))] == 1
    assert m[("getoperate_job_duration_seconds_count", (("tag", "metered-a"),))] == 2
    assert m[("getoperate_init_script_status", (("getoperate_init_script_status", "ok"),))] == 1
    assert m[("getoperate_hot_reloads_total", ())] == 0
    # One structured log line per job state change: routed (router), started and finished (worker).
    routed = {r["job_id"]: r["tag"] for r in s.up.log_events("job_routed")}
    assert routed[ok["id"]] == routed[bad["id"]] == "metered-a"
    assert {ok["id"], bad["id"]} <= {r["job_id"] for r in proc.log_events("job_started")}
    finished = {r["job_id"]: r["status"] for r in proc.log_events("job_finished")}
    assert (finished[ok["id"]], finished[bad["id"]]) == ("success", "failure")

    answer = s.api.set_group("metered", tags=["metered-a", "metered-b"])
    m = wait_until(lambda: (lambda m: m if m[("getoperate_hot_reloads_total", ())] == 1 else None)(
        scrape(port)))
    assert m[("getoperate_worker_config_version", ())] == answer["seq"]

    # A failing init script: the worker stays up but is not ready, and says why.
    s.api.set_group("metered", init_script="exit 1")
    status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(probe(port, "/readyz")))
    assert body["checks"]["init_script_ok"] is False and "init_script_ok" in body["message"]
    m = wait_until(lambda: (lambda m: m if m[("getoperate_init_script_status", (
        ("getoperate_init_script_status", "failed"),))] == 1 else None)(scrape(port)))


def _listening(port: int) -> bool:
    try:
        probe(port, "/healthz")
        return True
    except OSError:
        return False
