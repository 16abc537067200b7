"""The fold against a second, deliberately naive reading of the same events, over random
sequences of every command the config service accepts (so every event type). test_state.py
checks commands against a model of groups; here the oracle is independent of `shared.state`'s
fold (`_apply`), so `fold(records) == expected` fails when the fold mishandles any event, and a
log folded from its stored bytes, or in two parts, must give the same state."""

from __future__ import annotations

import typing
from typing import Any

from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from shared import isolation
from shared import state as s
from shared.codec import decode, encode
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound
from shared.events import ConfigEvent, FlowStep, JobLimits, Recorded, event_type
from tests.unit.support import Log

SETTINGS = settings(max_examples=200, deadline=None, database=None)
EVERY_TYPE = {t.__struct_config__.tag for t in typing.get_args(ConfigEvent)}

GROUPS = ["default", "native", "gpu", "g2"]
SPACES = ["main", "ws1"]
PATHS = ["f/a", "f/b"]
TAGS = ["a", "b", "gpu", "deno", "x.y", "é"]

# Each command is a tuple whose first item names the command function it calls.
commands = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(GROUPS), st.dictionaries(
        st.sampled_from(["tags", "init_script", "dedicated", "priorities", "env", "limits",
                         "sandbox", "network"]),
        st.integers(0, 3), max_size=4)),
    st.tuples(st.just("reset"), st.sampled_from(GROUPS), st.sampled_from(["default", "native", "all"])),
    st.tuples(st.just("delete"), st.sampled_from(GROUPS)),
    st.tuples(st.just("deploy"), st.sampled_from(SPACES), st.sampled_from(PATHS),
              st.sampled_from(["bash", "python3", "deno"]), st.sampled_from([None, "gpu", "a"])),
    st.tuples(st.just("lock"), st.sampled_from(SPACES), st.sampled_from(PATHS), st.booleans()),
    st.tuples(st.just("flow"), st.sampled_from(SPACES), st.sampled_from(PATHS),
              st.integers(1, 3), st.sampled_from([None, "b"])),
    st.tuples(st.just("assign"), st.sampled_from(["gpu", "a", "x.y"]),
              st.sampled_from(["", "(main)", "(^ws1)", "(main+ws1)"]), st.booleans()),
    st.tuples(st.just("unassign"), st.sampled_from(["gpu", "a", "x.y"])),
    st.tuples(st.just("token"), st.sampled_from(["t1", "t2"]), st.sampled_from([None, "main"])),
    st.tuples(st.just("revoke"), st.sampled_from(["t1", "t2"])),
)


def _group_fields(state: s.ConfigState, name: str, choice: dict[str, int]) -> dict[str, Any]:
    """Plausible values for the fields drawn (index 0-3 picks among a few, some refused)."""
    group = state.groups.get(name)
    served = list(group.tags) if group else []
    scripts = [f"{w}:{p}" for w, p in (k.split("/", 1) for k in state.scripts)]
    flows = [f"{f.workspace}:flow/{f.path}" for f in state.flows.values()]
    pick: dict[str, list[Any]] = {
        "tags": [["a"], ["a", "b"], ["gpu", "deno", "é"], ["bad,tag"]],
        "init_script": [None, "echo hi", "apt-get install -y jq\n", "   "],
        "dedicated": [[], scripts[:1], (scripts + flows)[:2], ["nowhere:f/x"]],
        "priorities": [{}, {t: 5 for t in served[:1]}, {t: i for i, t in enumerate(served)},
                       {"not-served": 1}],
        "env": [{}, {"DATABASE_URL": "postgres://x"}, {"A": "1", "B": "2"}, {"GO_JOB_ID": "x"}],
        "limits": [{}, {"memory": 64 << 20}, {"processes": 64, "max_timeout": 30}, {"memory": -1}],
        "sandbox": [None, "none", "bwrap", "chroot"],
        "network": [True, False, True, "yes"],
    }
    return {k: pick[k][i] for k, i in choice.items()}


def run_command(state: s.ConfigState, cmd: tuple[Any, ...]) -> list[ConfigEvent]:
    kind = cmd[0]
    if kind == "set":
        return isolation.set_group(state, cmd[1], **_group_fields(state, cmd[1], cmd[2]))
    if kind == "reset":
        return s.reset_group(state, cmd[1], cmd[2])
    if kind == "delete":
        return s.delete_group(state, cmd[1])
    if kind == "deploy":
        return s.deploy_script(state, cmd[1], cmd[2], language=cmd[3], content="echo 1",
                               tag=cmd[4])
    if kind == "lock":
        script = state.scripts.get(s.key(cmd[1], cmd[2]))
        version = script.version if script else 1
        return s.record_lock(state, cmd[1], cmd[2], version=version, requirements=("six",),
                             lock="six==1.16" if cmd[3] else None,
                             error=None if cmd[3] else "no such package", job_id=f"j{version}")
    if kind == "flow":
        steps = [FlowStep(language="bash", content=f"echo {i}") for i in range(cmd[3])]
        if s.key(cmd[1], cmd[2]) in state.scripts:
            steps.append(FlowStep(script=cmd[2], tag="a"))
        return s.deploy_flow(state, cmd[1], cmd[2], steps=steps, tag=cmd[4])
    if kind == "assign":
        return s.set_assignable_tag(state, cmd[1] + cmd[2], replace=cmd[3])
    if kind == "unassign":
        return s.remove_assignable_tag(state, cmd[1])
    if kind == "token":
        return s.create_token(state, cmd[1], workspace=cmd[2], token_hash="h" + cmd[1])
    return s.revoke_token(state, cmd[1])


def run_all(cmds: list[tuple[Any, ...]]) -> Log:
    log = Log()
    log.append(s.seed(log.state))
    for cmd in cmds:
        try:
            log.append(run_command(log.state, cmd))
        except (InvalidInput, NotFound, Conflict, Forbidden):
            continue  # refused: nothing appended, as the service does
    return log


def naive(records: list[Recorded]) -> dict[str, Any]:
    """What the log says, read the simplest way: each field is what the last event that set it
    said; a deploy counts revisions; a lock applies to the version it names."""
    groups: dict[str, dict[str, Any]] = {}
    scripts: dict[str, dict[str, Any]] = {}
    flows: dict[str, dict[str, Any]] = {}
    assignable: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    tokens: dict[str, tuple[str | None, str, int]] = {}
    blank = {"tags": (), "init_script": None, "dedicated": (), "priorities": {}, "env": {},
             "limits": JobLimits(), "sandbox": None, "network": True}
    field_of = {"group.tags_set": ("tags",), "group.init_script_set": ("init_script",),
                "group.dedicated_set": ("targets",), "group.priorities_set": ("priorities",),
                "group.env_set": ("env",), "group.limits_set": ("limits",),
                "group.sandbox_set": ("sandbox", "network")}
    for r in records:
        e, kind = r.event, event_type(r.event)
        if kind == "group.created":
            groups[e.group] = {**blank, "version": r.seq}
        elif kind == "group.deleted":
            groups.pop(e.group, None)
        elif kind in field_of:
            g = groups.setdefault(e.group, dict(blank))
            for name in field_of[kind]:
                g["dedicated" if name == "targets" else name] = getattr(e, name)
            g["version"] = r.seq
        elif kind == "script.deployed":
            k = f"{e.workspace}/{e.path}"
            revision = scripts[k]["revision"] + 1 if k in scripts else 1
            scripts[k] = {"language": e.language, "content": e.content, "tag": e.tag,
                          "version": r.seq, "revision": revision, "lock": None, "lock_error": None}
        elif kind == "script.locked":
            k = f"{e.workspace}/{e.path}"
            if k in scripts and scripts[k]["version"] == e.version:
                scripts[k]["lock"], scripts[k]["lock_error"] = e.lock, e.error
        elif kind == "flow.deployed":
            k = f"{e.workspace}/{e.path}"
            revision = flows[k]["revision"] + 1 if k in flows else 1
            flows[k] = {"steps": e.steps, "tag": e.tag, "version": r.seq, "revision": revision}
        elif kind == "tags.assignable_set":
            assignable[e.tag] = (e.only, e.exclude)
        elif kind == "tags.assignable_removed":
            assignable.pop(e.tag, None)
        elif kind == "token.created":
            tokens[e.name] = (e.workspace, e.token_hash, r.seq)
        elif kind == "token.revoked":
            tokens.pop(e.name, None)
        else:
            raise AssertionError(f"the oracle does not know {kind}: teach it")
    return {"seq": records[-1].seq if records else 0, "groups": groups, "scripts": scripts,
            "flows": flows, "assignable": assignable, "tokens": tokens}


def seen(state: s.ConfigState) -> dict[str, Any]:
    """The folded state in the oracle's terms."""
    return {
        "seq": state.seq,
        "groups": {n: {"tags": g.tags, "init_script": g.init_script, "dedicated": g.dedicated,
                       "priorities": dict(g.priorities), "env": dict(g.env), "limits": g.limits,
                       "sandbox": g.sandbox, "network": g.network, "version": g.version}
                   for n, g in state.groups.items()},
        "scripts": {k: {"language": x.language, "content": x.content, "tag": x.tag,
                        "version": x.version, "revision": x.revision, "lock": x.lock,
                        "lock_error": x.lock_error} for k, x in state.scripts.items()},
        "flows": {k: {"steps": f.steps, "tag": f.tag, "version": f.version,
                      "revision": f.revision} for k, f in state.flows.items()},
        "assignable": {t: (a.only, a.exclude) for t, a in state.assignable.items()},
        "tokens": {n: (t.workspace, t.token_hash, t.created_seq) for n, t in state.tokens.items()},
    }


def types_of(log: Log) -> set[str]:
    return {event_type(r.event) for r in log.records}


@SETTINGS
@given(st.lists(commands, max_size=40), st.data())
def test_the_fold_agrees_with_a_naive_reading_whole_in_parts_and_from_bytes(
        cmds: list[tuple[Any, ...]], data: st.DataObject) -> None:
    log = run_all(cmds)
    records = log.records
    expected = naive(records)
    assert seen(s.fold(records)) == expected
    stored = [decode(encode(r), Recorded) for r in records]  # as the log and stream hold them
    assert seen(s.fold(stored)) == expected
    split = data.draw(st.integers(0, len(records)), label="split")
    assert seen(s.fold(records[split:], s.fold(records[:split]))) == expected


def test_the_generator_reaches_every_event_type() -> None:
    """Each event type comes out of some generated command sequence (else the property above
    says nothing about it)."""
    for kind in sorted(EVERY_TYPE):
        find(st.lists(commands, min_size=8, max_size=30),
             lambda cmds, k=kind: k in types_of(run_all(cmds)),
             settings=settings(max_examples=2000, database=None, phases=[Phase.generate]))


def test_the_oracle_is_not_the_fold() -> None:
    """A fold that mishandled one event type must disagree with the oracle: from a log that has
    every type, drop all events of one type, and the fold of what is left differs from the
    naive reading of the whole log."""
    cmds = [("set", "gpu", {"tags": 2, "init_script": 1, "env": 1, "limits": 1, "sandbox": 2}),
            ("deploy", "main", "f/a", "python3", None), ("lock", "main", "f/a", True),
            ("set", "gpu", {"priorities": 1}),
            ("flow", "main", "f/b", 2, None), ("set", "gpu", {"dedicated": 2, "priorities": 1}),
            ("assign", "gpu", "(main)", False), ("assign", "a", "", False), ("unassign", "gpu"),
            ("token", "t1", "main"), ("token", "t2", None), ("revoke", "t1"),
            ("set", "g2", {"tags": 0}), ("delete", "g2"), ("set", "g2", {}), ("delete", "native")]
    log = run_all(cmds)
    assert types_of(log) == EVERY_TYPE
    whole = naive(log.records)
    assert seen(s.fold(log.records)) == whole
    for kind in sorted(EVERY_TYPE):
        kept = [r for r in log.records if event_type(r.event) != kind]
        assert seen(s.fold(kept)) != whole, f"a fold that ignored {kind} would go unseen"
