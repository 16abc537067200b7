"""The config fold and the command functions (shared/state.py)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import Conflict, InvalidInput, NotFound
from shared.events import (
    GENESIS_HASH,
    ConfigEvent,
    GroupCreated,
    GroupDeleted,
    GroupInitScriptSet,
    GroupPrioritiesSet,
    GroupTagsSet,
    Recorded,
    seal,
    verify_chain,
)
from shared.state import (
    MAX_INIT_SCRIPT_BYTES,
    ConfigState,
    GroupConfig,
    delete_group,
    evolve,
    fold,
    groups_by_tag,
    reset_group,
    seed,
    set_group,
)
from shared.tags import PRESETS, validate_group_name, validate_tags

SETTINGS = settings(max_examples=150, deadline=None, database=None)
TIME = "2024-01-01T00:00:00Z"


def seal_all(
    events: Sequence[ConfigEvent], *, start_seq: int = 1, prev_hash: str = GENESIS_HASH
) -> list[Recorded]:
    """Seal events into Recorded envelopes with consecutive sequences and chained hashes."""
    out: list[Recorded] = []
    for i, event in enumerate(events):
        rec = seal(prev_hash=prev_hash, seq=start_seq + i, id=f"ev-{start_seq + i}", time=TIME,
                   actor="test", reason=None, event=event)
        out.append(rec)
        prev_hash = rec.hash
    return out


class Log:
    """A tiny in-memory config log: apply command results, keep records and the folded state."""

    def __init__(self) -> None:
        self.records: list[Recorded] = []
        self.state = ConfigState()

    def append(self, events: Sequence[ConfigEvent]) -> list[Recorded]:
        prev = self.records[-1].hash if self.records else GENESIS_HASH
        recs = seal_all(events, start_seq=self.state.seq + 1, prev_hash=prev)
        for rec in recs:
            self.state = evolve(self.state, rec)
        self.records += recs
        return recs


def seeded() -> Log:
    log = Log()
    log.append(seed(ConfigState()))
    return log


# --- seed -----------------------------------------------------------------------------------------


def test_seed_events() -> None:
    assert seed(ConfigState()) == [
        GroupCreated(group="default"),
        GroupTagsSet(group="default", tags=PRESETS["default"]),
        GroupCreated(group="native"),
        GroupTagsSet(group="native", tags=PRESETS["native"]),
    ]


def test_fold_of_seed_gives_default_and_native_groups() -> None:
    records = seal_all(seed(ConfigState()))
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert records[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    assert verify_chain(records) is None

    state = fold(records)
    assert state.seq == 4
    assert state.groups == {
        "default": GroupConfig(name="default", tags=PRESETS["default"], init_script=None,
                               version=2),
        "native": GroupConfig(name="native", tags=PRESETS["native"], init_script=None, version=4),
    }


def test_seed_on_a_non_empty_log_does_nothing() -> None:
    log = seeded()
    assert seed(log.state) == []


# --- set_group ------------------------------------------------------------------------------------


def test_set_group_creates_a_group_with_tags() -> None:
    log = seeded()
    events = set_group(log.state, "gpu", tags=["gpu", "cuda", "gpu"])
    assert events == [GroupCreated(group="gpu"), GroupTagsSet(group="gpu", tags=("gpu", "cuda"))]
    log.append(events)
    assert log.state.seq == 6
    assert log.state.groups["gpu"] == GroupConfig(name="gpu", tags=("gpu", "cuda"), version=6)
    assert log.state.groups["default"].version == 2  # untouched


def test_set_group_without_fields_only_creates() -> None:
    assert set_group(ConfigState(), "empty") == [GroupCreated(group="empty")]


def test_set_group_is_idempotent() -> None:
    log = seeded()
    log.append(set_group(log.state, "gpu", tags=["a", "b"], init_script="echo hi"))
    assert set_group(log.state, "gpu", tags=["a", "b"], init_script="echo hi") == []
    assert set_group(log.state, "gpu", tags=("a", "b", "a")) == []
    assert set_group(log.state, "gpu") == []
    assert set_group(log.state, "default", tags=list(PRESETS["default"])) == []


def test_set_group_emits_only_changed_fields() -> None:
    log = seeded()
    log.append(set_group(log.state, "gpu", tags=["a"], init_script="echo 1"))
    assert set_group(log.state, "gpu", tags=["a"], init_script="echo 2") == [
        GroupInitScriptSet(group="gpu", init_script="echo 2")
    ]
    assert set_group(log.state, "gpu", tags=["b"], init_script="echo 1") == [
        GroupTagsSet(group="gpu", tags=("b",))
    ]
    assert set_group(log.state, "gpu", tags=[]) == [GroupTagsSet(group="gpu", tags=())]


def test_init_script_set_and_remove() -> None:
    log = seeded()
    events = set_group(log.state, "default", init_script="apt-get install -y jq\n")
    assert events == [GroupInitScriptSet(group="default", init_script="apt-get install -y jq\n")]
    log.append(events)
    assert log.state.groups["default"].init_script == "apt-get install -y jq\n"
    assert log.state.groups["default"].version == 5
    assert log.state.groups["default"].tags == PRESETS["default"]

    removal = set_group(log.state, "default", init_script=None)
    assert removal == [GroupInitScriptSet(group="default", init_script=None)]
    log.append(removal)
    assert log.state.groups["default"].init_script is None
    assert log.state.groups["default"].version == 6
    # Removing again, or "removing" with a blank script, changes nothing.
    assert set_group(log.state, "default", init_script=None) == []
    assert set_group(log.state, "default", init_script="  \n\t") == []


def test_blank_init_script_removes_an_existing_one() -> None:
    log = seeded()
    log.append(set_group(log.state, "native", init_script="echo hi"))
    assert set_group(log.state, "native", init_script="   ") == [
        GroupInitScriptSet(group="native", init_script=None)
    ]


def test_init_script_limits() -> None:
    state = ConfigState()
    assert set_group(state, "g", init_script="x" * MAX_INIT_SCRIPT_BYTES)[1] == GroupInitScriptSet(
        group="g", init_script="x" * MAX_INIT_SCRIPT_BYTES
    )
    with pytest.raises(InvalidInput) as info:
        set_group(state, "g", init_script="é" * (MAX_INIT_SCRIPT_BYTES // 2 + 1))
    assert info.value.field == "init_script"
    with pytest.raises(InvalidInput) as info:
        set_group(state, "g", init_script=42)
    assert info.value.field == "init_script"


@pytest.mark.parametrize("name", ["", "Bad", "-x", "a" * 64, "a.b"])
def test_set_group_rejects_bad_names(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        set_group(ConfigState(), name, tags=["a"])
    assert info.value.field == "group"


def test_set_group_rejects_bad_tags() -> None:
    with pytest.raises(InvalidInput) as info:
        set_group(ConfigState(), "g", tags=["ok", "a,b"])
    assert info.value.field == "tags[1]"
    with pytest.raises(InvalidInput):
        set_group(ConfigState(), "g", tags="gpu")


# --- optimistic concurrency -----------------------------------------------------------------------


def test_expected_version_matches() -> None:
    log = seeded()
    assert set_group(log.state, "default", tags=["x"], expected_version=2) == [
        GroupTagsSet(group="default", tags=("x",))
    ]
    assert set_group(log.state, "new", expected_version=0) == [GroupCreated(group="new")]
    assert delete_group(log.state, "native", expected_version=4) == [GroupDeleted(group="native")]


@pytest.mark.parametrize(
    "call",
    [
        lambda s: set_group(s, "default", tags=["x"], expected_version=1),
        lambda s: set_group(s, "default", tags=["x"], expected_version=0),
        lambda s: set_group(s, "new", tags=["x"], expected_version=3),
        lambda s: reset_group(s, "native", "default", expected_version=3),
        lambda s: delete_group(s, "default", expected_version=4),
    ],
)
def test_expected_version_mismatch_is_a_conflict(call: Any) -> None:
    log = seeded()
    with pytest.raises(Conflict) as info:
        call(log.state)
    assert info.value.status == 409
    assert info.value.code == "conflict"
    assert info.value.field == "expected_version"


# --- delete_group / reset_group -------------------------------------------------------------------


def test_delete_group() -> None:
    log = seeded()
    events = delete_group(log.state, "native")
    assert events == [GroupDeleted(group="native")]
    log.append(events)
    assert set(log.state.groups) == {"default"}
    assert log.state.seq == 5
    assert "mssql" not in groups_by_tag(log.state)


def test_delete_missing_group_is_not_found() -> None:
    log = seeded()
    with pytest.raises(NotFound) as info:
        delete_group(log.state, "gpu")
    assert info.value.status == 404
    assert info.value.field == "group"
    log.append(delete_group(log.state, "native"))
    with pytest.raises(NotFound):
        delete_group(log.state, "native")


def test_deleted_group_can_be_recreated_from_scratch() -> None:
    log = seeded()
    log.append(set_group(log.state, "gpu", tags=["a"], init_script="echo"))
    log.append(delete_group(log.state, "gpu"))
    events = set_group(log.state, "gpu", tags=["b"])
    assert events == [GroupCreated(group="gpu"), GroupTagsSet(group="gpu", tags=("b",))]
    log.append(events)
    assert log.state.groups["gpu"] == GroupConfig(name="gpu", tags=("b",), version=log.state.seq)


def test_reset_group_presets() -> None:
    log = seeded()
    assert reset_group(log.state, "default", "default") == []
    assert reset_group(log.state, "default", "native") == [
        GroupTagsSet(group="default", tags=PRESETS["native"])
    ]
    with pytest.raises(NotFound) as missing:  # a typo creates no group
        reset_group(log.state, "gpu", "all")
    assert missing.value.field == "group" and "'gpu' does not exist" in missing.value.message
    assert reset_group(log.state, "gpu", "all", create=True) == [
        GroupCreated(group="gpu"), GroupTagsSet(group="gpu", tags=PRESETS["all"])
    ]


def test_priorities_name_tags_the_group_listens_to() -> None:
    log = seeded()
    with pytest.raises(InvalidInput) as refused:
        set_group(log.state, "default", priorities={"notatag": 5})
    assert refused.value.field == "priorities.notatag" and "does not listen" in refused.value.message
    assert set_group(log.state, "default", priorities={"python3": 5})
    assert set_group(log.state, "gpu", tags=["gpu"], priorities={"gpu": 9})  # in one change


@pytest.mark.parametrize("preset", ["", "Default", "none", "gpu"])
def test_reset_group_rejects_unknown_preset(preset: str) -> None:
    log = seeded()
    with pytest.raises(InvalidInput) as info:
        reset_group(log.state, "default", preset)
    assert info.value.field == "preset"
    assert "default" in info.value.message and "native" in info.value.message


# --- groups_by_tag --------------------------------------------------------------


def test_groups_by_tag() -> None:
    log = seeded()
    index = groups_by_tag(log.state)
    assert set(index) == set(PRESETS["all"])
    assert index["deno"] == ("default",)
    assert index["mssql"] == ("native",)
    log.append(set_group(log.state, "gpu", tags=["cuda", "deno"]))
    log.append(set_group(log.state, "a-first", tags=["deno"]))
    index = groups_by_tag(log.state)
    assert index["deno"] == ("a-first", "default", "gpu")
    assert index["cuda"] == ("gpu",)
    assert groups_by_tag(ConfigState()) == {}


# --- property tests over random command sequences -------------------------------------------------

UNSET: Any = object()
NAMES = ["default", "native", "gpu", "g-2"]
TAG_POOL = ["a", "b", "gpu", "deno", "x y", "é", "$w", "a.b"]

tag_lists = st.one_of(
    st.lists(st.sampled_from(TAG_POOL), max_size=5),
    st.just(["ok", "bad,tag"]),  # rejected: exercises the error path
)
init_scripts = st.one_of(st.none(), st.sampled_from(["echo hi", "  ", "apt-get install -y jq\n"]))
expectations = st.sampled_from(["none", "none", "current", "stale"])

commands = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(NAMES), st.one_of(st.just(UNSET), tag_lists),
              st.one_of(st.just(UNSET), init_scripts), expectations),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), expectations),
    st.tuples(st.just("reset"), st.sampled_from(NAMES),
              st.sampled_from(["default", "native", "all", "bogus"]), expectations),
)


def _expected_version(state: ConfigState, name: str, how: str) -> int | None:
    current = state.groups[name].version if name in state.groups else 0
    return {"none": None, "current": current, "stale": current + 1}[how]


def run_command(state: ConfigState, cmd: tuple[Any, ...]) -> list[ConfigEvent]:
    kind, name = cmd[0], cmd[1]
    expected = _expected_version(state, name, cmd[-1])
    if kind == "set":
        kwargs: dict[str, Any] = {}
        if cmd[2] is not UNSET:
            kwargs["tags"] = cmd[2]
        if cmd[3] is not UNSET:
            kwargs["init_script"] = cmd[3]
        return set_group(state, name, expected_version=expected, **kwargs)
    if kind == "delete":
        return delete_group(state, name, expected_version=expected)
    return reset_group(state, name, cmd[2], expected_version=expected)


def run_all(cmds: list[tuple[Any, ...]]) -> Log:
    log = Log()
    log.append(seed(log.state))
    for cmd in cmds:
        try:
            events = run_command(log.state, cmd)
        except (InvalidInput, NotFound, Conflict):
            continue
        log.append(events)
    return log


@SETTINGS
@given(st.lists(commands, max_size=25), st.data())
def test_fold_is_deterministic_and_composes(
    cmds: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    log = run_all(cmds)
    records = log.records
    assert verify_chain(records) is None
    whole = fold(records)
    assert whole == log.state
    assert fold(records) == whole  # deterministic
    assert fold(list(records)) == fold(iter(records))
    split = data.draw(st.integers(min_value=0, max_value=len(records)), label="split")
    assert fold(records[split:], fold(records[:split])) == whole
    # fold does not mutate the state it starts from
    prefix = fold(records[:split])
    snapshot = ConfigState(seq=prefix.seq, groups=dict(prefix.groups))
    fold(records[split:], prefix)
    assert prefix == snapshot


@SETTINGS
@given(st.lists(commands, max_size=25))
def test_state_invariants_after_any_command_sequence(cmds: list[tuple[Any, ...]]) -> None:
    log = run_all(cmds)
    state = log.state
    assert state.seq == len(log.records)
    for name, group in state.groups.items():
        assert group.name == name
        assert validate_group_name(name) == name
        assert validate_tags(list(group.tags)) == group.tags
        assert 0 < group.version <= state.seq
        last = [r.seq for r in log.records if r.event.group == name][-1]
        assert group.version == last
        assert group.init_script is None or group.init_script.strip()


@dataclass
class ModelGroup:
    tags: tuple[str, ...] = ()
    init_script: str | None = None
    version: int = 0


@SETTINGS
@given(st.lists(commands, max_size=25))
def test_commands_match_a_simple_model(cmds: list[tuple[Any, ...]]) -> None:
    """Each command either raises the error the model predicts or moves state as the model does."""
    log = seeded()
    model = {
        "default": ModelGroup(tags=PRESETS["default"], version=2),
        "native": ModelGroup(tags=PRESETS["native"], version=4),
    }
    for cmd in cmds:
        kind, name, how = cmd[0], cmd[1], cmd[-1]
        before = log.state
        exists = name in model
        try:
            events = run_command(before, cmd)
        except NotFound:  # delete and reset act on a group that exists (a typo creates none)
            assert kind in ("delete", "reset") and not exists
            assert not (kind == "reset" and cmd[2] == "bogus")  # the preset is checked first
            continue
        except Conflict:
            assert how == "stale"
            assert not (kind in ("delete", "reset") and not exists)
            continue
        except InvalidInput as exc:
            assert (kind == "set" and cmd[2] == ["ok", "bad,tag"]) or (
                kind == "reset" and cmd[2] == "bogus"
            ), exc
            continue
        assert how != "stale", "a stale expected_version must conflict"
        log.append(events)
        touched = bool(events)
        if kind == "delete":
            del model[name]
        else:
            group = model.setdefault(name, ModelGroup())
            if kind == "reset":
                group.tags = PRESETS[cmd[2]]
            else:
                if cmd[2] is not UNSET:
                    group.tags = tuple(dict.fromkeys(cmd[2]))
                if cmd[3] is not UNSET:
                    group.init_script = cmd[3] if cmd[3] and cmd[3].strip() else None
            if touched:
                group.version = log.state.seq
        assert touched or before == log.state
        assert set(log.state.groups) == set(model)
        for gname, mg in model.items():
            got = log.state.groups[gname]
            assert (got.tags, got.init_script, got.version) == (mg.tags, mg.init_script, mg.version)
        # Re-running a successful set/reset is a no-op: commands are idempotent.
        if kind != "delete":
            again = (cmd[0], cmd[1], *cmd[2:-1], "none")
            assert run_command(log.state, again) == []


def test_priorities_of_tags_a_change_removes_go_with_them() -> None:
    log = seeded()
    log.append(set_group(log.state, "gpu", tags=["gpu", "cuda"], priorities={"gpu": 5, "cuda": 2}))
    events = set_group(log.state, "gpu", tags=["cuda"])
    assert GroupPrioritiesSet(group="gpu", priorities={"cuda": 2}) in events
    log.append(events)
    assert log.state.groups["gpu"].priorities == {"cuda": 2}
