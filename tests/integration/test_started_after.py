"""A job that ends quickly stores two events, not three (issue 17): job.started is written once
the job has run WORKER_STARTED_AFTER seconds, and a job that ends sooner stores job.finished
alone, conditional on its job.queued (the router gives its sequence in Go-Queued-Seq). What
this must not change: one end per job, and a cancel still wins over a run it raced."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import Suite
from tests.integration.harness import cli, live_pids, wait_until
from tests.integration.natsclients import hold_read

TAG = "t-latestart"


def _types(s: Suite, job_id: str) -> list[str]:
    return [e["type"] for e in hold_read(s, job_id)["history"]]


@pytest.fixture(scope="module")
def late(suite: Suite) -> Suite:
    """A worker that announces a run only after 30 s: every job it takes here ends sooner."""
    suite.api.set_group("latestart", tags=[TAG])
    suite.worker("latestart", WORKER_GROUP="latestart", WORKER_STARTED_AFTER="30")
    suite.api.wait_workers(lambda ws: any(w["group"] == "latestart" and w["state"] == "ready"
                                          for w in ws))
    return suite


def test_a_job_that_ends_before_its_start_is_due_stores_its_end_alone(late: Suite) -> None:
    s = late
    job = s.api.submit("echo quick", tag=TAG)["id"]
    view = s.api.job(job)
    assert (view["status"], view["result"], view["attempts"]) == ("success", "quick", 1)
    assert _types(s, job) == ["job.queued", "job.finished"]
    finished = hold_read(s, job)["history"][-1]
    assert finished["started_at"] == view["started_at"]
    assert view["queued_at"] <= view["started_at"] <= view["finished_at"], view


def test_a_job_past_its_start_delay_shows_as_running(suite: Suite) -> None:
    """The default worker (0.25 s): a two-second job is `running` while it runs."""
    s = suite
    job = s.api.submit("sleep 2; echo slow", workspace="main")["id"]
    wait_until(lambda: s.api.job(job, wait=False)["status"] == "running",
               "the job shows as running while it runs", timeout=30)
    view = s.api.job(job)
    assert view["status"] == "success"
    assert _types(s, job) == ["job.queued", "job.started", "job.finished"]
    assert view["queued_at"] <= view["started_at"] <= view["finished_at"], view
    # job.started, written 0.25 s into the run, says when the run began, as job.finished does
    _, started, finished = hold_read(s, job)["history"]
    assert started["time"] == finished["started_at"] == view["started_at"]
    assert finished["time"] - started["time"] >= 2.0


def test_a_cancel_that_races_an_unannounced_run_leaves_one_end(late: Suite) -> None:
    """The running job still looks queued, so the router records the cancel as the job's end;
    the worker kills the run (it watches the cancel requests), and its own end, conditional on
    job.queued, is refused: one job.finished, the router's."""
    s = late
    mark = f"{time.time_ns() % 10**9}.7"  # a unique sleep argument, seen from the host
    job = s.api.submit(f"sleep {mark} & wait", tag=TAG)["id"]
    wait_until(lambda: live_pids(f"sleep {mark}"), "the job runs", timeout=30)
    assert s.api.job(job, wait=False)["status"] == "queued"  # its start is not written yet
    out = cli("cancel", job, cwd=s.root)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: not live_pids(f"sleep {mark}"), "the run was killed", timeout=10)
    history = hold_read(s, job)["history"]
    ends = [e for e in history if e["type"] == "job.finished"]
    assert len(ends) == 1 and ends[0]["status"] == "cancelled", history
    assert ends[0]["worker"] == "router"
    after = s.api.job(s.api.submit("echo next", tag=TAG)["id"])
    assert after["result"] == "next"
