"""The CLI reads services' answers as the shared structs they were encoded from (cli/client.py:
answer_as): a field the CLI relies on that the answer lacks or mistypes is an error naming the
answer, never a blank in a table; a field a newer service added is ignored."""

from __future__ import annotations

import pytest

from cli.client import CliError, answer_as
from shared.jobs import JobView, SubmitAnswer, WorkerStatus

WORKER = {"id": "w1", "group": "g", "tags": ["a"], "tags_source": "group", "config_version": 3,
          "hostname": "h", "pid": 1, "started_at": 1.0, "heartbeat_at": 2.0, "state": "ready"}


def test_an_answer_becomes_its_struct_and_newer_fields_are_ignored() -> None:
    view = answer_as({"id": "j", "status": "running", "worker": "w1", "added_later": 1}, JobView,
                     "job j")
    assert (view.id, view.status, view.worker) == ("j", "running", "w1")
    (w,) = answer_as([WORKER], list[WorkerStatus], "workers")
    assert (w.state, w.tags, w.runtimes) == ("ready", ["a"], [])


@pytest.mark.parametrize("answer, type_, problem", [
    ({"job_id": "j", "tag": "t"}, SubmitAnswer, "field `id`"),  # `id` renamed: no silent blank
    ({"id": "j", "status": 3}, JobView, "$.status"),
    ([{**WORKER, "tags": "a"}], list[WorkerStatus], "$[0].tags"),
])
def test_a_renamed_or_mistyped_field_is_an_error_naming_the_answer(answer: object, type_: type,
                                                                   problem: str) -> None:
    with pytest.raises(CliError) as info:
        answer_as(answer, type_, "the submission")
    assert info.value.message.startswith("the submission: the answer does not read as")
    assert problem in info.value.message and "same version" in info.value.message
