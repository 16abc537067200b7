"""The worker's language registry: which languages are built in, and what a job in a language the
worker cannot run is told to install."""

from __future__ import annotations

import pytest

from services.worker.languages import (
    BUILTIN,
    ENTRY_POINT_GROUP,
    NOT_BUNDLED,
    Registry,
    _builtin,
)
from services.worker.languages.bash import Bash
from shared.tags import LANGUAGE_TAGS


class Absent:
    """A language whose runtime this machine lacks."""

    name = "absent"
    how_to_get = "absentc (Debian package absent-compiler)"

    def find_runtime(self) -> None:
        return None


def test_every_language_with_a_default_tag_is_built_in_or_named_not_bundled() -> None:
    assert sorted(BUILTIN) == sorted(lang.name for lang in _builtin())
    assert set(BUILTIN) | set(NOT_BUNDLED) == LANGUAGE_TAGS
    assert not set(BUILTIN) & set(NOT_BUNDLED)


@pytest.mark.parametrize("name", NOT_BUNDLED)
def test_a_language_not_bundled_says_so_and_names_the_entry_point_group(name: str) -> None:
    message = Registry([Bash()]).unavailable(name)
    assert message == (
        f"no executor for language {name!r} on this worker (it runs bash): {name} is not bundled"
        f" with getOperate; install a package that adds it (entry-point group"
        f" {ENTRY_POINT_GROUP!r}: docs/languages.md)")


def test_a_missing_runtime_names_what_to_install() -> None:
    found = Registry([Bash(), Absent()])
    assert found.missing == {"absent": Absent.how_to_get} and found.get("absent") is None
    assert found.unavailable("absent") == (
        "no executor for language 'absent' on this worker (it runs bash);"
        " install absentc (Debian package absent-compiler)")


def test_an_unknown_language_points_at_plugins() -> None:
    message = Registry([Bash()]).unavailable("cobol")
    assert message.startswith("no executor for language 'cobol' on this worker (it runs bash);")
    assert f"entry-point group {ENTRY_POINT_GROUP!r}" in message
    assert "not bundled" not in message
