"""What a python3 script needs installed (shared/pydeps.py): PEP 723 first, imports otherwise."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from shared import pydeps
from shared.errors import InvalidInput


def test_a_pep723_block_is_the_whole_answer() -> None:
    code = ('# /// script\n# requires-python = ">=3.11"\n'
            '# dependencies = [\n#   "humanize>=4",\n#   "requests[socks]; python_version >= \'3.8\'",\n# ]\n'
            "# ///\nimport yaml\n")
    assert pydeps.requirements(code) == (
        "humanize>=4", "requests[socks]; python_version >= '3.8'")


def test_an_empty_list_means_nothing_even_with_imports() -> None:
    assert pydeps.requirements("# /// script\n# dependencies = []\n# ///\nimport yaml\n") == ()


def test_imports_outside_the_standard_library_are_guessed_by_name() -> None:
    code = ("import os, json\nimport yaml\nfrom PIL import Image\nfrom . import sibling\n"
            "from __future__ import annotations\nimport requests.adapters\n"
            "def f():\n    import numpy as np\n")
    assert pydeps.requirements(code) == ("numpy", "pillow", "pyyaml", "requests")


def test_a_script_that_does_not_parse_needs_nothing_here() -> None:
    assert pydeps.requirements("def main(:\n    import yaml") == ()  # the run reports it


@pytest.mark.parametrize("bad", [
    "evil @ file:///etc/passwd", "pkg @ https://example.com/x.whl", "-e .", "--index-url=x",
    "../local", "pkg>=1; os.system('x')", "", "a b", "secret-1.0-py3-none-any.whl",
    "x.tar.gz", "x.zip", "pkg\\n-r other.txt", "pkg\\u2003>=1", "pkg>=1\\r",
])
def test_only_plain_requirements_are_accepted(bad: str) -> None:
    code = f'# /// script\n# dependencies = ["{bad}"]\n# ///\n'
    with pytest.raises(InvalidInput) as refused:
        pydeps.requirements(code)
    assert refused.value.field == "dependencies" and "plain requirement" in refused.value.message


def test_a_broken_block_names_the_problem() -> None:
    with pytest.raises(InvalidInput, match="not valid TOML"):
        pydeps.requirements("# /// script\n# dependencies = [\n# ///\n")
    with pytest.raises(InvalidInput, match="list of strings"):
        pydeps.requirements('# /// script\n# dependencies = "x"\n# ///\n')
    with pytest.raises(InvalidInput, match="more than one"):
        pydeps.requirements("# /// script\n# x = 1\n# ///\nimport os\n"
                            "# /// script\n# y = 1\n# ///\n")


def test_other_pep723_blocks_are_ignored() -> None:
    assert pydeps.declared("# /// tool\n# x = 1\n# ///\n") is None


names = st.from_regex(r"[a-z][a-z0-9_-]{0,15}[a-z0-9]", fullmatch=True)


@given(st.lists(names, max_size=5),
       st.sampled_from(["", ">=1.0", "==2.*", "~=1.4,<2", "!=3"]))
def test_any_plain_requirement_round_trips(packages: list[str], spec: str) -> None:
    listed = [p + spec for p in packages]
    code = "# /// script\n# dependencies = " + repr(listed).replace("'", '"') + "\n# ///\n"
    assert pydeps.requirements(code) == tuple(listed)


@given(st.lists(st.sampled_from(sorted(__import__("sys").stdlib_module_names)), max_size=6))
def test_the_standard_library_is_never_a_requirement(modules: list[str]) -> None:
    code = "".join(f"import {m}\n" for m in modules if m.isidentifier())
    assert pydeps.requirements(code) == ()


def test_digest_is_stable_and_short() -> None:
    assert pydeps.digest("a==1\n") == pydeps.digest("a==1\n") != pydeps.digest("a==2\n")
    assert len(pydeps.digest("x")) == 32
