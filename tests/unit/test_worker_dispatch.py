"""The order a worker tries its tags in (services/worker/dispatcher.py)."""

from __future__ import annotations

from services.worker.dispatcher import order_tags

TAGS = ["a", "b", "c", "d"]


def test_between_sweeps_only_hot_tags_are_tried() -> None:
    assert order_tags(TAGS, {}, set(), rotation=0, sweep=False) == []
    assert order_tags(TAGS, {}, {"c"}, rotation=0, sweep=False) == ["c"]


def test_a_sweep_tries_every_tag_hot_ones_first() -> None:
    assert order_tags(TAGS, {}, {"c"}, rotation=0, sweep=True) == ["c", "a", "b", "d"]


def test_priority_beats_hot_and_is_exact() -> None:
    prio = {"d": 10, "b": 5, "x": 99}  # a tag not listened to changes nothing
    assert order_tags(TAGS, prio, {"a", "c"}, rotation=0, sweep=True) == ["d", "b", "a", "c"]
    assert order_tags(TAGS, prio, {"a", "d"}, rotation=0, sweep=False) == ["d", "a"]
    assert order_tags(TAGS, {"a": -1}, set(), rotation=0, sweep=True) == ["b", "c", "d", "a"]


def test_equal_tags_take_turns() -> None:
    firsts = [order_tags(TAGS, {}, set(TAGS), rotation=r, sweep=False)[0] for r in range(8)]
    assert firsts == ["a", "b", "c", "d", "a", "b", "c", "d"]
    # Turns apply among equals only: the higher priority still leads every time.
    leads = {order_tags(TAGS, {"c": 1}, set(TAGS), rotation=r, sweep=False)[0] for r in range(8)}
    assert leads == {"c"}


def test_no_tags() -> None:
    assert order_tags([], {"a": 1}, {"a"}, rotation=3, sweep=True) == []


def test_a_sweep_under_way_keeps_its_untried_tags() -> None:
    """A sweep stops at the first job it finds; its untried tags stay candidates for the next
    free slot, after the hot ones (issue 17: eight tags with a backlog each drained back to
    back, not one tag per sweep interval)."""
    assert order_tags(TAGS, {}, {"a"}, rotation=0, sweep=False, unswept={"c", "d"}) == [
        "a", "c", "d"]
    assert order_tags(TAGS, {"d": 3}, set(), rotation=0, sweep=False, unswept={"b", "d"}) == [
        "d", "b"]
