"""Tag vocabulary, validation and template resolution (shared/tags.py)."""

from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import InvalidInput
from shared.tags import (
    DEFAULT_GROUP_TAGS,
    MAX_TAG_LENGTH,
    MAX_TAGS_PER_GROUP,
    NATIVE_GROUP_TAGS,
    PRESETS,
    default_tag,
    is_template,
    validate_group_name,
    validate_tag,
    validate_tags,
)

SETTINGS = settings(max_examples=150, deadline=None, database=None)

# --- default tags and presets ---------------------------------------------------------------------


@pytest.mark.parametrize("language", ["deno", "python3", "go", "bash", "powershell", "bun"])
def test_default_tag_of_script_languages_is_their_name(language: str) -> None:
    assert default_tag(language) == language


@pytest.mark.parametrize(
    "language", ["nativets", "postgresql", "mysql", "mssql", "graphql", "snowflake", "bigquery"]
)
def test_default_tag_of_native_languages_is_their_name(language: str) -> None:
    assert default_tag(language) == language


@pytest.mark.parametrize(
    "language",
    ["rust", "php", "csharp", "ansible", "", "Python3", "BASH", "python", "dependency", "flow",
     "hub", "other-lang", " deno"],
)
def test_default_tag_of_unknown_languages_is_other(language: str) -> None:
    assert default_tag(language) == "other"


def test_default_preset() -> None:
    assert PRESETS["default"] == (
        "deno", "python3", "go", "bash", "powershell", "dependency", "flow", "hub", "other", "bun",
    )
    assert DEFAULT_GROUP_TAGS == PRESETS["default"]


def test_native_preset() -> None:
    assert PRESETS["native"] == (
        "nativets", "postgresql", "mysql", "graphql", "snowflake", "bigquery", "mssql",
    )
    assert NATIVE_GROUP_TAGS == PRESETS["native"]


def test_all_preset_is_default_then_native() -> None:
    assert PRESETS["all"] == PRESETS["default"] + PRESETS["native"]
    assert len(PRESETS["all"]) == 17
    assert len(set(PRESETS["all"])) == 17
    assert set(PRESETS) == {"default", "native", "all"}


def test_preset_tags_are_valid_and_every_default_tag_is_in_a_preset() -> None:
    for tags in PRESETS.values():
        assert validate_tags(list(tags)) == tags
    for language in ["deno", "python3", "go", "bash", "powershell", "bun", "nativets",
                     "postgresql", "mysql", "mssql", "graphql", "snowflake", "bigquery", "cobol"]:
        assert default_tag(language) in PRESETS["all"]


# --- validate_tag ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    ["gpu", "a", "x" * MAX_TAG_LENGTH, "gpu-é", "🚀", "a b", "a.b", "*", ">", "$workspace",
     "normal-dev", "a\u00a0b", "{\"a\":1}"],
)
def test_validate_tag_accepts(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    ("tag", "why"),
    [
        ("", "empty"),
        ("x" * (MAX_TAG_LENGTH + 1), "too long"),
        ("a\x00b", "NUL"),
        ("a\nb", "newline inside"),
        ("a\tb", "tab inside"),
        ("a\x1bb", "escape"),
        ("a\x7fb", "DEL"),
        ("a,b", "comma"),
        ("gpu(ws1)", "parentheses"),
        ("a)", "closing parenthesis"),
        (" gpu", "leading space"),
        ("gpu ", "trailing space"),
        ("gpu\n", "trailing newline"),
        ("\u3000gpu", "leading ideographic space"),
    ],
)
def test_validate_tag_rejects(tag: str, why: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_tag(tag)
    assert info.value.field == "tag", why


@pytest.mark.parametrize("value", [None, 1, 1.5, b"gpu", ["gpu"], {"gpu": 1}])
def test_validate_tag_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_tag(value)
    assert info.value.field == "tag"


def test_validate_tag_uses_given_field_name() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_tag("a,b", field="override")
    assert info.value.field == "override"
    assert "override" in info.value.message


@pytest.mark.parametrize("tag", ["a\x9bb", "a\x85b", "a\x80b"], ids=["CSI", "NEL", "PAD"])
def test_validate_tag_rejects_c1_control_characters(tag: str) -> None:
    try:
        validate_tag(tag)
    except InvalidInput as exc:
        assert exc.field == "tag"
    else:
        raise AssertionError(f"validate_tag accepted {tag!r}, which holds a control character")


# --- validate_tags --------------------------------------------------------------------------------


def test_validate_tags_dedups_keeping_first_seen_order() -> None:
    assert validate_tags(["b", "a", "b", "c", "a"]) == ("b", "a", "c")
    assert validate_tags(("x",)) == ("x",)
    assert validate_tags([]) == ()


@SETTINGS
@given(st.lists(st.sampled_from(["a", "b", "c", "gpu", "é", "x y"]), max_size=20))
def test_validate_tags_is_order_preserving_dedup(tags: list[str]) -> None:
    out = validate_tags(tags)
    assert len(out) == len(set(out)) == len(set(tags))
    assert list(out) == [t for i, t in enumerate(tags) if t not in tags[:i]]
    assert validate_tags(list(out)) == out


def test_validate_tags_names_the_bad_entry() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_tags(["ok", "also-ok", "bad,tag"])
    assert info.value.field == "tags[2]"


@pytest.mark.parametrize("value", ["gpu", None, {"gpu"}, 3])
def test_validate_tags_rejects_non_lists(value: object) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_tags(value)
    assert info.value.field == "tags"


def test_validate_tags_limit() -> None:
    ok = [f"t{i}" for i in range(MAX_TAGS_PER_GROUP)]
    assert len(validate_tags(ok)) == MAX_TAGS_PER_GROUP
    with pytest.raises(InvalidInput) as info:
        validate_tags(ok + ["one-more"])
    assert info.value.field == "tags"


# --- validate_group_name --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["default", "native", "a", "0", "gpu-2", "a_b", "a" * 63, "9lives"]
)
def test_validate_group_name_accepts(name: str) -> None:
    assert validate_group_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "a" * 64, "Default", "-a", "_a", "a.b", "a b", "gpu!", "é", "a\n", None, 1, ["a"]],
)
def test_validate_group_name_rejects(name: object) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_group_name(name)
    assert info.value.field == "group"


def test_is_template() -> None:
    assert is_template("normal-$workspace")
    assert is_template("$args[x]")
    assert not is_template("gpu")
    assert not is_template("$work")


def test_parse_target_is_the_one_reading_of_ws_path() -> None:
    from shared.tags import parse_target, target_tag

    assert parse_target("main:f/etl") == ("main", "f/etl", False)
    assert parse_target("main:flow/f/etl") == ("main", "f/etl", True)
    assert parse_target("a:b:c") == ("a", "b:c", False)
    with pytest.raises(ValueError):
        parse_target("no-colon")
    assert target_tag("main:flow/f/etl") == "main:flow/f/etl"


@pytest.mark.parametrize("spec", ["gpu(ws1+)", "gpu(+ws1)", "gpu(^ws1^)", "gpu(^)"])
def test_a_spec_that_leaves_a_workspace_out_says_so(spec: str) -> None:
    from shared.tags import parse_tag_spec

    with pytest.raises(InvalidInput) as info:
        parse_tag_spec(spec)
    assert "names an empty workspace" in info.value.message and info.value.field == "spec"
