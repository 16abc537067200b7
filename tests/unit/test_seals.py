"""Job seals (shared/seals.py): only the holder of a job's key writes events a router believes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared import seals

KEY = b"k" * 43
job_ids = st.text(min_size=1, max_size=64)
bodies = st.binary(max_size=512)


@given(job_ids, bodies)
def test_the_holders_seal_is_believed(job_id: str, body: bytes) -> None:
    hold = seals.hold_key(KEY, job_id)
    assert seals.sealed(hold, body, seals.seal(hold, body))
    assert seals.holds(KEY, job_id, hold)


@given(job_ids, bodies, bodies)
def test_a_seal_does_not_cover_another_body(job_id: str, body: bytes, other: bytes) -> None:
    hold = seals.hold_key(KEY, job_id)
    assert seals.sealed(hold, other, seals.seal(hold, body)) == (body == other)


@given(job_ids, job_ids, bodies)
def test_one_jobs_key_seals_nothing_of_another_job(a: str, b: str, body: bytes) -> None:
    """A worker that held job `a` cannot write job `b`'s events, nor claim to hold it."""
    seal_a = seals.seal(seals.hold_key(KEY, a), body)
    assert seals.sealed(seals.hold_key(KEY, b), body, seal_a) == (a == b)
    assert seals.holds(KEY, b, seals.hold_key(KEY, a)) == (a == b)


@given(job_ids, bodies)
def test_another_router_key_derives_other_keys(job_id: str, body: bytes) -> None:
    mine, theirs = seals.hold_key(KEY, job_id), seals.hold_key(b"x" * 43, job_id)
    assert mine != theirs
    assert not seals.sealed(mine, body, seals.seal(theirs, body))


def test_a_missing_or_empty_seal_or_hold_is_refused() -> None:
    hold = seals.hold_key(KEY, "j1")
    assert not seals.sealed(hold, b"{}", None)
    assert not seals.sealed(hold, b"{}", "")
    assert not seals.holds(KEY, "j1", None)
    assert not seals.holds(KEY, "j1", "")
    assert not seals.sealed(hold, b"{}", "0" * 64)


@given(job_ids, st.text(min_size=1, max_size=40))
def test_an_events_message_id_is_the_holders_alone(job_id: str, name: str) -> None:
    """Anyone may write on a job's subject; under the id the holder will use, JetStream would
    drop the holder's event as a duplicate. The id carries a tag only the holder computes."""
    hold = seals.hold_key(KEY, job_id)
    made = seals.msg_id(hold, name)
    assert made.startswith(name + ":") and made == seals.msg_id(hold, name)  # retries dedupe
    assert made != seals.msg_id(seals.hold_key(b"x" * 43, job_id), name)
