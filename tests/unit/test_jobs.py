"""Job messages, the job-view fold and submission checks (shared/jobs.py)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.codec import decode, encode
from shared.errors import InvalidInput
from shared.jobs import (
    MAX_CODE_BYTES,
    JobEvent,
    JobFinished,
    JobQueued,
    JobStarted,
    JobSubmit,
    JobView,
    evolve_job,
    job_view,
    validate_submit,
)

SETTINGS = settings(max_examples=150, deadline=None, database=None)

QUEUED = JobQueued(job_id="j1", time=10.0, tag="gpu", workspace="dev", language="bash")
STARTED = JobStarted(job_id="j1", time=11.0, worker="w1", group="gpus", attempt=1)
FINISHED = JobFinished(job_id="j1", time=12.5, status="success", result={"answer": 42},
                       logs="hello\n", worker="w1", group="gpus", attempt=1, duration_ms=1500.0)


def test_new_job_view_is_queued_and_empty() -> None:
    view = job_view("j1", [])
    assert view == JobView(id="j1")
    assert view.status == "queued"
    assert view.attempts == 0


def test_a_job_that_ended_before_its_start_was_written_takes_the_start_of_its_end() -> None:
    """A quick job stores job.queued and job.finished only (services/worker/attempt.py,
    STARTED_AFTER): its start time and worker come from the finished event; where a
    job.started exists, its time stands."""
    quick = msgspec.structs.replace(FINISHED, started_at=12.25)
    view = job_view("j1", [QUEUED, quick])
    assert (view.status, view.worker, view.attempts) == ("success", "w1", 1)
    assert (view.queued_at, view.started_at, view.finished_at) == (10.0, 12.25, 12.5)
    assert job_view("j1", [QUEUED, STARTED, quick]).started_at == 11.0
    assert job_view("j1", [QUEUED, FINISHED]).started_at is None  # a router's end: no start


def test_queued_started_finished() -> None:
    queued = job_view("j1", [QUEUED])
    assert (queued.status, queued.tag, queued.workspace, queued.language, queued.queued_at) == (
        "queued", "gpu", "dev", "bash", 10.0
    )
    assert queued.worker is None and queued.started_at is None

    running = evolve_job(queued, STARTED)
    assert (running.status, running.worker, running.group) == ("running", "w1", "gpus")
    assert (running.attempts, running.started_at) == (1, 11.0)
    assert running.tag == "gpu"

    done = evolve_job(running, FINISHED)
    assert done.status == "success"
    assert done.result == {"answer": 42}
    assert done.logs == "hello\n"
    assert done.error is None
    assert (done.queued_at, done.started_at, done.finished_at, done.duration_ms) == (
        10.0, 11.0, 12.5, 1500.0
    )
    assert (done.tag, done.workspace, done.language, done.worker, done.group) == (
        "gpu", "dev", "bash", "w1", "gpus"
    )
    assert job_view("j1", [QUEUED, STARTED, FINISHED]) == done


def test_only_the_first_job_queued_counts() -> None:
    """A later `job.queued` (forged: the router writes one per job) moves the job nowhere, before
    or after it ran; a first one landing after the start still fills in where it went."""
    forged = JobQueued(job_id="j1", time=10.5, tag="bash", workspace="ws2", language="bash")
    for events in ([QUEUED, forged], [QUEUED, STARTED, forged], [QUEUED, STARTED, FINISHED, forged],
                   [STARTED, QUEUED, forged]):
        view = job_view("j1", events)
        assert (view.workspace, view.tag, view.queued_at) == ("dev", "gpu", 10.0), events


def test_failure_keeps_error() -> None:
    failed = JobFinished(job_id="j1", time=13.0, status="failure", error="ValueError: boom",
                         logs="trace", worker="w1")
    view = job_view("j1", [QUEUED, STARTED, failed])
    assert (view.status, view.error, view.result, view.logs) == (
        "failure", "ValueError: boom", None, "trace"
    )


def test_started_before_queued_gives_the_same_final_view() -> None:
    in_order = job_view("j1", [QUEUED, STARTED, FINISHED])
    assert job_view("j1", [STARTED, QUEUED, FINISHED]) == in_order
    running = job_view("j1", [STARTED, QUEUED])
    assert running.status == "running"
    assert (running.tag, running.worker, running.queued_at, running.started_at) == (
        "gpu", "w1", 10.0, 11.0
    )


@pytest.mark.parametrize(
    "order",
    [[STARTED, FINISHED, QUEUED], [FINISHED, QUEUED]],
    ids=["started-finished-queued", "finished-queued"],
)
def test_late_queued_event_still_fills_routing_fields(order: list[JobEvent]) -> None:
    view = job_view("j1", order)
    assert view.status == "success"
    assert (view.tag, view.workspace, view.language, view.queued_at) == ("gpu", "dev", "bash", 10.0)


def test_duplicate_finished_is_ignored_first_result_wins() -> None:
    second = JobFinished(job_id="j1", time=20.0, status="failure", error="redelivered",
                         result="other", worker="w2", group="cpus", attempt=2, duration_ms=1.0)
    first = job_view("j1", [QUEUED, STARTED, FINISHED])
    view = job_view("j1", [QUEUED, STARTED, FINISHED, second])
    assert view == first
    assert (view.status, view.result, view.worker, view.attempts, view.finished_at) == (
        "success", {"answer": 42}, "w1", 1, 12.5
    )
    # a redelivered start after the result does not reopen the job either
    again = JobStarted(job_id="j1", time=21.0, worker="w3", attempt=3)
    assert job_view("j1", [QUEUED, STARTED, FINISHED, again, second]) == first


def test_attempts_take_the_maximum() -> None:
    s2 = JobStarted(job_id="j1", time=15.0, worker="w2", attempt=2)
    view = job_view("j1", [QUEUED, STARTED, s2])
    assert (view.attempts, view.worker, view.started_at) == (2, "w2", 15.0)
    # a stale attempt-1 start arriving late does not lower the count
    assert job_view("j1", [QUEUED, s2, STARTED]).attempts == 2


finished_events = st.builds(
    JobFinished, job_id=st.just("j1"), time=st.floats(0, 1e9),
    status=st.sampled_from(["success", "failure", "cancelled"]),
    result=st.one_of(st.none(), st.integers(), st.text(max_size=5)),
    error=st.one_of(st.none(), st.text(max_size=5)), worker=st.text(max_size=5),
    attempt=st.integers(1, 5),
)
any_events = st.one_of(
    st.builds(JobQueued, job_id=st.just("j1"), time=st.floats(0, 1e9), tag=st.text(max_size=5),
              workspace=st.text(max_size=5), language=st.text(max_size=5)),
    st.builds(JobStarted, job_id=st.just("j1"), time=st.floats(0, 1e9), worker=st.text(max_size=5),
              attempt=st.integers(1, 5)),
    finished_events,
)


@SETTINGS
@given(st.lists(any_events, max_size=6), finished_events, st.lists(any_events, max_size=6))
def test_the_first_finished_event_is_final(
    before: list[JobEvent], finished: JobFinished, after: list[JobEvent]
) -> None:
    if any(isinstance(e, JobFinished) for e in before):
        return
    view = job_view("j1", [*before, finished])
    assert view.status == finished.status
    assert view.result == finished.result
    assert view.finished_at == finished.time
    later = job_view("j1", [*before, finished, *after])
    outcome = ("status", "result", "error", "logs", "worker", "group", "finished_at", "duration_ms")
    # The outcome is final; a late job.queued may only fill in where the job was routed.
    assert {f: getattr(later, f) for f in outcome} == {f: getattr(view, f) for f in outcome}
    if not any(isinstance(e, JobQueued) for e in after):
        assert later == view


@pytest.mark.parametrize(
    "order",
    [p for p in itertools.permutations([QUEUED, STARTED, FINISHED])
     if p.index(QUEUED) < p.index(FINISHED) and p.index(STARTED) < p.index(FINISHED)],
    ids=lambda p: "-".join(type(e).__name__[3:].lower() for e in p),
)
def test_lifecycle_orders_that_end_with_finished(order: tuple[JobEvent, ...]) -> None:
    assert job_view("j1", order) == job_view("j1", [QUEUED, STARTED, FINISHED])


def test_job_events_round_trip_through_the_codec() -> None:
    for event in (QUEUED, STARTED, FINISHED):
        assert decode(encode(event), JobEvent) == event


# --- submissions ----------------------------------------------------------------------------------


def submit(**kwargs: Any) -> JobSubmit:
    base: dict[str, Any] = {"language": "bash", "code": "echo hi"}
    base.update(kwargs)
    return JobSubmit(**base)


def test_valid_submissions_pass() -> None:
    for sub in (
        submit(),
        submit(workspace="dev-1_x", timeout=86400),
        submit(timeout=0.5),
        submit(code="x" * MAX_CODE_BYTES),
        submit(code="", args={"a": {"b": 1}}, tag="gpu"),
    ):
        assert validate_submit(sub) is sub


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"language": ""}, "language"),
        ({"language": None}, "language"),
        ({"code": None}, "code"),
        ({"path": "f/hello"}, "path"),  # a deployed path excludes inline language/code
        ({"language": "   "}, "language"),
        ({"code": "x" * (MAX_CODE_BYTES + 1)}, "code"),
        ({"code": "é" * (MAX_CODE_BYTES // 2 + 1)}, "code"),  # the limit counts UTF-8 bytes
        ({"workspace": ""}, "workspace"),
        ({"workspace": "a b"}, "workspace"),
        ({"workspace": "a.b"}, "workspace"),
        ({"workspace": "a/b"}, "workspace"),
        ({"workspace": "$workspace"}, "workspace"),
        ({"workspace": "w" * 65}, "workspace"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": 86400.001}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
    ],
)
def test_validate_submit_rejects(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_submit(submit(**kwargs))
    assert info.value.field == field


def test_decoding_a_submission() -> None:
    body = b'{"language": "python3", "code": "def main(): pass", "args": {"x": 1}}'
    sub = decode(body, JobSubmit)
    assert (sub.language, sub.code, sub.args, sub.workspace, sub.tag, sub.timeout) == (
        "python3", "def main(): pass", {"x": 1}, "main", None, None
    )
    assert validate_submit(sub) is sub


@pytest.mark.parametrize("extra", ["lang", "Language", "priority", "tags"])
def test_submission_with_an_unknown_field_is_rejected(extra: str) -> None:
    body = json.dumps({"language": "bash", "code": "echo", extra: "x"})
    with pytest.raises(InvalidInput) as info:
        decode(body, JobSubmit)
    assert extra in info.value.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"language": 1, "code": "echo"}, "language"),
        ({"language": "bash", "code": "echo", "args": []}, "args"),
        ({"language": "bash", "code": "echo", "timeout": "10"}, "timeout"),
        ({"language": "bash", "code": "echo", "workspace": None}, "workspace"),
    ],
)
def test_submission_with_wrong_types_names_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode(json.dumps(body), JobSubmit)
    assert info.value.field == field
