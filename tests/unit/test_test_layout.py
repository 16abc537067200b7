"""No test module imports from another test module (issue 18): what several of them share lives
in support modules that are not collected as tests (tests/integration/harness.py, browser.py,
configproc.py, natsclients.py; tests/unit/support.py; tests/asyncapi_check.py).

Importing a test module runs its module level, pulls its tests' names into the importer (pytest
collects test functions imported by name) and ties one test file's helpers to another's
private ones. Every import counts here, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


def _package(path: Path) -> list[str]:
    """The dotted package a file under the repository belongs to, as parts."""
    return list(path.relative_to(ROOT).parent.parts)


def _imported_test_modules(source: str, package: list[str]) -> list[str]:
    """The project's test modules (`tests.*.test_*`) that `source`, a file in `package`,
    imports from; a library's `test_*` module (aiohttp.test_utils) is not one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            names = [".".join(module)] + [".".join(module + [a.name]) for a in node.names]
        else:
            continue
        found += [name for name in names
                  if name.split(".")[0] == "tests" and name.rsplit(".", 1)[-1].startswith("test_")]
    return found


def test_no_test_module_imports_from_another() -> None:
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        found = _imported_test_modules(path.read_text(), _package(path))
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}, ("move what they share into a support module (not test_*.py): "
                             f"{offenders}")


def test_the_check_sees_each_form_of_import() -> None:
    """The check itself: absolute, `from package import module`, relative and late imports of
    a test module are found; imports of support modules and libraries are not."""

    def found(source: str) -> list[str]:
        return _imported_test_modules(source, ["tests", "integration"])

    assert found("from tests.integration.test_web import http\n") == ["tests.integration.test_web"]
    assert found("import tests.unit.test_compose\n") == ["tests.unit.test_compose"]
    assert found("from tests.unit import test_routing\n") == ["tests.unit.test_routing"]
    assert found("from .test_web import http\n") == ["tests.integration.test_web"]
    assert found("from ..unit import test_compose\n") == ["tests.unit.test_compose"]
    assert found("def f():\n    from tests.integration.test_metrics import scrape\n") == [
        "tests.integration.test_metrics"]
    assert found("from tests.integration.harness import ready\n"
                 "from tests.unit.support import Log\n"
                 "import pytest\n"
                 "from aiohttp.test_utils import TestClient\n") == []
