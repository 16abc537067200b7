"""Routing of submissions to tags (shared/routing.py): precedence, templates, restrictions, rights.

The spec these tests check (docs/tags.md, worker-groups.md, anchor-behaviour.md):

* A job's tag: job override > dedicated worker > flow tag (every step, unless the flow has
  preserve_step_tags) > step tag > the step script's tag > the language default tag.
  A flow job: override > its dedicated tag > the flow tag > 'flow'.
* `$workspace` / `$args[a.b]` are filled in once; the allow-check runs on the RESOLVED tag.
* `gpu(ws1+ws2)` / `gpu(^ws1^ws2)` restrictions bind everyone, admins included; an assignable
  template `normal-$workspace` covers its instances (`normal-dev` in dev) with its restriction.
* A workspace token (admin=False) may use system tags, assignable tags open to its workspace and
  tags from deployed config (unless they hold `$args[`); `$args[t]` never widens that.

State is built the way services build it: command functions -> events -> sealed records -> fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import Forbidden, InvalidInput, NotFound
from shared.events import FlowStep
from shared.isolation import set_group as set_group_limits
from shared.routing import (
    PlannedStep, Route, TimeoutCap, check_tag_allowed, check_timeout, max_timeout, target_tag,
)
from shared.routing import route as _route
from shared.state import (
    ConfigState,
    deploy_flow,
    deploy_script,
    groups_by_tag,
    remove_assignable_tag,
    set_assignable_tag,
)
from shared.tags import (
    MAX_TAG_LENGTH,
    dedicated_tag,
    format_tag_spec,
    parse_tag_spec,
    validate_tag,
)
from tests.unit.support import WS, Log

SETTINGS = settings(max_examples=150, deadline=None, database=None)
SCRIPT = "f/lib"
FLOW = "f/pipe"
INLINE_STEP_LANGUAGE = "bash"

# Written out by hand (not imported) so the reference functions below are independent of the code.
LANGUAGE_DEFAULTS = (
    "deno", "python3", "go", "bash", "powershell", "bun",
    "nativets", "postgresql", "mysql", "mssql", "graphql", "snowflake", "bigquery",
)
OTHER_LANGUAGES = ("rust", "php", "csharp", "ansible", "Python3", "python", "flow", "dependency")
SYSTEM = LANGUAGE_DEFAULTS + ("other", "flow", "dependency", "hub")


def route(state: ConfigState, **kw: Any) -> Route:
    """`routing.route` as an admin unless the test says otherwise (the product passes `admin`
    explicitly: it is required there)."""
    kw.setdefault("admin", True)
    return _route(state, **kw)


# --- building state -------------------------------------------------------------------------------


def build(
    *, language: str = "python3", script_tag: str | None = None, step_tag: str | None = None,
    flow_tag: str | None = None, preserve: bool = False, dedicated_script: bool = False,
    dedicated_flow: bool = False, assignable: Sequence[str] = ("t-override",),
) -> ConfigState:
    """Workspace `dev`: script f/lib, flow f/pipe = [step a: script f/lib, step b: inline bash];
    both steps carry `step_tag`; optional dedicated group for the script and/or the flow."""
    log = Log().assignable(*assignable)
    log.script(SCRIPT, language=language, tag=script_tag, content="lib code")
    log.flow(FLOW, [
        FlowStep(name="a", script=SCRIPT, tag=step_tag),
        FlowStep(name="b", language=INLINE_STEP_LANGUAGE, content="echo b", tag=step_tag),
    ], tag=flow_tag, preserve=preserve)
    targets = ([f"{WS}:{SCRIPT}"] if dedicated_script else []) + (
        [f"{WS}:flow/{FLOW}"] if dedicated_flow else [])
    if targets:
        log.dedicate("pinned", *targets)
    return log.state


def forbidden(fn: Any, *args: Any, **kwargs: Any) -> Forbidden:
    with pytest.raises(Forbidden) as info:
        fn(*args, **kwargs)
    assert info.value.status == 403
    return info.value


# --- 1. explicit precedence table ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    override: str | None = None
    language: str = "python3"
    script_tag: str | None = None
    step_tag: str | None = None
    flow_tag: str | None = None
    preserve: bool = False
    dedicated_script: bool = False
    dedicated_flow: bool = False
    # expectations: the script run on its own, the flow job, its script step, its inline bash step
    script: str = ""
    flow: str = ""
    step: str | None = ""  # None: not specified by the spec (steps of a dedicated flow)
    inline: str | None = ""


DED_SCRIPT = dedicated_tag(WS, SCRIPT)  # "dev:f/lib"
DED_FLOW = dedicated_tag(WS, FLOW, flow=True)  # "dev:flow/f/pipe"

PRECEDENCE = [
    pytest.param(Case(script="python3", flow="flow", step="python3", inline="bash"),
                 id="nothing-set:language-default-and-flow"),
    pytest.param(Case(language="rust", script="other", flow="flow", step="other", inline="bash"),
                 id="unknown-language:other"),
    pytest.param(Case(language="mssql", script="mssql", flow="flow", step="mssql", inline="bash"),
                 id="native-language:own-name"),
    pytest.param(Case(script_tag="t-script", script="t-script", flow="flow", step="t-script",
                      inline="bash"), id="script-tag>language-default"),
    pytest.param(Case(script_tag="t-script", step_tag="t-step", script="t-script", flow="flow",
                      step="t-step", inline="t-step"), id="step-tag>script-tag"),
    pytest.param(Case(script_tag="t-script", step_tag="t-step", flow_tag="t-flow",
                      script="t-script", flow="t-flow", step="t-flow", inline="t-flow"),
                 id="flow-tag>step-tag"),
    pytest.param(Case(flow_tag="t-flow", script="python3", flow="t-flow", step="t-flow",
                      inline="t-flow"), id="flow-tag>language-default"),
    pytest.param(Case(script_tag="t-script", step_tag="t-step", flow_tag="t-flow", preserve=True,
                      script="t-script", flow="t-flow", step="t-step", inline="t-step"),
                 id="preserve-step-tags:step-tag"),
    pytest.param(Case(script_tag="t-script", flow_tag="t-flow", preserve=True, script="t-script",
                      flow="t-flow", step="t-script", inline="bash"),
                 id="preserve-step-tags:script-tag"),
    pytest.param(Case(language="deno", flow_tag="t-flow", preserve=True, script="deno",
                      flow="t-flow", step="deno", inline="bash"),
                 id="preserve-step-tags:language-default"),
    pytest.param(Case(step_tag="t-step", preserve=True, script="python3", flow="flow",
                      step="t-step", inline="t-step"), id="preserve-without-flow-tag"),
    pytest.param(Case(script_tag="t-script", dedicated_script=True, script=DED_SCRIPT, flow="flow",
                      step=DED_SCRIPT, inline="bash"), id="dedicated-script>script-tag"),
    pytest.param(Case(script_tag="t-script", step_tag="t-step", flow_tag="t-flow",
                      dedicated_script=True, script=DED_SCRIPT, flow="t-flow", step=DED_SCRIPT,
                      inline="t-flow"), id="dedicated-step>flow-tag"),
    pytest.param(Case(step_tag="t-step", flow_tag="t-flow", preserve=True, dedicated_script=True,
                      script=DED_SCRIPT, flow="t-flow", step=DED_SCRIPT, inline="t-step"),
                 id="dedicated-step>preserved-step-tag"),
    pytest.param(Case(flow_tag="t-flow", dedicated_flow=True, script="python3", flow=DED_FLOW,
                      step=None, inline=None), id="dedicated-flow>flow-tag"),
    pytest.param(Case(dedicated_flow=True, script="python3", flow=DED_FLOW, step=None,
                      inline=None), id="dedicated-flow>flow-default"),
    pytest.param(Case(override="t-override", script_tag="t-script", dedicated_script=True,
                      script="t-override", flow="t-override", step="t-override",
                      inline="t-override"), id="override>dedicated-script"),
    pytest.param(Case(override="t-override", flow_tag="t-flow", dedicated_flow=True,
                      script="t-override", flow="t-override", step="t-override",
                      inline="t-override"), id="override>dedicated-flow"),
    pytest.param(Case(override="t-override", step_tag="t-step", flow_tag="t-flow", preserve=True,
                      script="t-override", flow="t-override", step="t-override",
                      inline="t-override"), id="override>preserved-step-tag"),
    pytest.param(Case(override="t-override", language="rust", script="t-override",
                      flow="t-override", step="t-override", inline="t-override"),
                 id="override>language-default"),
]


@pytest.mark.parametrize("admin", [True, False], ids=["admin", "token"])
@pytest.mark.parametrize("case", PRECEDENCE)
def test_precedence_table(case: Case, admin: bool) -> None:
    state = build(language=case.language, script_tag=case.script_tag, step_tag=case.step_tag,
                  flow_tag=case.flow_tag, preserve=case.preserve,
                  dedicated_script=case.dedicated_script, dedicated_flow=case.dedicated_flow)
    common: dict[str, Any] = {"workspace": WS, "args": {}, "override": case.override,
                              "admin": admin}

    script = route(state, path=SCRIPT, **common)
    assert (script.kind, script.tag) == ("script", case.script)

    flow = route(state, path=FLOW, **common)
    assert (flow.kind, flow.tag) == ("flow", case.flow)
    step_a, step_b = flow.steps
    if case.step is not None:
        assert step_a.tag == case.step
    if case.inline is not None:
        assert step_b.tag == case.inline


@pytest.mark.parametrize("language", LANGUAGE_DEFAULTS + OTHER_LANGUAGES)
def test_language_default_for_inline_script_and_step(language: str) -> None:
    expected = language if language in LANGUAGE_DEFAULTS else "other"
    state = build(language=language)
    assert route(state, workspace=WS, args={}, language=language, code="x").tag == expected
    assert route(state, workspace=WS, args={}, path=SCRIPT).tag == expected
    assert route(state, workspace=WS, args={}, path=FLOW).steps[0].tag == expected


def test_dedicated_target_of_another_workspace_does_not_apply() -> None:
    log = Log().script(SCRIPT, workspace="prod", tag="t-script").script(SCRIPT, tag="t-script")
    log.flow(FLOW, [FlowStep(script=SCRIPT)], workspace="prod")
    log.flow(FLOW, [FlowStep(script=SCRIPT)])
    log.dedicate("pinned", f"prod:{SCRIPT}", f"prod:flow/{FLOW}")
    dev_flow = route(log.state, workspace=WS, args={}, path=FLOW)
    assert route(log.state, workspace=WS, args={}, path=SCRIPT).tag == "t-script"
    assert (dev_flow.tag, dev_flow.steps[0].tag) == ("flow", "t-script")
    prod_flow = route(log.state, workspace="prod", args={}, path=FLOW)
    assert route(log.state, workspace="prod", args={}, path=SCRIPT).tag == "prod:f/lib"
    assert (prod_flow.tag, prod_flow.steps[0].tag) == ("prod:flow/f/pipe", "prod:f/lib")


def test_long_dedicated_path_is_hashed_into_a_valid_tag() -> None:
    path = "/".join(["segment" + str(i) for i in range(20)])  # 169 characters
    state = Log().script(path).dedicate("pinned", f"{WS}:{path}").state
    tag = route(state, workspace=WS, args={}, path=path, admin=False).tag
    assert tag == dedicated_tag(WS, path) == target_tag(f"{WS}:{path}")
    assert validate_tag(tag) == tag and len(tag) <= MAX_TAG_LENGTH
    assert tag.startswith(f"{WS}:segment0/")


def test_target_tag() -> None:
    assert target_tag("dev:f/x") == "dev:f/x" == dedicated_tag("dev", "f/x")
    assert target_tag("dev:flow/f/x") == "dev:flow/f/x" == dedicated_tag("dev", "f/x", flow=True)


# --- 2. precedence property -----------------------------------------------------------------------


def expected_default(language: str) -> str:
    return language if language in LANGUAGE_DEFAULTS else "other"


def expected_step_tag(*, override: str | None, dedicated: bool, flow_tag: str | None,
                      preserve: bool, step_tag: str | None, script_tag: str | None,
                      language: str) -> str:
    """The first present item in the precedence order."""
    candidates = [
        override,
        DED_SCRIPT if dedicated else None,
        flow_tag if not preserve else None,
        step_tag,
        script_tag,
        expected_default(language),
    ]
    return next(c for c in candidates if c)


plain_tags = st.from_regex(r"[a-z][a-z0-9_.:-]{0,20}", fullmatch=True)


@SETTINGS
@given(
    names=st.lists(plain_tags, min_size=4, max_size=4, unique=True),
    has_override=st.booleans(), dedicated=st.booleans(), dedicated_flow=st.booleans(),
    has_flow_tag=st.booleans(), preserve=st.booleans(), has_step_tag=st.booleans(),
    has_script_tag=st.booleans(), language=st.sampled_from(LANGUAGE_DEFAULTS + OTHER_LANGUAGES),
    admin=st.booleans(),
)
def test_precedence_property(
    names: list[str], has_override: bool, dedicated: bool, dedicated_flow: bool,
    has_flow_tag: bool, preserve: bool, has_step_tag: bool, has_script_tag: bool, language: str,
    admin: bool,
) -> None:
    override_name, flow_name, step_name, script_name = names
    override = override_name if has_override else None
    flow_tag = flow_name if has_flow_tag else None
    step_tag = step_name if has_step_tag else None
    script_tag = script_name if has_script_tag else None
    state = build(language=language, script_tag=script_tag, step_tag=step_tag, flow_tag=flow_tag,
                  preserve=preserve, dedicated_script=dedicated, dedicated_flow=dedicated_flow,
                  assignable=(override_name,))  # so a workspace token may use the override
    flow = route(state, workspace=WS, args={}, override=override, path=FLOW, admin=admin)
    script = route(state, workspace=WS, args={}, override=override, path=SCRIPT, admin=admin)

    step_a, step_b = flow.steps
    if not dedicated_flow:  # steps of a dedicated flow: not specified
        assert step_a.tag == expected_step_tag(
            override=override, dedicated=dedicated, flow_tag=flow_tag, preserve=preserve,
            step_tag=step_tag, script_tag=script_tag, language=language)
        assert step_b.tag == expected_step_tag(  # inline step: no script, never dedicated
            override=override, dedicated=False, flow_tag=flow_tag, preserve=preserve,
            step_tag=step_tag, script_tag=None, language=INLINE_STEP_LANGUAGE)
    assert script.tag == next(c for c in [
        override, DED_SCRIPT if dedicated else None, script_tag, expected_default(language)] if c)
    assert flow.tag == next(c for c in [
        override, DED_FLOW if dedicated_flow else None, flow_tag, "flow"] if c)


# --- templates on every level ---------------------------------------------------------------------


def test_templates_are_filled_in_for_override_and_deployed_tags() -> None:
    log = Log().script(SCRIPT, tag="s-$workspace-$args[region]")
    log.flow(FLOW, [FlowStep(script=SCRIPT, tag="st-$args[a.b]"),
                    FlowStep(language="go", content="x", tag="n-$args[n]")], preserve=True,
             tag="fl-$workspace")
    args = {"region": "eu", "a": {"b": "deep"}, "n": 3}
    assert route(log.state, workspace=WS, args=args, path=SCRIPT).tag == "s-dev-eu"
    flow = route(log.state, workspace=WS, args=args, path=FLOW)
    assert [flow.tag, *(s.tag for s in flow.steps)] == ["fl-dev", "st-deep", "n-3"]
    over = route(log.state, workspace=WS, args=args, override="o-$workspace-$args[a.b]",
                 path=FLOW)
    assert {over.tag, *(s.tag for s in over.steps)} == {"o-dev-deep"}


def test_argument_text_is_never_reexpanded_and_leftover_placeholders_are_refused() -> None:
    args = {"x": "$workspace", "y": "$args[z]", "z": "no"}
    for override in ("p-$args[x]", "p-$args[y]"):
        with pytest.raises(InvalidInput, match="still holds a placeholder") as info:
            route(ConfigState(), workspace=WS, args=args, override=override, language="bash",
                  code="")
        assert info.value.field == "tag"


@pytest.mark.parametrize(
    ("template", "args", "field"),
    [
        ("p-$args[t]", {}, "args.t"),
        ("p-$args[t]", {"t": None}, "args.t"),
        ("p-$args[a.b]", {"a": {}}, "args.a.b"),
        ("p-$args[a.b]", {"a": {"b": None}}, "args.a.b"),
        ("p-$args[a.b]", {"a": "flat"}, "args.a.b"),
    ],
)
@pytest.mark.parametrize("where", ["override", "script-tag", "step-tag", "flow-tag"])
def test_missing_or_null_argument_raises_naming_it(
    template: str, args: dict[str, Any], field: str, where: str
) -> None:
    log = Log().script(SCRIPT, tag=template if where == "script-tag" else None)
    log.flow(FLOW, [FlowStep(script=SCRIPT, tag=template if where == "step-tag" else None)],
             tag=template if where == "flow-tag" else None)
    path = SCRIPT if where in ("override", "script-tag") else FLOW
    with pytest.raises(InvalidInput) as info:
        route(log.state, workspace=WS, args=args, path=path,
              override=template if where == "override" else None)
    assert info.value.field == field


def test_resolved_tag_is_validated() -> None:
    with pytest.raises(InvalidInput) as info:
        route(ConfigState(), workspace=WS, args={"t": "a,b"}, override="$args[t]",
              language="bash", code="")
    assert info.value.field == "tag"


# --- 3. tag specs ---------------------------------------------------------------------------------


def _valid_tag(tag: str) -> bool:
    try:
        validate_tag(tag)
    except InvalidInput:
        return False
    return True


spec_tags = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_.:$+^-]{0,30}", fullmatch=True),
    st.text(min_size=1, max_size=30).filter(_valid_tag),
)
workspaces = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
workspace_lists = st.lists(workspaces, min_size=1, max_size=5)


@SETTINGS
@given(tag=spec_tags, names=workspace_lists, mode=st.sampled_from(["open", "only", "exclude"]))
def test_tag_spec_round_trip(tag: str, names: list[str], mode: str) -> None:
    only = tuple(names) if mode == "only" else ()
    exclude = tuple(names) if mode == "exclude" else ()
    spec = format_tag_spec(tag, only, exclude)
    assert parse_tag_spec(spec) == (tag, only, exclude)
    assert format_tag_spec(*parse_tag_spec(spec)) == spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gpu", ("gpu", (), ())),
        ("gpu(ws1+ws2)", ("gpu", ("ws1", "ws2"), ())),
        ("gpu(^ws1^ws2)", ("gpu", (), ("ws1", "ws2"))),
        ("gpu(dev)", ("gpu", ("dev",), ())),
        ("normal-$workspace(dev+prod)", ("normal-$workspace", ("dev", "prod"), ())),
    ],
)
def test_parse_tag_spec_examples(spec: str, expected: tuple[str, tuple[str, ...], tuple[str, ...]]
                                 ) -> None:
    assert parse_tag_spec(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["gpu(", "gpu()", "gpu(a^b)", "(ws)", "gpu(ws1+)", "a,b(ws)", "", "gpu)", "gpu(^)",
     "gpu(ws1)(ws2)", "gpu(^ws1+ws2)", "gpu(ws 1)", "gpu(+ws1)", "gpu(ws1^)"],
)
def test_malformed_tag_spec(spec: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_tag_spec(spec)
    assert info.value.field == "spec"
    with pytest.raises(InvalidInput) as info:
        set_assignable_tag(ConfigState(), spec)
    assert info.value.field == "spec"


# --- 4. restrictions ------------------------------------------------------------------------------

POOL = ("dev", "prod", "staging", "ws1", "ws2")


@SETTINGS
@given(
    tag=st.sampled_from(["gpu", "big-mem", "python3", "flow", "eu:pool"]),
    mode=st.sampled_from(["open", "only", "exclude"]),
    names=st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True),
    workspace=st.sampled_from(POOL), admin=st.booleans(), trusted=st.booleans(),
)
def test_restriction_property(tag: str, mode: str, names: list[str], workspace: str, admin: bool,
                              trusted: bool) -> None:
    only = tuple(names) if mode == "only" else ()
    exclude = tuple(names) if mode == "exclude" else ()
    state = Log().assignable(format_tag_spec(tag, only, exclude)).state
    excluded = (mode == "only" and workspace not in names) or (
        mode == "exclude" and workspace in names)

    if excluded:
        err = forbidden(check_tag_allowed, state, tag, tag, workspace, admin=admin,
                        trusted=trusted)
        assert tag in err.message and workspace in err.message
        err = forbidden(route, state, workspace=workspace, args={}, override=tag,
                        language="bash", code="", admin=admin)
        assert tag in err.message and workspace in err.message
    else:
        assert check_tag_allowed(state, tag, tag, workspace, admin=admin, trusted=trusted) is None
        assert route(state, workspace=workspace, args={}, override=tag, language="bash", code="",
                     admin=admin).tag == tag


def test_restriction_binds_deployed_and_dedicated_tags() -> None:
    """A restriction added after the deploy closes the deployed tags at run."""
    log = Log().script(SCRIPT, tag="gpu")
    log.flow(FLOW, [FlowStep(language="bash", content="", tag="gpu")], preserve=True)
    log.assignable("gpu(prod)")
    for path in (SCRIPT, FLOW):
        for admin in (True, False):
            err = forbidden(route, log.state, workspace=WS, args={}, path=path, admin=admin)
            assert "gpu" in err.message and WS in err.message
    # a dedicated tag restricted away from its workspace is refused too
    log = Log().script(SCRIPT).dedicate("pinned", f"{WS}:{SCRIPT}")
    log.assignable(f"{DED_SCRIPT}(^{WS})")
    forbidden(route, log.state, workspace=WS, args={}, path=SCRIPT, admin=True)


def test_deploying_with_a_tag_closed_to_the_workspace_is_refused() -> None:
    log = Log().assignable("gpu(prod)", "pool-$workspace(^dev)")
    for tag in ("gpu", "pool-$workspace"):
        err = forbidden(deploy_script, log.state, WS, SCRIPT, language="bash", content="", tag=tag)
        assert err.field == "tag" and WS in err.message
        step = FlowStep(language="bash", content="", tag=tag)
        err = forbidden(deploy_flow, log.state, WS, FLOW, steps=[step])
        assert err.field == "steps[0].tag"
        err = forbidden(deploy_flow, log.state, WS, FLOW, steps=[FlowStep(script=None,
                        language="bash", content="")], tag=tag)
        assert err.field == "tag"
    # open to prod; and a tag known only at run ($args) is checked then
    assert deploy_script(log.state, "prod", SCRIPT, language="bash", content="", tag="gpu")
    assert deploy_script(log.state, WS, SCRIPT, language="bash", content="", tag="$args[t]")


def test_an_assignable_tags_restriction_changes_only_when_asked() -> None:
    from shared.errors import Conflict

    log = Log().assignable("gpu(ws1+ws2)")
    assert set_assignable_tag(log.state, " gpu(ws1+ws2)") == []  # the same: nothing
    for spec in ("gpu", " gpu", "gpu(^ws3)"):
        with pytest.raises(Conflict) as refused:
            set_assignable_tag(log.state, spec)
        assert refused.value.field == "spec" and "gpu(ws1+ws2)" in refused.value.message
    [event] = set_assignable_tag(log.state, "gpu", replace=True)
    assert (event.only, event.exclude) == ((), ())


def test_removing_an_assignable_tag_closes_it_to_tokens() -> None:
    log = Log().assignable("gpu")
    assert route(log.state, workspace=WS, args={}, override="gpu", language="bash", code="",
                 admin=False).tag == "gpu"
    log.append(remove_assignable_tag(log.state, "gpu"))
    forbidden(route, log.state, workspace=WS, args={}, override="gpu", language="bash", code="",
              admin=False)


# --- who may use what -----------------------------------------------------------------------------


@pytest.mark.parametrize("tag", sorted(set(SYSTEM)))
def test_token_may_use_system_tags(tag: str) -> None:
    assert route(ConfigState(), workspace=WS, args={}, override=tag, language="rust", code="",
                 admin=False).tag == tag


def test_token_may_not_use_an_unknown_override_but_admin_may() -> None:
    err = forbidden(route, ConfigState(), workspace=WS, args={}, override="gpu", language="bash",
                    code="", admin=False)
    assert "gpu" in err.message and WS in err.message
    forbidden(route, ConfigState(), workspace=WS, args={}, override="gpu-$workspace",
              language="bash", code="", admin=False)
    assert route(ConfigState(), workspace=WS, args={}, override="gpu", language="bash", code="",
                 admin=True).tag == "gpu"


@pytest.mark.parametrize("path", [SCRIPT, FLOW])
def test_token_override_on_deployed_code_is_not_trusted(path: str) -> None:
    """The override comes from the request, not from deployed config: it is checked."""
    log = Log().script(SCRIPT, tag="t-script").dedicate("pinned", f"{WS}:{SCRIPT}")
    log.flow(FLOW, [FlowStep(script=SCRIPT, tag="t-step")], tag="t-flow")
    err = forbidden(route, log.state, workspace=WS, args={}, override="gpu", path=path,
                    admin=False)
    assert "gpu" in err.message and WS in err.message
    routed = route(log.state, workspace=WS, args={}, override="gpu", path=path, admin=True)
    assert {routed.tag, *(s.tag for s in routed.steps)} == {"gpu"}


def test_token_trusts_deployed_tags_without_args() -> None:
    log = Log().script(SCRIPT, tag="t-script").script("f/pinned").dedicate("p", f"{WS}:f/pinned")
    log.flow(FLOW, [FlowStep(script=SCRIPT, tag="t-step"), FlowStep(script="f/pinned")],
             tag="t-flow", preserve=True)
    flow = route(log.state, workspace=WS, args={}, path=FLOW, admin=False)
    assert [flow.tag, *(s.tag for s in flow.steps)] == ["t-flow", "t-step", "dev:f/pinned"]
    assert route(log.state, workspace=WS, args={}, path=SCRIPT, admin=False).tag == "t-script"
    assert route(log.state, workspace=WS, args={}, path="f/pinned", admin=False).tag == (
        "dev:f/pinned")


@pytest.mark.parametrize("where", ["script-tag", "step-tag", "flow-tag"])
def test_token_does_not_trust_deployed_tags_with_args(where: str) -> None:
    template = "pool-$args[t]"
    log = Log().assignable("pool-cpu")
    log.script(SCRIPT, tag=template if where == "script-tag" else None)
    log.flow(FLOW, [FlowStep(script=SCRIPT, tag=template if where == "step-tag" else None)],
             tag=template if where == "flow-tag" else None)
    path = SCRIPT if where == "script-tag" else FLOW
    err = forbidden(route, log.state, workspace=WS, args={"t": "secret"}, path=path, admin=False)
    assert "pool-secret" in err.message and WS in err.message
    resolved = route(log.state, workspace=WS, args={"t": "cpu"}, path=path, admin=False)
    assert "pool-cpu" in {resolved.tag, *(s.tag for s in resolved.steps)}
    assert route(log.state, workspace=WS, args={"t": "secret"}, path=path, admin=True)


# --- 5. $args escalation --------------------------------------------------------------------------


def escalation_state() -> ConfigState:
    # `pool-cpu` open to all, `pool-gpu` only for prod; `pool-$args[t]` itself made assignable by
    # an admin (the reference platform then opened every pool through it).
    return Log().assignable("pool-cpu", "pool-gpu(prod)", "pool-$args[t]").state


@pytest.mark.parametrize(
    ("t", "workspace", "admin", "allowed"),
    [
        pytest.param("admin", WS, False, False, id="token-non-assignable:refused"),
        pytest.param("admin", WS, True, True, id="admin-non-assignable:allowed"),
        pytest.param("cpu", WS, False, True, id="token-assignable-open:allowed"),
        pytest.param("cpu", "staging", True, True, id="admin-assignable-open:allowed"),
        pytest.param("gpu", WS, False, False, id="token-restricted-excluded:refused"),
        pytest.param("gpu", WS, True, False, id="admin-restricted-excluded:refused"),
        pytest.param("gpu", "prod", False, True, id="token-restricted-included:allowed"),
        pytest.param("gpu", "prod", True, True, id="admin-restricted-included:allowed"),
    ],
)
def test_args_override_cannot_escalate(t: str, workspace: str, admin: bool, allowed: bool) -> None:
    state = escalation_state()
    kwargs: dict[str, Any] = {"workspace": workspace, "args": {"t": t},
                              "override": "pool-$args[t]", "language": "python3", "code": "",
                              "admin": admin}
    if allowed:
        assert route(state, **kwargs).tag == f"pool-{t}"
    else:
        err = forbidden(route, state, **kwargs)
        assert f"pool-{t}" in err.message and workspace in err.message


def test_args_resolving_to_a_system_tag_is_allowed_for_token() -> None:
    assert route(ConfigState(), workspace=WS, args={"t": "python3"}, override="$args[t]",
                 language="bash", code="", admin=False).tag == "python3"


# --- 6. `normal-$workspace` -----------------------------------------------------------------------


@SETTINGS
@given(workspace=workspaces)
def test_open_workspace_template_serves_every_workspace(workspace: str) -> None:
    log = Log().assignable("normal-$workspace").script(SCRIPT, workspace=workspace,
                                                       tag="normal-$workspace")
    expected = f"normal-{workspace}"
    assert route(log.state, workspace=workspace, args={}, override="normal-$workspace",
                 language="bash", code="", admin=False).tag == expected
    assert route(log.state, workspace=workspace, args={}, path=SCRIPT, admin=False).tag == expected


@pytest.mark.parametrize("admin", [True, False], ids=["admin", "token"])
def test_restricted_workspace_template(admin: bool) -> None:
    log = Log()
    for ws in ("dev", "prod", "staging"):  # deployed before the restriction: checked at run
        log.script(SCRIPT, workspace=ws, tag="normal-$workspace")
    log.assignable("normal-$workspace(dev+prod)")
    for ws in ("dev", "prod"):
        assert route(log.state, workspace=ws, args={}, override="normal-$workspace",
                     language="bash", code="", admin=admin).tag == f"normal-{ws}"
        assert route(log.state, workspace=ws, args={}, path=SCRIPT, admin=admin).tag == (
            f"normal-{ws}")
    for kwargs in ({"override": "normal-$workspace", "language": "bash", "code": ""},
                   {"path": SCRIPT}):
        err = forbidden(route, log.state, workspace="staging", args={}, admin=admin, **kwargs)
        assert "normal-staging" in err.message and "staging" in err.message


def test_token_cannot_reach_another_workspaces_instance() -> None:
    state = Log().assignable("normal-$workspace").state
    for override, args in (("normal-dev", {}), ("$args[t]", {"t": "normal-dev"}),
                           ("normal-$args[w]", {"w": "dev"})):
        err = forbidden(route, state, workspace="staging", args=args, override=override,
                        language="bash", code="", admin=False)
        assert "normal-dev" in err.message and "staging" in err.message


@pytest.mark.parametrize(
    ("override", "args", "admin", "deployed_tag"),
    [
        pytest.param("$args[t]", {"t": "normal-staging"}, True, None, id="admin-args-override"),
        pytest.param("normal-$args[w]", {"w": "staging"}, True, None,
                     id="admin-partial-args-override"),
        pytest.param("normal-staging", {}, True, None, id="admin-literal-override"),
        pytest.param(None, {}, False, "normal-staging", id="token-deployed-literal-tag"),
        pytest.param(None, {"t": "normal-staging"}, True, "$args[t]", id="admin-deployed-args-tag"),
    ],
)
def test_restricted_workspace_template_covers_its_instances_however_reached(
    override: str | None, args: dict[str, Any], admin: bool, deployed_tag: str | None
) -> None:
    state = Log().script(SCRIPT, workspace="staging", tag=deployed_tag).assignable(
        "normal-$workspace(dev+prod)").state  # deployed before the restriction: run-time check
    err = forbidden(route, state, workspace="staging", args=args, override=override, path=SCRIPT,
                    admin=admin)
    assert "normal-staging" in err.message and "staging" in err.message


@pytest.mark.parametrize(
    ("override", "args"),
    [
        pytest.param("normal-dev", {}, id="literal-override"),
        pytest.param("$args[t]", {"t": "normal-dev"}, id="args-override"),
    ],
)
def test_open_workspace_template_covers_own_instance_for_token(override: str, args: dict[str, Any]
                                                               ) -> None:
    state = Log().assignable("normal-$workspace").state
    assert route(state, workspace=WS, args=args, override=override, language="bash", code="",
                 admin=False).tag == "normal-dev"


# --- route(): what runs ---------------------------------------------------------------------------


def test_inline_route() -> None:
    r = route(ConfigState(), workspace=WS, args={}, language="go", code="package main")
    assert r == Route(tag="go", kind="inline", language="go", code="package main")


@pytest.mark.parametrize(
    ("language", "code", "field"),
    [(None, "x", "language"), ("", "x", "language"), ("bash", None, "code"), (None, None,
                                                                             "language")],
)
def test_inline_needs_language_and_code(language: str | None, code: str | None, field: str
                                        ) -> None:
    with pytest.raises(InvalidInput) as info:
        route(ConfigState(), workspace=WS, args={}, language=language, code=code)
    assert info.value.field == field


def test_script_and_flow_routes_carry_code_and_versions() -> None:
    state = build(language="deno", script_tag="t-script", step_tag="t-step")
    script = route(state, workspace=WS, args={}, path=SCRIPT)
    lib = state.scripts[f"{WS}/{SCRIPT}"]
    assert script == Route(tag="t-script", kind="script", language="deno", code="lib code",
                           path=SCRIPT, version=lib.version)
    flow = route(state, workspace=WS, args={}, path=FLOW)
    assert (flow.kind, flow.language, flow.path, flow.version) == (
        "flow", "flow", FLOW, state.flows[f"{WS}/{FLOW}"].version)
    assert flow.steps == (
        PlannedStep(index=1, name="a", language="deno", code="lib code", tag="t-step",
                    path=SCRIPT, script_version=lib.version),
        PlannedStep(index=2, name="b", language="bash", code="echo b", tag="t-step"),
    )


def test_path_lookup_errors_and_kind() -> None:
    log = Log().script("f/both", tag="as-script").script(SCRIPT)
    log.flow("f/both", [FlowStep(script=SCRIPT)], tag="as-flow")
    with pytest.raises(NotFound):
        route(log.state, workspace=WS, args={}, path="f/missing")
    with pytest.raises(NotFound):
        route(log.state, workspace="prod", args={}, path=SCRIPT)
    with pytest.raises(NotFound):
        route(log.state, workspace=WS, args={}, path=SCRIPT, kind="flow")
    with pytest.raises(InvalidInput) as info:
        route(log.state, workspace=WS, args={}, path="f/both")
    assert info.value.field == "kind"
    assert route(log.state, workspace=WS, args={}, path="f/both", kind="script").tag == "as-script"
    assert route(log.state, workspace=WS, args={}, path="f/both", kind="flow").tag == "as-flow"


# --- max_timeout: the longest a job may ask for -------------------------------------------------


def _limited(*groups: tuple[str, tuple[str, ...], float | None]) -> Log:
    """Groups (name, tags, max_timeout or None for the default)."""
    log = Log()
    for name, tags, limit in groups:
        log.append(set_group_limits(log.state, name, tags=list(tags),
                                    limits={} if limit is None else {"max_timeout": limit}))
    return log


def test_max_timeout_is_the_default_when_no_group_serves_the_tag() -> None:
    cap = max_timeout(ConfigState(), "gpu")
    assert cap == TimeoutCap(tag="gpu", seconds=86400.0)
    assert cap.describe() == "the default max_timeout 86400 s (no worker group serves tag gpu)"


def test_max_timeout_is_the_smallest_of_the_serving_groups() -> None:
    log = _limited(("big", ("gpu", "cpu"), 7200), ("small", ("gpu",), 3600),
                   ("plain", ("gpu", "io"), None), ("other", ("cpu",), 60))
    gpu = max_timeout(log.state, "gpu")
    assert (gpu.seconds, gpu.group, gpu.explicit) == (3600.0, "small", True)
    assert gpu.describe() == "max_timeout 3600 s of group small (serving tag gpu)"
    assert max_timeout(log.state, "cpu").group == "other"
    io = max_timeout(log.state, "io")  # served by a group without its own limit
    assert (io.seconds, io.group, io.explicit) == (86400.0, "plain", False)
    assert io.describe() == "the default max_timeout 86400 s of group plain (serving tag io)"
    # The index a router keeps gives the same answer.
    assert max_timeout(log.state, "gpu", groups_by_tag(log.state)) == gpu


def test_on_a_tie_the_group_that_set_the_limit_is_named() -> None:
    log = _limited(("a-default", ("t",), None), ("b-set", ("t",), 86400), ("c-set", ("t",), 86400))
    cap = max_timeout(log.state, "t")
    assert (cap.group, cap.explicit) == ("b-set", True)


def test_dedicated_tags_are_capped_by_their_dedicated_group() -> None:
    log = Log().script(SCRIPT)
    log.append(set_group_limits(log.state, "pinned", dedicated=[f"{WS}:{SCRIPT}"],
                                limits={"max_timeout": 120}))
    tag = route(log.state, workspace=WS, args={}, path=SCRIPT).tag
    assert max_timeout(log.state, tag).seconds == 120.0


@pytest.mark.parametrize("admin", [True, False])
def test_check_timeout_refuses_above_the_cap_for_every_token(admin: bool) -> None:
    log = _limited(("gpu", ("gpu",), 3600)).assignable("gpu")
    r = route(log.state, workspace=WS, args={}, language="bash", code="x", override="gpu",
              admin=admin)
    for ok in (None, 1.0, 3600.0):
        check_timeout(log.state, r, ok)
    with pytest.raises(InvalidInput) as info:
        check_timeout(log.state, r, 7200.0)
    assert (info.value.field, info.value.message) == (
        "timeout", "timeout 7200 s is above max_timeout 3600 s of group gpu (serving tag gpu)")
    with pytest.raises(InvalidInput) as info:
        check_timeout(log.state, r, 3600.25)
    assert info.value.message.startswith("timeout 3600.25 s is above")


def test_a_deployed_scripts_timeout_counts_unless_the_job_gives_one() -> None:
    log = _limited(("gpu", ("t-gpu",), 600))
    log.append(deploy_script(log.state, WS, SCRIPT, language="bash", content="x", tag="t-gpu",
                             timeout=900))
    r = route(log.state, workspace=WS, args={}, path=SCRIPT)
    assert r.timeout == 900
    with pytest.raises(InvalidInput) as info:
        check_timeout(log.state, r, None)
    assert info.value.message.startswith("timeout 900 s is above max_timeout 600 s of group gpu")
    check_timeout(log.state, r, 600.0)  # the job's own timeout wins over the script's
    with pytest.raises(InvalidInput):
        check_timeout(log.state, r, 601.0)


def test_a_flow_is_refused_when_a_step_would_be() -> None:
    log = _limited(("gpu", ("t-gpu",), 600), ("flows", ("flow",), 86400))
    log.append(deploy_script(log.state, WS, SCRIPT, language="bash", content="x", tag="t-gpu",
                             timeout=900))
    log.flow(FLOW, [FlowStep(name="prep", language="bash", content="x"),
                    FlowStep(name="train", script=SCRIPT)])
    r = route(log.state, workspace=WS, args={}, path=FLOW)
    with pytest.raises(InvalidInput) as info:
        check_timeout(log.state, r, None)
    assert (info.value.field, info.value.message) == ("timeout", (
        "timeout 900 s of step 2 (train) is above max_timeout 600 s of group gpu (serving tag"
        " t-gpu)"))
    # A step without its own timeout gets the flow's, as the flow runner submits it.
    log.append(deploy_script(log.state, WS, SCRIPT, language="bash", content="x", tag="t-gpu"))
    r = route(log.state, workspace=WS, args={}, path=FLOW)
    check_timeout(log.state, r, None)
    check_timeout(log.state, r, 600.0)
    with pytest.raises(InvalidInput) as info:
        check_timeout(log.state, r, 700.0)
    assert "of step 2 (train)" in info.value.message


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.tuples(st.sampled_from(["g1", "g2", "g3", "g4"]),
                          st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True),
                          st.none() | st.floats(1.0, 86400.0)), max_size=6),
       st.sampled_from(["a", "b", "c", "z"]))
def test_max_timeout_property(groups: list[tuple[str, list[str], float | None]], tag: str) -> None:
    """The cap is exactly the smallest effective max_timeout of the groups listening to the tag
    (the default when none does), and a timeout is accepted exactly when it is at most that."""
    log = Log()
    for name, tags, limit in groups:
        log.append(set_group_limits(log.state, name, tags=tags,
                                    limits={} if limit is None else {"max_timeout": limit}))
    serving = [g for g in log.state.groups.values() if tag in g.tags]
    expected = min((g.limits.max_timeout or 86400.0 for g in serving), default=86400.0)
    cap = max_timeout(log.state, tag)
    assert cap.seconds == expected
    assert (cap.group is None) == (not serving)
    r = Route(tag=tag, kind="inline", language="bash", code="x")
    check_timeout(log.state, r, expected)
    with pytest.raises(InvalidInput):
        check_timeout(log.state, r, expected + 0.5)


# --- dependency jobs and locks (shared/pydeps.py, services/config/locks.py) -----------------------


def test_a_dependency_job_is_admin_only_and_goes_to_the_dependency_tag() -> None:
    log = Log().script("f/deps", content="import yaml\n")
    code = "import yaml\n"
    got = route(log.state, workspace=WS, args={}, path="f/deps", kind="dependency",
                language="python3", code=code, admin=True)
    assert (got.tag, got.kind, got.code, got.lock) == ("dependency", "dependency", code, None)
    # a router that has not folded the deploy yet still routes it: the code comes with it
    unknown = route(ConfigState(), workspace=WS, args={}, path="f/new", kind="dependency",
                    language="python3", code=code, admin=True)
    assert unknown.tag == "dependency"
    with pytest.raises(Forbidden):
        route(log.state, workspace=WS, args={}, path="f/deps", kind="dependency",
              language="python3", code=code, admin=False)


def test_runs_carry_their_versions_lock_and_a_failed_lock_refuses_them() -> None:
    from shared.errors import DependenciesFailed
    from shared.state import record_lock

    log = Log().script("f/deps", content="import yaml\n")
    version = log.state.scripts[f"{WS}/f/deps"].version
    log.append(record_lock(log.state, WS, "f/deps", version=version, requirements=("pyyaml",),
                           lock="pyyaml==6.0\n", error=None, job_id="j1"))
    assert route(log.state, workspace=WS, args={}, path="f/deps").lock == "pyyaml==6.0\n"
    # a repeat of the same outcome records nothing; a lock of an older version changes nothing
    assert record_lock(log.state, WS, "f/deps", version=version, requirements=("pyyaml",),
                       lock="pyyaml==6.0\n", error=None, job_id="j1") == []
    log.script("f/deps", content="import requests\n")
    assert record_lock(log.state, WS, "f/deps", version=version, requirements=(),
                       lock="x==1\n", error=None, job_id="j0") == []
    assert route(log.state, workspace=WS, args={}, path="f/deps").lock is None  # not locked yet
    new = log.state.scripts[f"{WS}/f/deps"].version
    log.append(record_lock(log.state, WS, "f/deps", version=new, requirements=("requests",),
                           lock=None, error="no solution: requests", job_id="j2"))
    with pytest.raises(DependenciesFailed) as refused:
        route(log.state, workspace=WS, args={}, path="f/deps")
    assert "no solution: requests" in refused.value.message and "j2" in refused.value.message
    with pytest.raises(InvalidInput):
        record_lock(log.state, WS, "f/deps", version=new, requirements=(), lock=None, error=None,
                    job_id=None)


def test_the_same_restriction_in_another_order_is_no_change() -> None:
    log = Log().assignable("gpu(ws1+ws2)")
    assert set_assignable_tag(log.state, "gpu(ws2+ws1)") == []


# --- flow steps on a dedicated tag run as the script's own jobs (warm) -------------------------


def _step_route(state: ConfigState, step_index: int) -> Route:
    """Route the flow, then submit its planned step as the flow runner does (inline, planned)."""
    flow = route(state, workspace=WS, args={}, path=FLOW, kind="flow")
    step = flow.steps[step_index]
    return route(state, workspace=WS, args={}, override=step.tag, language=step.language,
                 code=step.code, planned=True)


def test_a_step_on_its_scripts_dedicated_tag_is_that_scripts_job() -> None:
    state = build(dedicated_script=True)
    step = _step_route(state, 0)
    assert (step.tag, step.kind, step.path) == (DED_SCRIPT, "script", SCRIPT)
    assert step.version == state.scripts[f"{WS}/{SCRIPT}"].version


def test_steps_stay_inline_unless_dedicated_and_the_same_code() -> None:
    plain = _step_route(build(), 0)
    assert (plain.kind, plain.path) == ("inline", None)
    inline_step = _step_route(build(dedicated_script=True), 1)  # inline bash on its own tag
    assert (inline_step.kind, inline_step.path) == ("inline", None)
    state = build(dedicated_script=True)
    other = route(state, workspace=WS, args={}, override=DED_SCRIPT, language="python3",
                  code="other code", planned=True)
    assert (other.kind, other.path) == ("inline", None)  # other code never joins the runtime
    unplanned = route(state, workspace=WS, args={}, override=DED_SCRIPT, language="python3",
                      code="lib code")
    assert (unplanned.kind, unplanned.path) == ("inline", None)  # an admin's inline job
