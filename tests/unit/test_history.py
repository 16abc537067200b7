"""Pure history helpers: points in time, summaries, diffs."""

from __future__ import annotations

import pytest

from shared.errors import InvalidInput
from shared.events import GroupTagsSet, ScriptDeployed, TokenCreated
from shared.history import Point, diff_states, summarize
from shared.state import ConfigState, GroupConfig, Script


@pytest.mark.parametrize("text", ["¹", "١٢", "yesterday", "12:00", "", "2026-13-01"])
def test_bad_points_are_invalid_input_not_crashes(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Point.parse(text, field="at")
    assert info.value.field == "at"


def test_points_parse_sequences_and_times() -> None:
    assert Point.parse("42").seq == 42
    p = Point.parse("2026-11-28T10:32:00+01:00")
    assert p.time == "2026-11-28T09:32:00.000000Z"
    assert p.includes(5, "2026-11-28T09:31:59.999999Z") and not p.includes(5, "2026-11-28T09:32:01.000000Z")
    assert Point.parse("2026-11-28").time == "2026-11-28T00:00:00.000000Z"


def test_summaries_and_diffs_read_well() -> None:
    assert summarize(GroupTagsSet(group="gpu", tags=("a", "b"))) == "group gpu tags = a, b"
    assert summarize(TokenCreated(name="t", workspace=None, token_hash="x")) == "token t created for admin"
    assert summarize(ScriptDeployed(workspace="w", path="f/x", language="bash", content="")) \
        == "script w/f/x deployed (bash, tag default)"
    a = ConfigState(groups={"g": GroupConfig(name="g", tags=("a",))})
    b = ConfigState(groups={"g": GroupConfig(name="g", tags=("a", "b"), init_script="x\ny")},
                    scripts={"w/f": Script(workspace="w", path="f", language="bash",
                                           content="echo " * 1000, timeout=None)})
    changes = diff_states(a, b)
    assert "~ group g: tags [a] -> [a, b]" in changes
    assert "~ group g: init_script null -> <2 lines>" in changes
    added = [c for c in changes if c.startswith("+ script w/f")][0]
    assert "echo" not in added and "timeout" not in added
