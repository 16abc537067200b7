"""Which heartbeats the router believes (services/common/liveworkers.py: key_problem)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.common.liveworkers import key_problem
from shared import subjects
from shared.jobs import WorkerStatus


def _status(worker_id: str, group: str = "default") -> WorkerStatus:
    return WorkerStatus(id=worker_id, group=group, tags=["bash"], tags_source="group",
                        config_version=1, state="ready", hostname="h", pid=1, started_at=0.0,
                        heartbeat_at=0.0)


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_a_key_names_its_user_its_id_and_a_nonce(worker_id: str, nonce: str) -> None:
    key = subjects.heartbeat_key("worker:default", worker_id, nonce)
    assert subjects.heartbeat_parts(key) == ("worker:default", worker_id)
    assert key_problem(key, _status(worker_id)) is None


def test_a_status_under_another_id_or_without_a_nonce_is_not_believed() -> None:
    key = subjects.heartbeat_key("worker:default", "w1", "n")
    assert key_problem(key, _status("w2")) is not None
    assert key_problem(key.rsplit(".", 1)[0], _status("w1")) is not None
    assert key_problem(key + ".x", _status("w1")) is not None
    other_group = subjects.heartbeat_key("worker:gpu", "w1", "n")
    assert key_problem(other_group, _status("w1")) is not None


_tags = st.lists(st.text(min_size=1, max_size=12).filter(
    lambda t: not set(t) & set(",()") and t == t.strip()), min_size=1, max_size=4)
_groups = st.none() | st.from_regex(r"[a-z][a-z0-9_-]{0,11}", fullmatch=True)


@given(_groups, st.none() | _tags)
def test_a_workers_user_names_its_group_and_tags_and_parses_back(group: str | None,
                                                                  tags: list[str] | None) -> None:
    from services.common import natsauth

    if group is None and tags is None:
        return
    user = natsauth.worker_user(group, tags)
    assert natsauth.worker_scope(user) == (group, None if tags is None
                                           else tuple(sorted(set(tags))))


def test_a_tags_worker_may_not_claim_a_group_its_user_does_not_name() -> None:
    from services.common import natsauth

    status = WorkerStatus(id="w", group="gpu", tags=["a"], tags_source="env", config_version=0,
                          state="ready", hostname="h", pid=1, started_at=0.0, heartbeat_at=0.0)
    plain = subjects.heartbeat_key(natsauth.worker_user(None, ["a"]), "w", "n")
    named = subjects.heartbeat_key(natsauth.worker_user("gpu", ["a"]), "w", "n")
    assert key_problem(plain, status) is not None
    assert key_problem(named, status) is None


@given(st.from_regex(r"[A-Za-z0-9]{8,64}", fullmatch=True))
def test_a_heartbeat_key_does_not_show_the_inbox_token(token: str) -> None:
    """Heartbeat keys are listed by routers; an inbox token lets its holder read replies."""
    nonce = subjects.heartbeat_nonce(token)
    assert token not in subjects.heartbeat_key("worker:default", "w", nonce)
    assert nonce == subjects.heartbeat_nonce(token) and len(nonce) == 24
