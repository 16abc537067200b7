"""Flow grants (shared/grants.py) and the submission rule (shared/identity.py): a grant verifies
only unchanged and under its key, admits only its flow's planned steps, and the rule a token
gets is the same for HTTP and NATS."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import grants
from shared.errors import Forbidden, Unauthorized
from shared.identity import Identity, authorize_submit, bearer_token
from shared.jobs import JobSubmit

KEY = b"k" * 43
SETTINGS = settings(max_examples=200, deadline=None, database=None)
GRANT = grants.FlowGrant(
    flow="f1", workspace="ws2", admin=False, by="team", token_seq=7,
    steps=(grants.StepGrant("bash", grants.step_digest("bash", "echo a")),
           grants.StepGrant("gpu", grants.step_digest("python3", "def main(): pass"))))
SIGNED = grants.sign(KEY, GRANT)


def step(**change: object) -> JobSubmit:
    base: dict[str, object] = dict(language="bash", code="echo a", tag="bash", workspace="ws2",
                                   parent="f1", step=1)
    return JobSubmit(**{**base, **change})  # type: ignore[arg-type]


def test_a_grant_round_trips_and_admits_its_planned_steps() -> None:
    assert grants.verify(KEY, SIGNED) == GRANT
    grants.check_step(GRANT, step())
    grants.check_step(GRANT, step(language="python3", code="def main(): pass", tag="gpu", step=2,
                                  args={"previous_result": 1}))  # arguments are not bound


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"parent": "f2"}, "parent", "is for flow 'f1'"),
    ({"parent": None}, "parent", "is for flow 'f1'"),
    ({"workspace": "ws1"}, "workspace", "for workspace 'ws2'"),
    ({"step": 3}, "step", "has no step 3"),
    ({"step": None}, "step", "has no step None"),
    ({"tag": "gpu"}, "tag", "planned on tag 'bash'"),
    ({"code": "echo b"}, "code", "not the code"),
    ({"language": "python3"}, "code", "not the code"),
    ({"language": None, "code": None, "path": "f/x"}, "code", "language and code"),
])
def test_a_grant_refuses_anything_it_did_not_plan(change: dict[str, object], field: str,
                                                  words: str) -> None:
    with pytest.raises(Forbidden) as info:
        grants.check_step(GRANT, step(**change))
    assert info.value.field == field and words in info.value.message


@SETTINGS
@given(position=st.integers(min_value=0), char=st.sampled_from("AQgw_-x."))
def test_any_change_to_a_grant_is_refused(position: int, char: str) -> None:
    i = position % len(SIGNED)
    changed = SIGNED[:i] + char + SIGNED[i + 1:]
    if changed == SIGNED:
        return
    try:
        opened = grants.verify(KEY, changed)
    except grants.GrantRefused as exc:
        assert exc.field == "parent" and exc.status == 401
    else:  # base64 padding bits can change without changing the bytes
        assert opened == GRANT


@pytest.mark.parametrize("text", [None, "", "x", "x.y", ".", SIGNED.split(".")[0],
                                  "a" * (grants.MAX_GRANT_CHARS + 1)])
def test_a_missing_or_malformed_grant_is_refused(text: str | None) -> None:
    with pytest.raises(grants.GrantRefused):
        grants.verify(KEY, text)


def test_another_key_signs_nothing_a_router_accepts() -> None:
    with pytest.raises(grants.GrantRefused) as info:
        grants.verify(b"another key of the same length..........", SIGNED)
    assert "signature does not match" in info.value.message


# --- the submission rule of shared/identity.py ----------------------------------------------------


def test_bearer_token() -> None:
    assert bearer_token("Bearer  gow_x ") == "gow_x"
    for bad in (None, "", "gow_x", "bearer gow_x", "Bearer ", "Basic abc"):
        with pytest.raises(Unauthorized):
            bearer_token(bad)


def test_a_workspace_token_submits_only_in_its_workspace_and_never_a_step() -> None:
    team = Identity("team", "ws2", 7)
    assert authorize_submit(team, JobSubmit(language="bash", code=""),
                            workspace_given=False).workspace == "ws2"
    with pytest.raises(Forbidden) as info:
        authorize_submit(team, JobSubmit(language="bash", code="", workspace="ws1"),
                         workspace_given=True)
    assert info.value.field == "workspace"
    with pytest.raises(Forbidden) as info:
        authorize_submit(team, JobSubmit(language="bash", code="", workspace="ws2", parent="f"),
                         workspace_given=True)
    assert info.value.field == "parent"
    admin = Identity("admin")
    sub = JobSubmit(language="bash", code="", workspace="any", parent="f")
    assert admin.admin and authorize_submit(admin, sub, workspace_given=True) is sub
