"""Who may use and see a tag (shared/tagaccess.py), and that the router and the worker apply the
same rule: a job the router refuses for a closed tag is a job a worker refuses on receipt, and
the other way round (services/worker/attempt.py `admission_problem`)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.worker.attempt import admission_problem
from shared.errors import Forbidden
from shared.jobs import Job
from shared.routing import route
from shared.tagaccess import closed_reason, dedicated_owner, visible_to
from shared.tags import format_tag_spec
from tests.unit.support import Log

SETTINGS = settings(max_examples=200, deadline=None, database=None)
POOL = ("dev", "prod", "ws1", "ws2")


def job(tag: str, workspace: str) -> Job:
    return Job(id="j1", workspace=workspace, language="bash", code="", tag=tag,
               submitted_at=time.time())


def test_restrictions_and_dedicated_tags_close_a_tag() -> None:
    state = (Log().assignable("gpu(ws1)", "cpu(^ws2)", "normal-$workspace(dev)")
             .script("f/etl", workspace="ws1").dedicate("fast", "ws1:f/etl").state)
    assert closed_reason(state, "gpu", "ws1") is None
    assert closed_reason(state, "gpu", "ws2") == "tag 'gpu' is not available to workspace 'ws2'"
    assert closed_reason(state, "cpu", "ws2") is not None
    assert closed_reason(state, "cpu", "x") is None
    assert closed_reason(state, "normal-dev", "dev") is None
    assert closed_reason(state, "normal-prod", "prod") is not None  # the template's instance
    assert dedicated_owner(state, "ws1:f/etl") == "ws1" and dedicated_owner(state, "gpu") is None
    assert closed_reason(state, "ws1:f/etl", "ws1") is None
    assert closed_reason(state, "ws1:f/etl", "ws2") == (
        "tag 'ws1:f/etl' is the dedicated tag of a script or flow of workspace 'ws1', not"
        " available to workspace 'ws2'")
    assert closed_reason(state, "ws9:f/x", "ws2") is None  # no group dedicates it: just a name


@pytest.mark.parametrize("admin", [True, False])
def test_another_workspaces_dedicated_tag_is_refused_to_admins_too(admin: bool) -> None:
    state = Log().script("f/etl", workspace="ws1").dedicate("fast", "ws1:f/etl").state
    with pytest.raises(Forbidden) as info:
        route(state, workspace="ws2", args={}, override="ws1:f/etl", language="bash", code="",
              admin=admin)
    assert info.value.field == "tag" and "workspace 'ws1'" in info.value.message
    ok = route(state, workspace="ws1", args={}, override="ws1:f/etl", language="bash", code="",
               admin=True)
    assert ok.tag == "ws1:f/etl"


@SETTINGS
@given(tag=st.sampled_from(["gpu", "eu:pool", "normal-$workspace"]),
       mode=st.sampled_from(["open", "only", "exclude"]),
       names=st.lists(st.sampled_from(POOL), min_size=1, max_size=3, unique=True),
       workspace=st.sampled_from(POOL), dedicated_to=st.sampled_from((None,) + POOL))
def test_the_router_and_the_worker_agree(tag: str, mode: str, names: list[str], workspace: str,
                                         dedicated_to: str | None) -> None:
    only = tuple(names) if mode == "only" else ()
    exclude = tuple(names) if mode == "exclude" else ()
    log = Log().assignable(format_tag_spec(tag, only, exclude))
    if dedicated_to is not None:
        log.script("f/etl", workspace=dedicated_to).dedicate("fast", f"{dedicated_to}:f/etl")
    state = log.state
    candidates = [tag.replace("$workspace", workspace)]
    if dedicated_to is not None:
        candidates.append(f"{dedicated_to}:f/etl")
    for resolved in candidates:
        try:
            route(state, workspace=workspace, args={}, override=resolved, language="bash",
                  code="", admin=True)
            routed = True
        except Forbidden:
            routed = False
        assert (admission_problem(resolved, job(resolved, workspace), state) is None) == routed


def test_the_worker_refuses_a_job_of_another_tag_or_a_bad_workspace() -> None:
    state = Log().state
    assert admission_problem("gpu", job("bash", "ws1"), state) == (
        "it names tag 'bash' but was taken from the queue of tag 'gpu'")
    problem = admission_problem("bash", job("bash", "../x"), state)
    assert problem is not None and problem.startswith("its workspace is not valid")
    assert admission_problem("bash", job("bash", "ws1"), state) is None


def test_a_workspace_sees_the_tags_it_could_use_and_nothing_of_others() -> None:
    state = (Log().assignable("gpu(ws1)", "tmp", "normal-$workspace")
             .script("f/a", workspace="ws2", tag="ws2-own-$workspace")
             .script("f/b", workspace="ws2", tag="by-$args[t]")
             .script("f/etl", workspace="ws1", tag="ws1-secret")
             .dedicate("fast", "ws1:f/etl", "ws2:f/a").state)
    visible = visible_to(state, "ws2")
    shown = {t for t in ("bash", "flow", "gpu", "tmp", "normal-ws2", "normal-ws1",
                         "ws2-own-ws2", "ws1-secret", "ws1:f/etl", "ws2:f/a", "by-x",
                         "admin-only") if visible(t)}
    assert shown == {"bash", "flow", "tmp", "normal-ws2", "ws2-own-ws2", "ws2:f/a"}
    assert visible_to(state, "ws1")("gpu") and visible_to(state, "ws1")("ws1:f/etl")
