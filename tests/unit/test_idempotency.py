"""Idempotency keys (shared/idempotency.py): which job a key names, and what a repeat must match."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import idempotency
from shared.errors import InvalidInput
from shared.jobs import JobSubmit

KEY = b"k" * 32
printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
                    max_size=idempotency.MAX_KEY_CHARS)


@given(printable)
def test_every_printable_ascii_key_up_to_255_characters_is_taken_as_it_is(key: str) -> None:
    assert idempotency.check_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there", "nul\0", "\x7f"])
def test_other_keys_are_refused_naming_the_header(key: str) -> None:
    with pytest.raises(InvalidInput) as err:
        idempotency.check_key(key)
    assert err.value.field == "Idempotency-Key"


@given(printable, printable)
def test_a_key_names_one_id_per_workspace_generation_and_origin(key: str, other: str) -> None:
    job_id = idempotency.job_id(KEY, "ws1", key)
    assert job_id == idempotency.job_id(KEY, "ws1", key) and len(job_id) == 32
    int(job_id, 16)
    variants = {
        idempotency.job_id(KEY, "ws2", key), idempotency.job_id(KEY, "ws1", key, 1),
        idempotency.job_id(KEY, "ws1", key, planned=True), idempotency.job_id(b"j" * 32, "ws1", key)}
    assert job_id not in variants and len(variants) == 4
    if other != key:
        assert idempotency.job_id(KEY, "ws1", other) != job_id


def test_the_same_request_spelled_differently_has_one_digest() -> None:
    a = JobSubmit(language="bash", code="echo", args={"a": 1, "b": 2}, workspace="ws1")
    b = JobSubmit(workspace="ws1", args={"b": 2, "a": 1}, code="echo", language="bash")
    c = JobSubmit(language="bash", code="echo!", args={"a": 1, "b": 2}, workspace="ws1")
    assert idempotency.digest(a) == idempotency.digest(b) != idempotency.digest(c)


def test_a_repeat_must_be_the_first_request() -> None:
    idempotency.check_repeat("k", "d1", "d1")
    idempotency.check_repeat("k", None, "d1")  # a job with no job.queued left: taken as it
    with pytest.raises(idempotency.IdempotencyConflict) as err:
        idempotency.check_repeat("k", "d1", "d2")
    assert err.value.status == 409 and err.value.code == "idempotency_conflict"
