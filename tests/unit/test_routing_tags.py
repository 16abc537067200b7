"""Tag templates as the router resolves them (shared/routing.py: `route`): an explicit tag or
the language default, `$workspace` and `$args[...]` filled once, the result validated. The
router's resolution is the only one; these tests drive it through `route` on an empty config as
an admin (nothing restricted, every tag assignable)."""

from __future__ import annotations

from typing import Any, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import InvalidInput
from shared.routing import route
from shared.state import ConfigState
from shared.tags import MAX_TAG_LENGTH, default_tag, fill_template, validate_tag

SETTINGS = settings(max_examples=150, deadline=None, database=None)


def resolve_tag(*, language: str, workspace: str, args: Mapping[str, Any],
                override: str | None = None) -> str:
    """The tag the router gives an inline job."""
    return route(ConfigState(), workspace=workspace, args=args, override=override,
                 language=language, code="true", admin=True).tag


def test_override_wins_over_language_default() -> None:
    assert resolve_tag(language="python3", workspace="dev", args={}, override="gpu") == "gpu"
    assert resolve_tag(language="python3", workspace="dev", args={}) == "python3"
    assert resolve_tag(language="cobol", workspace="dev", args={}) == "other"
    assert resolve_tag(language="bash", workspace="dev", args={}, override=None) == "bash"


def test_workspace_substitution() -> None:
    assert resolve_tag(language="bash", workspace="dev", args={}, override="normal-$workspace") == (
        "normal-dev"
    )
    assert fill_template("$workspace/$workspace", workspace="w1", args={}) == "w1/w1"


@pytest.mark.parametrize(
    ("template", "args", "expected"),
    [
        ("gpu-$args[region]", {"region": "eu"}, "gpu-eu"),
        ("$args[a.b]", {"a": {"b": "deep"}}, "deep"),
        ("$args[a.b.c]-x", {"a": {"b": {"c": "z"}}}, "z-x"),
        ("n$args[n]", {"n": 3}, "n3"),
        ("f$args[f]", {"f": 1.5}, "f1.5"),
        ("b-$args[b]", {"b": True}, "b-true"),
        ("b-$args[b]", {"b": False}, "b-false"),
        ("o-$args[o]", {"o": {"k": "v"}}, 'o-{"k":"v"}'),
        ("o-$args[o]", {"o": {}}, "o-{}"),
        ("$args[x]-$args[y]", {"x": "1", "y": "2"}, "1-2"),
        ("$args[ws]-$workspace", {"ws": "a"}, "a-dev"),
    ],
)
def test_args_substitution(template: str, args: dict[str, Any], expected: str) -> None:
    assert resolve_tag(language="bash", workspace="dev", args=args, override=template) == expected


@pytest.mark.parametrize(
    ("template", "args", "field"),
    [
        ("$args[missing]", {}, "args.missing"),
        ("$args[a.b]", {"a": {}}, "args.a.b"),
        ("$args[a.b]", {"a": "not-an-object"}, "args.a.b"),
        ("$args[a.b]", {}, "args.a.b"),
        ("$args[x]", {"x": None}, "args.x"),
        ("$args[a.b]", {"a": {"b": None}}, "args.a.b"),
    ],
)
def test_missing_or_null_argument_is_an_error_naming_it(
    template: str, args: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_tag(language="bash", workspace="dev", args=args, override=template)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("template", "args"),
    [
        ("$args[x]", {"x": "a,b"}),
        ("$args[x]", {"x": ""}),
        ("$args[x]", {"x": " padded "}),
        ("$args[x]", {"x": "a\nb"}),
        ("$args[x]", {"x": "gpu(ws1)"}),
        ("$args[x]", {"x": "y" * (MAX_TAG_LENGTH + 1)}),
        ("$args[x]", {"x": [1, 2]}),
        ("$args[x]", {"x": {"a": 1, "b": 2}}),
    ],
)
def test_resolved_tag_is_validated(template: str, args: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_tag(language="bash", workspace="dev", args=args, override=template)
    assert info.value.field == "tag"


def test_workspace_making_tag_too_long_is_rejected() -> None:
    with pytest.raises(InvalidInput):
        resolve_tag(language="bash", workspace="w" * 64, args={}, override="x" * 40 + "$workspace")


@pytest.mark.parametrize("value", ["$workspace-gpu", "$args[y]"])
def test_an_argument_that_smuggles_a_placeholder_is_refused(value: str) -> None:
    """An argument's text is never expanded again, and a tag still holding placeholder text
    after filling names no queue any worker listens to: refused, naming the tag."""
    with pytest.raises(InvalidInput) as info:
        resolve_tag(language="bash", workspace="dev", args={"x": value, "y": "no"},
                    override="$args[x]")
    assert info.value.field == "tag" and "placeholder" in info.value.message


arg_values = st.one_of(
    st.text(max_size=120),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    st.lists(st.integers(), max_size=3),
)


@SETTINGS
@given(
    template=st.sampled_from(
        ["$args[x]", "q-$args[x]", "$args[x]-$workspace", "$args[x]$args[y]", "$args[a.b]", None]
    ),
    x=arg_values,
    y=st.text(max_size=60),
    nested=st.text(max_size=60),
    workspace=st.text(alphabet="abcdefghij0123456789-_", min_size=1, max_size=64),
    language=st.sampled_from(["bash", "python3", "cobol", "mssql"]),
)
def test_resolve_tag_returns_a_valid_tag_or_raises_invalid_input(
    template: str | None, x: Any, y: str, nested: str, workspace: str, language: str
) -> None:
    args = {"x": x, "y": y, "a": {"b": nested}}
    try:
        tag = resolve_tag(language=language, workspace=workspace, args=args, override=template)
    except InvalidInput as exc:
        assert exc.field is not None
        assert exc.field == "tag" or exc.field.startswith("args.")
        return
    assert validate_tag(tag) == tag
    assert 1 <= len(tag) <= MAX_TAG_LENGTH
    if template is None:
        assert tag == default_tag(language)
    elif template == "q-$args[x]" and isinstance(x, str):
        assert tag == "q-" + x
