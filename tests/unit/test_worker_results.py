"""What fits in one job.finished (services/worker/results.py) and which jobs can never run
(services/worker/attempt.py)."""

from __future__ import annotations

from unittest.mock import patch

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.worker import results
from services.worker.attempt import job_problem
from services.worker.results import (
    MAX_ERROR_CHARS, MAX_EVENT_BYTES, TRUNCATED, fit, tail_within,
)
from shared.codec import encode
from shared.jobs import Job, JobFinished, JobStarted


def finished(logs: str = "", **fields: object) -> JobFinished:
    return JobFinished(job_id="01a22593f8861a6aa49c992a90db7daf", time=1.0, status="success",
                       worker="w", logs=logs, **fields)  # type: ignore[arg-type]


def assert_keeps_the_most_that_fits(logs: str) -> JobFinished:
    event = fit(finished(logs))
    assert isinstance(event, JobFinished) and event.status == "success"
    assert event.logs.startswith(TRUNCATED)
    kept = event.logs[len(TRUNCATED):]
    assert logs.endswith(kept)
    assert len(encode(event)) <= MAX_EVENT_BYTES
    one_more = msgspec.structs.replace(event, logs=TRUNCATED + logs[-(len(kept) + 1):])
    assert len(encode(one_more)) > MAX_EVENT_BYTES  # not a character more would have fit
    return event


def test_a_small_event_is_unchanged() -> None:
    event = finished("hello\n", result={"x": 1})
    assert fit(event) is event
    started = JobStarted(job_id="j", time=1.0, worker="w")
    assert fit(started) is started


def test_ascii_logs_keep_as_much_of_their_end_as_fits() -> None:
    logs = "lorem ipsum " * 200_000  # 2.4 MB, one byte a character
    event = assert_keeps_the_most_that_fits(logs)
    assert len(event.logs) > MAX_EVENT_BYTES - 1000
    lines = "".join(f"line {i}\n" for i in range(400_000))  # newlines take 2 bytes each
    assert_keeps_the_most_that_fits(lines)


def test_logs_of_six_byte_escapes_keep_as_much_as_fits() -> None:
    logs = "\x01" * 400_000  # each one is \u0001 in JSON: 6 bytes
    event = assert_keeps_the_most_that_fits(logs)
    assert len(event.logs) - len(TRUNCATED) >= (MAX_EVENT_BYTES - 1000) // 6


def test_mixed_logs_quotes_controls_and_multibyte_characters() -> None:
    logs = ('say "hi"\\\t\x1f é 雪 🎉\n' * 60_000)[:-1] + "end"
    assert_keeps_the_most_that_fits(logs)


def test_a_long_error_is_cut_and_logs_make_room_for_it() -> None:
    event = fit(finished("x" * 2_000_000, error="e" * (MAX_ERROR_CHARS * 3)))
    assert isinstance(event, JobFinished)
    assert event.error == "e" * MAX_ERROR_CHARS + " [...]"
    assert MAX_EVENT_BYTES - 100 < len(encode(event)) <= MAX_EVENT_BYTES


def test_a_result_too_large_even_without_logs_fails_the_job() -> None:
    big = finished("some logs\n" * 10, result="r" * (MAX_EVENT_BYTES + 10))
    event = fit(big)
    assert isinstance(event, JobFinished)
    assert (event.status, event.result) == ("failure", None)
    assert event.error is not None and "too large to record" in event.error
    assert len(encode(event)) <= MAX_EVENT_BYTES


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=300), st.integers(min_value=0, max_value=2000),
       st.sampled_from([1, 7, 4096]))
def test_tail_within_is_the_longest_end_that_fits(text: str, room: int, block: int) -> None:
    with patch.object(results, "_BLOCK", block):  # whole blocks, then a cut inside one
        tail = tail_within(text, room)
    assert text.endswith(tail)
    assert len(encode(tail)) - 2 <= room
    if len(tail) < len(text):
        assert len(encode(text[len(text) - len(tail) - 1:])) - 2 > room


def job(**fields: object) -> Job:
    base: dict[str, object] = {"id": "01a22593f8861a6aa49c992a90db7daf", "workspace": "main",
                               "language": "bash", "code": "true", "tag": "bash",
                               "submitted_at": 1.0}
    return Job(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize("job_id", ["01a22593f8861a6aa49c992a90db7daf", "probe-job", "a.b:c/d",
                                    "é"])
def test_ids_a_job_can_run_with(job_id: str) -> None:
    assert job_problem(job(id=job_id)) is None


@pytest.mark.parametrize(("job_id", "why"), [("", "empty"), ("a b", "not a job id"),
                                             ("a\r\nNats-Msg-Id: x", "not a job id"),
                                             ("\x00", "not a job id"),
                                             ("a\u00a0b", "not a job id"),
                                             ("x" * 257, "not a job id")])
def test_ids_that_can_never_run(job_id: str, why: str) -> None:
    problem = job_problem(job(id=job_id))
    assert problem is not None and why in problem
