"""Config events: codec round trips, forward compatibility and the hash chain (shared/events.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union, get_args

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import subjects
from shared.codec import decode, encode
from shared.errors import InvalidInput
from shared.events import (
    GENESIS_HASH,
    AssignableTagRemoved,
    TokenCreated,
    TokenRevoked,
    GroupEnvSet,
    GroupLimitsSet,
    GroupSandboxSet,
    JobLimits,
    AssignableTagSet,
    ConfigEvent,
    FlowDeployed,
    FlowStep,
    GroupCreated,
    GroupDedicatedSet,
    GroupDeleted,
    GroupInitScriptSet,
    GroupPrioritiesSet,
    GroupTagsSet,
    Recorded,
    ScriptDeployed,
    ScriptLocked,
    chain_hash,
    event_type,
    seal,
    subject_for,
    verify_chain,
)
from shared.state import ApiToken, AssignableTag, Flow, GroupConfig, Script, fold

SETTINGS = settings(max_examples=150, deadline=None, database=None)
FIXTURE = Path(__file__).parent / "fixtures" / "events_v1.jsonl"
TIME = "2024-05-01T12:00:00.000000Z"

EVENT_TYPES: set[type] = set(get_args(ConfigEvent))
EVENT_TAGS: set[str] = {t.__struct_config__.tag for t in EVENT_TYPES}

ALL_EVENTS: list[ConfigEvent] = [
    GroupCreated(group="gpu"),
    GroupTagsSet(group="gpu", tags=("gpu", "cuda", "é", "a.b", "normal-$workspace")),
    GroupTagsSet(group="gpu", tags=()),
    GroupInitScriptSet(group="gpu", init_script="apt-get install -y jq\n"),
    GroupInitScriptSet(group="gpu", init_script=None),
    GroupDedicatedSet(group="gpu", targets=("dev:f/hello", "dev:flow/f/pipe")),
    GroupPrioritiesSet(group="gpu", priorities={"gpu": 255, "cuda": 1}),
    GroupPrioritiesSet(group="gpu"),
    GroupDeleted(group="gpu"),
    ScriptDeployed(workspace="dev", path="f/hello", language="bash", content="echo hi\n",
                   tag="gpu"),
    ScriptDeployed(workspace="dev", path="f/x", language="python3", content=""),
    FlowDeployed(workspace="dev", path="f/pipe",
                 steps=(FlowStep(script="f/hello"),
                        FlowStep(name="two", language="bash", content="echo", tag="cuda")),
                 tag="gpu", preserve_step_tags=True),
    AssignableTagSet(tag="gpu", only=("dev", "prod")),
    AssignableTagSet(tag="arm", exclude=("sandbox",)),
    AssignableTagRemoved(tag="arm"),
    TokenCreated(name="team-a", workspace="dev", token_hash="ab" * 32),
    TokenCreated(name="ops", token_hash="cd" * 32),
    TokenRevoked(name="ops"),
    GroupEnvSet(group="gpu", env={"CUDA_HOME": "/usr/local/cuda", "EMPTY": ""}),
    GroupLimitsSet(group="gpu", limits=JobLimits(memory=2**29, processes=64, max_timeout=60.0)),
    GroupLimitsSet(group="gpu"),
    GroupSandboxSet(group="gpu", sandbox="none", network=False),
    GroupSandboxSet(group="gpu"),
    ScriptLocked(workspace="dev", path="f/x", version=3, requirements=("humanize>=4",),
                 lock="humanize==4.9.0 --hash=sha256:ab\n", job_id="j1"),
    ScriptLocked(workspace="dev", path="f/x", version=3, error="no solution", job_id="j2"),
]


def seal_all(events: list[ConfigEvent], *, actor: str = "test") -> list[Recorded]:
    prev = GENESIS_HASH
    out: list[Recorded] = []
    for i, event in enumerate(events, 1):
        rec = seal(prev_hash=prev, seq=i, id=f"ev-{i}", time=TIME, actor=actor,
                   reason=None if i % 2 else f"reason {i}", event=event)
        out.append(rec)
        prev = rec.hash
    return out


# --- strategies -----------------------------------------------------------------------------------

names = st.text(min_size=1, max_size=12)
short = st.text(max_size=10)
opt_short = st.one_of(st.none(), short)
flow_steps = st.builds(FlowStep, name=opt_short, script=opt_short, language=opt_short,
                       content=opt_short, tag=opt_short)
config_events: st.SearchStrategy[ConfigEvent] = st.one_of(
    st.builds(GroupCreated, group=names),
    st.builds(GroupTagsSet, group=names, tags=st.lists(short, max_size=4).map(tuple)),
    st.builds(GroupInitScriptSet, group=names,
              init_script=st.one_of(st.none(), st.text(max_size=40))),
    st.builds(GroupDeleted, group=names),
    st.builds(GroupDedicatedSet, group=names, targets=st.lists(short, max_size=3).map(tuple)),
    st.builds(GroupPrioritiesSet, group=names,
              priorities=st.dictionaries(short, st.integers(1, 255), max_size=3)),
    st.builds(ScriptDeployed, workspace=short, path=short, language=short,
              content=st.text(max_size=40), tag=opt_short),
    st.builds(ScriptLocked, workspace=short, path=short, version=st.integers(0, 50),
              requirements=st.lists(short, max_size=2).map(tuple), lock=opt_short,
              error=opt_short, job_id=opt_short),
    st.builds(FlowDeployed, workspace=short, path=short,
              steps=st.lists(flow_steps, max_size=3).map(tuple), tag=opt_short,
              preserve_step_tags=st.booleans()),
    st.builds(AssignableTagSet, tag=short, only=st.lists(short, max_size=2).map(tuple),
              exclude=st.lists(short, max_size=2).map(tuple)),
    st.builds(AssignableTagRemoved, tag=short),
    st.builds(TokenCreated, name=short, workspace=opt_short, token_hash=short),
    st.builds(TokenRevoked, name=short),
    st.builds(GroupEnvSet, group=short, env=st.dictionaries(short, short, max_size=3)),
    st.builds(GroupLimitsSet, group=short, limits=st.builds(
        JobLimits, memory=st.one_of(st.none(), st.integers(1, 2**40)),
        cpu_seconds=st.one_of(st.none(), st.integers(1, 10**6)),
        processes=st.one_of(st.none(), st.integers(1, 10**5)),
        file_size=st.one_of(st.none(), st.integers(1, 2**40)),
        max_timeout=st.one_of(st.none(), st.floats(1, 10**6)))),
    st.builds(GroupSandboxSet, group=short, sandbox=st.sampled_from([None, "bwrap", "none"]),
              network=st.booleans()),
)
records: st.SearchStrategy[Recorded] = st.builds(
    Recorded,
    seq=st.integers(min_value=1, max_value=2**53),
    id=st.text(max_size=32),
    time=st.text(max_size=32),
    actor=st.text(max_size=16),
    reason=st.one_of(st.none(), st.text(max_size=20)),
    prev_hash=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    hash=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    event=config_events,
)


# --- codec round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: f"{event_type(e)}")
def test_every_event_type_round_trips(event: ConfigEvent) -> None:
    rec = seal(prev_hash=GENESIS_HASH, seq=1, id="x", time=TIME, actor="a", reason=None,
               event=event)
    data = encode(rec)
    assert json.loads(data)["event"]["type"] == event_type(event)
    back = decode(data, Recorded)
    assert back == rec
    assert type(back.event) is type(event)
    assert verify_chain([back]) is None


def test_every_event_type_is_covered() -> None:
    """A new event type must be added to ALL_EVENTS, the strategy and the v1 fixture."""
    assert {type(e) for e in ALL_EVENTS} == EVENT_TYPES
    assert {event_type(e) for e in ALL_EVENTS} == EVENT_TAGS
    assert len(EVENT_TAGS) == len(EVENT_TYPES)  # tags are unique


@SETTINGS
@given(records)
def test_any_record_round_trips(rec: Recorded) -> None:
    assert decode(encode(rec), Recorded) == rec
    assert decode(encode(rec).decode(), Recorded) == rec


@SETTINGS
@given(config_events)
def test_any_event_round_trips_alone(event: ConfigEvent) -> None:
    assert decode(encode(event), ConfigEvent) == event


def test_subject_for() -> None:
    assert subject_for(GroupCreated(group="gpu")) == "go.config.group.gpu"
    assert subject_for(GroupDeleted(group="a.b")) == subjects.group_subject("a.b") == (
        "go.config.group.a_2Eb"
    )
    assert subject_for(GroupTagsSet(group="x", tags=())) == subject_for(GroupDeleted(group="x"))
    assert subject_for(GroupPrioritiesSet(group="x")) == "go.config.group.x"
    assert subject_for(ScriptDeployed(workspace="dev", path="f/a.b", language="bash",
                                      content="")) == "go.config.script.dev.f_2Fa_2Eb"
    assert subject_for(FlowDeployed(workspace="dev", path="f/p", steps=())) == (
        "go.config.flow.dev.f_2Fp"
    )
    assert subject_for(AssignableTagSet(tag="gpu")) == subjects.CONFIG_TAGS_SUBJECT
    assert subject_for(AssignableTagRemoved(tag="gpu")) == subjects.CONFIG_TAGS_SUBJECT
    assert subject_for(TokenRevoked(name="x")) == subjects.CONFIG_TOKENS_SUBJECT
    for event in ALL_EVENTS:  # every event lands inside the config stream's subjects
        subject = subject_for(event)
        assert subject.startswith("go.config.") and "*" not in subject and ">" not in subject


# --- forward compatibility ------------------------------------------------------------------------


def _record_dict(event: ConfigEvent) -> dict[str, Any]:
    rec = seal(prev_hash=GENESIS_HASH, seq=1, id="x", time=TIME, actor="a", reason="r", event=event)
    return json.loads(encode(rec))


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: f"{event_type(e)}")
def test_unknown_fields_are_ignored(event: ConfigEvent) -> None:
    original = _record_dict(event)
    newer = json.loads(json.dumps(original))
    newer["event"]["color"] = "blue"
    newer["event"]["labels"] = {"a": [1, 2]}
    newer["trace_id"] = "abc"
    newer["signature"] = None
    back = decode(json.dumps(newer), Recorded)
    assert back == decode(json.dumps(original), Recorded)
    assert back.event == event


def test_newer_schema_version_number_still_decodes() -> None:
    d = _record_dict(GroupCreated(group="gpu"))
    d["event"]["v"] = 2
    back = decode(json.dumps(d), Recorded)
    assert back.event == GroupCreated(group="gpu", v=2)


def test_a_newer_schema_version_is_skipped_not_misread() -> None:
    """`v` is read: an event whose meaning a newer writer changed (its `v` raised) is skipped by
    readers of this version, like a type they do not know; the same event at the version they
    know is folded, and so is an older one."""
    from shared.events import KNOWN_VERSIONS, decode_known
    from shared.state import fold

    assert set(KNOWN_VERSIONS.values()) == {1}  # no event has changed meaning yet
    d = _record_dict(GroupCreated(group="gpu"))
    assert decode_known(json.dumps(d).encode()) is not None
    d["event"]["v"] = 2
    assert decode_known(json.dumps(d).encode()) is None
    d["event"]["v"] = 0
    rec = decode_known(json.dumps(d).encode())
    assert rec is not None and "gpu" in fold([rec]).groups


@pytest.mark.parametrize("type_", ["group.renamed", "GROUP.CREATED", "", "job.queued"])
def test_unknown_event_type_is_invalid_input(type_: str) -> None:
    d = _record_dict(GroupCreated(group="gpu"))
    d["event"]["type"] = type_
    with pytest.raises(InvalidInput) as info:
        decode(json.dumps(d), Recorded)
    assert info.value.field == "event.type"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["event"].pop("type"),
        lambda d: d["event"].pop("group"),
        lambda d: d.pop("hash"),
        lambda d: d.__setitem__("seq", "1"),
        lambda d: d["event"].__setitem__("group", 5),
    ],
    ids=["no-type", "no-group", "no-hash", "seq-as-string", "group-as-int"],
)
def test_malformed_records_are_invalid_input(mutate: Any) -> None:
    d = _record_dict(GroupCreated(group="gpu"))
    mutate(d)
    with pytest.raises(InvalidInput):
        decode(json.dumps(d), Recorded)


def test_malformed_json_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        decode(b'{"seq": 1,', Recorded)


# --- stored v1 events must keep decoding ----------------------------------------------------------


def _fixture_lines() -> list[str]:
    lines = [line for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines, "fixture is empty"
    return lines


def test_v1_fixture_decodes_and_folds() -> None:
    recs = [decode(line, Recorded) for line in _fixture_lines()]
    assert [r.seq for r in recs] == list(range(1, len(recs) + 1))
    assert {event_type(r.event) for r in recs} == EVENT_TAGS  # one line (at least) per type
    assert recs[0].actor == "operator" and recs[0].reason == "new GPU pool"
    state = fold(recs)
    assert state.seq == 20
    assert state.groups == {
        "gpu": GroupConfig(
            name="gpu", tags=("gpu", "cuda-12", "normal-$workspace", "é"),
            init_script="apt-get install -y jq\n", dedicated=("dev:f/hello",),
            priorities={"cuda-12": 200, "gpu": 10}, env={"CUDA_HOME": "/usr/local/cuda"},
            limits=JobLimits(memory=536870912, cpu_seconds=600, processes=256,
                             file_size=1073741824, max_timeout=3600.0),
            sandbox="bwrap", network=False, version=19,
        )
    }
    assert state.scripts == {
        "dev/f/hello": Script(workspace="dev", path="f/hello", language="bash",
                              content="echo hello\n", tag="gpu", version=4, revision=1,
                              lock_error="uv could not resolve: nosuchpkg was not found",
                              lock_job="j-20"),
    }
    assert state.flows == {
        "dev/f/pipeline": Flow(
            workspace="dev", path="f/pipeline",
            steps=(FlowStep(name="first", script="f/hello"),
                   FlowStep(name="second", language="python3",
                            content="def main():\n    return 1\n", tag="cuda-12")),
            tag=None, preserve_step_tags=True, version=5, revision=1,
        ),
    }
    assert state.assignable == {"gpu": AssignableTag(tag="gpu", only=("dev", "prod"))}
    assert state.tokens == {"team-a": ApiToken(name="team-a", workspace="dev",
                                               token_hash="ab" * 32, created_seq=14)}


def test_v1_fixture_hash_chain_still_verifies() -> None:
    """The chain covers the stored bytes, so stored v1 logs keep verifying whatever decodes them."""
    lines = _fixture_lines()
    assert verify_chain([line.encode() for line in lines]) is None
    assert decode(lines[0], Recorded).prev_hash == GENESIS_HASH


# A later schema as the events.py evolution rule allows ("add fields with defaults only").
class GroupCreatedV2(msgspec.Struct, frozen=True, kw_only=True, tag_field="type",
                     tag="group.created"):
    v: int = 1
    group: str
    color: str = "blue"


ConfigEventV2 = Union[tuple(  # type: ignore[valid-type]  # noqa: UP007
    GroupCreatedV2 if t is GroupCreated else t for t in get_args(ConfigEvent)
)]


class RecordedV2(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    id: str
    time: str
    actor: str
    reason: str | None = None
    prev_hash: str
    hash: str
    event: ConfigEventV2


def test_chain_written_by_newer_schema_verifies_in_this_version() -> None:
    newer = seal(prev_hash=GENESIS_HASH, seq=1, id="x", time=TIME, actor="a", reason=None,
                 event=GroupCreatedV2(group="gpu", color="red"))  # type: ignore[arg-type]
    stored = encode(newer)
    read_here = decode(stored, Recorded)
    assert read_here.event == GroupCreated(group="gpu")  # the known part decodes fine...
    assert verify_chain([stored]) is None  # ...and the stored bytes still verify
    assert verify_chain([stored.replace(b"red", b"blu")]) == 1  # while tampering is caught


def test_v1_fixture_verifies_after_adding_a_defaulted_field() -> None:
    lines = _fixture_lines()
    recs = [decode(line, RecordedV2) for line in lines]
    assert isinstance(recs[0].event, GroupCreatedV2) and recs[0].event.color == "blue"
    assert verify_chain([line.encode() for line in lines]) is None


# --- verify_chain ---------------------------------------------------------------------------------


def test_verify_chain_intact() -> None:
    recs = seal_all(ALL_EVENTS)
    assert verify_chain(recs) is None
    assert verify_chain([]) is None
    for j in range(1, len(recs)):
        assert verify_chain(recs[j:], prev_hash=recs[j - 1].hash, start_seq=j + 1) is None
        assert verify_chain(recs[j:], start_seq=j + 1) == j + 1  # wrong prev hash
        assert verify_chain(recs[j:], prev_hash=recs[j - 1].hash) == 1  # wrong start seq


def test_chain_hash_covers_every_field() -> None:
    base: dict[str, Any] = {
        "prev_hash": GENESIS_HASH, "seq": 1, "id": "i", "time": TIME, "actor": "a",
        "reason": None, "event_bytes": encode(GroupCreated(group="g")),
    }
    h = chain_hash(**base)
    assert len(h) == 64 and int(h, 16) >= 0
    for key, other in [("prev_hash", "1" * 64), ("seq", 2), ("id", "j"), ("time", "t"),
                       ("actor", "b"), ("reason", "r"),
                       ("event_bytes", encode(GroupDeleted(group="g"))),
                       ("event_bytes", encode(GroupCreated(group="h"))),
                       ("event_bytes", encode(GroupCreated(group="g", v=2)))]:
        assert chain_hash(**{**base, key: other}) != h, key


def _tamper_content(rec: Recorded, which: str) -> Recorded:
    changes: dict[str, Any] = {
        "event": GroupCreated(group="evil"),
        "actor": rec.actor + "!",
        "id": rec.id + "!",
        "time": "1999-01-01T00:00:00Z",
        "reason": (rec.reason or "") + "!",
    }
    return msgspec.structs.replace(rec, **{which: changes[which]})


@SETTINGS
@given(st.data())
def test_verify_chain_finds_the_first_bad_record(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=8), label="n")
    events = [data.draw(config_events.filter(lambda e: getattr(e, "group", None) != "evil"))
              for _ in range(n)]
    recs = seal_all(events)
    assert verify_chain(recs) is None

    kinds = ["content", "hash", "prev_hash"]
    if n >= 2:
        kinds += ["swap", "drop", "reseal", "duplicate"]
    kind = data.draw(st.sampled_from(kinds), label="kind")
    last = n - 1 if kind in {"content", "hash", "prev_hash"} else n - 2
    k = data.draw(st.integers(min_value=0, max_value=last), label="k")
    tampered = list(recs)
    if kind == "content":
        which = data.draw(st.sampled_from(["event", "actor", "id", "time", "reason"]),
                          label="field")
        tampered[k] = _tamper_content(recs[k], which)
        expected = k + 1
    elif kind == "hash":
        tampered[k] = msgspec.structs.replace(recs[k], hash="f" * 64)
        expected = k + 1
    elif kind == "prev_hash":
        tampered[k] = msgspec.structs.replace(recs[k], prev_hash="e" * 64)
        expected = k + 1
    elif kind == "swap":
        tampered[k], tampered[k + 1] = tampered[k + 1], tampered[k]
        expected = k + 1
    elif kind == "drop":
        del tampered[k]
        expected = k + 1
    elif kind == "duplicate":
        tampered.insert(k + 1, recs[k])
        expected = k + 2
    else:  # reseal: a consistent forgery of one record is caught by the next one's prev_hash
        old = recs[k]
        tampered[k] = seal(prev_hash=old.prev_hash, seq=old.seq, id=old.id, time=old.time,
                           actor=old.actor + "!", reason=old.reason, event=old.event)
        assert verify_chain(tampered[: k + 1]) is None
        expected = k + 2
    assert verify_chain(tampered) == expected
