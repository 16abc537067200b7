"""The words a worker logs for a hot reload (services/worker/changes.py)."""

from __future__ import annotations

from services.worker.changes import describe_change, describe_limits
from shared.events import JobLimits
from shared.state import GroupConfig


def test_describe_change() -> None:
    a = GroupConfig(name="g", tags=("a", "b"), init_script=None, version=1)
    b = GroupConfig(name="g", tags=("b", "d", "c"), init_script="echo", version=2)
    assert describe_change(a, b) == ["tags added: c, d", "tags removed: a", "init script changed"]
    assert describe_change(b, a) == ["tags added: a", "tags removed: c, d", "init script changed"]
    assert describe_change(a, a) == []
    assert describe_change(None, None) == []
    assert describe_change(None, a) == ["tags added: a, b", "group created"]
    assert describe_change(a, None) == ["tags removed: a, b", "group deleted"]
    assert describe_change(b, None) == [
        "tags removed: b, c, d", "init script changed", "group deleted",
    ]
    assert describe_change(None, GroupConfig(name="g")) == ["group created"]


def test_limits_sandbox_priorities_and_env_are_named() -> None:
    a = GroupConfig(name="g", tags=("a",))
    b = GroupConfig(name="g", tags=("a",), limits=JobLimits(memory=1024, max_timeout=2.5),
                    priorities={"a": 3}, env={"K": "v"}, sandbox="bwrap", network=False)
    assert describe_change(a, b) == ["env: K", "priorities: a=3", "limits: memory=1024,max_timeout=2.5",
                                     "sandbox: bwrap, network off"]
    assert describe_change(b, a) == ["env: none", "priorities: none", "limits: default",
                                     "sandbox: worker default, network on"]
    assert describe_limits(JobLimits()) == "default"
