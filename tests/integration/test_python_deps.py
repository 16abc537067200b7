"""python3 jobs with dependencies, resolved by uv against a local find-links folder (no index).

The packages are wheels the test builds itself, so nothing here depends on PyPI being reachable.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from cli.client import CliError
from tests.integration.conftest import Suite
from tests.integration.harness import cli, wait_until


def make_wheel(folder: Path, name: str, version: str, module: str) -> Path:
    """A pure-Python wheel of `name` whose module `name` holds `module` (RECORD with hashes)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": module.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }

    def record_line(path: str, data: bytes) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{path},sha256={digest},{len(data)}"

    record = "".join(record_line(p, d) + "\n" for p, d in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for p, d in files.items():
            zf.writestr(p, d)
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A find-links folder: gohumane 1.0 and 2.0, and gocolors (imported as `gocolors`)."""
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder, "gohumane", "1.0", "def size(n):\n    return f'{n / 1000:.1f} kB (v1)'\n")
    make_wheel(folder, "gohumane", "2.0", "def size(n):\n    return f'{n / 1000:.1f} kB'\n")
    make_wheel(folder, "gocolors", "0.3", "RED = '#f00'\n")
    return folder


@pytest.fixture(scope="module")
def pyworker(suite: Suite, index: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A worker on tag `pydeps` (and `dependency`) that resolves against `index` only."""
    cache = tmp_path_factory.mktemp("cache")
    proc = suite.worker("pydeps", WORKER_TAGS="pydeps", UV_FIND_LINKS=str(index),
                        UV_NO_INDEX="1", WORKER_CACHE_DIR=str(cache))
    proc.wait_for('"worker_ready"', timeout=60)
    return cache


DECLARED = '''# /// script
# dependencies = ["gohumane<2"]
# ///
import gohumane

def main(n: int):
    return gohumane.size(n)
'''

GUESSED = '''import gohumane, gocolors, json

def main():
    return [gohumane.size(1500), gocolors.RED]
'''


def test_inline_python_jobs_get_their_dependencies(suite: Suite, pyworker: Path) -> None:
    """A PEP 723 block is honoured (gohumane<2 picks 1.0); without one, imports outside the
    standard library are resolved by name (the newest gohumane). Each lock and environment is
    built once: the second run of a script reuses them."""
    declared = suite.api.job(suite.api.submit(DECLARED, language="python3", tag="pydeps",
                                              args={"n": 2500})["id"])
    assert declared["status"] == "success" and declared["result"] == "2.5 kB (v1)", declared
    guessed = suite.api.job(suite.api.submit(GUESSED, language="python3", tag="pydeps")["id"])
    assert guessed["status"] == "success" and guessed["result"] == ["1.5 kB", "#f00"], guessed
    envs = sorted(p.name for p in (pyworker / "python" / "envs").iterdir()
                  if not p.name.startswith("."))
    assert len(envs) == 2, envs
    lock = (pyworker / "python" / "envs" / envs[0] / "lock.txt").read_text()
    assert "--hash=sha256:" in lock
    again = suite.api.job(suite.api.submit(GUESSED, language="python3", tag="pydeps")["id"])
    assert again["result"] == ["1.5 kB", "#f00"]
    assert sorted(p.name for p in (pyworker / "python" / "envs").iterdir()
                  if not p.name.startswith(".")) == envs


def test_an_unresolvable_dependency_fails_the_job_with_the_resolvers_message(
        suite: Suite, pyworker: Path) -> None:
    code = "import nosuchpackage_xyz\n\ndef main():\n    return 1\n"
    view = suite.api.job(suite.api.submit(code, language="python3", tag="pydeps")["id"])
    assert view["status"] == "failure", view
    assert "could not be resolved" in view["error"] and "nosuchpackage-xyz" in view["error"].lower()
    url = ('# /// script\n# dependencies = ["evil @ file:///etc/passwd"]\n# ///\n'
           "def main():\n    return 1\n")
    refused = suite.api.job(suite.api.submit(url, language="python3", tag="pydeps")["id"])
    assert refused["status"] == "failure" and "not a plain requirement" in refused["error"]
