"""python3 jobs with dependencies, resolved by uv against a local find-links folder (no index).

The packages are wheels the test builds itself, so nothing here depends on PyPI being reachable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from bench.wheels import make_wheel
from cli.client import CliError
from tests.integration.conftest import Suite, running_suite
from tests.integration.harness import cli, run_view, wait_until


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A find-links folder: gohumane 1.0 and 2.0, and gocolors (imported as `gocolors`)."""
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder, "gohumane", "1.0", "def size(n):\n    return f'{n / 1000:.1f} kB (v1)'\n")
    make_wheel(folder, "gohumane", "2.0", "def size(n):\n    return f'{n / 1000:.1f} kB'\n")
    make_wheel(folder, "gocolors", "0.3", "RED = '#f00'\n")
    make_wheel(folder, "gonew", "1.0", "V = 1\n")  # 2.0 is published during a test
    # 16 MiB of zeros in a wheel of a few KiB: more than the workers' file cap below
    make_wheel(folder, "gobomb", "1.0", "X = 1\n", data={"zeros.bin": bytes(16 << 20)})
    return folder


@pytest.fixture(scope="module")
def suite(index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """`getoperate up` whose workers resolve against `index` only (UV_NO_INDEX: no PyPI)."""
    cache = tmp_path_factory.mktemp("cache")
    env = {"UV_FIND_LINKS": str(index), "UV_NO_INDEX": "1", "WORKER_CACHE_DIR": str(cache),
           "WORKER_TOOL_FILE_BYTES": str(8 << 20)}
    with running_suite(tmp_path_factory.mktemp("suite"), env=env, ready=("default",)) as s:
        s.cache = cache  # type: ignore[attr-defined]
        s.uv_env = env  # type: ignore[attr-defined]
        yield s


def _envs(suite: Suite) -> list[str]:
    folder = suite.cache / "python" / "envs"  # type: ignore[attr-defined]
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


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


def test_inline_python_jobs_get_their_dependencies(suite: Suite) -> None:
    """A PEP 723 block is honoured (gohumane<2 picks 1.0); without one, imports outside the
    standard library are resolved by name (the newest gohumane). Each lock and environment is
    built once: the second run of a script reuses them."""
    declared = suite.api.job(suite.api.submit(DECLARED, language="python3",
                                              args={"n": 2500})["id"])
    assert declared["status"] == "success" and declared["result"] == "2.5 kB (v1)", declared
    guessed = suite.api.job(suite.api.submit(GUESSED, language="python3")["id"])
    assert guessed["status"] == "success" and guessed["result"] == ["1.5 kB", "#f00"], guessed
    envs = _envs(suite)
    assert len(envs) == 2, envs
    lock = (suite.cache / "python" / "envs" / envs[0] / "lock.txt").read_text()  # type: ignore
    assert "--hash=sha256:" in lock
    again = suite.api.job(suite.api.submit(GUESSED, language="python3")["id"])
    assert again["result"] == ["1.5 kB", "#f00"]
    assert _envs(suite) == envs


def test_an_unresolvable_dependency_fails_the_job_with_the_resolvers_message(
        suite: Suite) -> None:
    code = "import nosuchpackage_xyz\n\ndef main():\n    return 1\n"
    view = suite.api.job(suite.api.submit(code, language="python3")["id"])
    assert view["status"] == "failure", view
    assert "could not be resolved" in view["error"] and "nosuchpackage-xyz" in view["error"].lower()
    url = ('# /// script\n# dependencies = ["evil @ file:///etc/passwd"]\n# ///\n'
           "def main():\n    return 1\n")
    refused = suite.api.job(suite.api.submit(url, language="python3")["id"])
    assert refused["status"] == "failure" and "not a plain requirement" in refused["error"]


def _deploy(suite: Suite, path: str, code: str) -> Any:
    return suite.api.call("PUT", "config", f"/scripts/main/{path}",
                          {"language": "python3", "content": code})


def _run(suite: Suite, path: str, args: dict[str, Any] | None = None) -> Any:
    return suite.api.call("POST", "router", "/jobs", {"path": path, "args": args or {}})


def _script(suite: Suite, path: str) -> Any:
    return suite.api.call("GET", "config", f"/scripts/main/{path}")


def test_deploying_a_script_queues_a_dependency_job_whose_lock_joins_the_history(
        suite: Suite) -> None:
    """The deploy queues a dependency job on tag `dependency`; its lock is recorded as a
    `script.locked` event of that version, and runs use it. A script whose resolution fails
    is recorded so, and its runs are refused with the resolver's message."""
    _deploy(suite, "u/size", DECLARED)
    locked = wait_until(lambda: (s := _script(suite, "u/size"))["lock"] and s, "the lock", 60)
    assert "gohumane==1.0" in locked["lock"] and locked["lock_error"] is None, locked
    job = suite.api.job(locked["lock_job"])
    assert (job["tag"], job["kind"], job["status"]) == ("dependency", "dependency", "success"), job
    events = suite.api.call("GET", "config", "/events?limit=1000")
    mine = [e for e in events if e["event"]["type"] == "script.locked"
            and e["event"]["path"] == "u/size"]
    assert len(mine) == 1 and mine[0]["event"]["version"] == locked["version"], mine
    assert mine[0]["actor"] == "system" and locked["lock_job"] in (mine[0].get("reason") or "")
    run = suite.api.job(_run(suite, "u/size", {"n": 1200})["id"])
    assert run["status"] == "success" and run["result"] == "1.2 kB (v1)", run

    _deploy(suite, "u/broken", "import nosuchpackage_xyz\n\ndef main():\n    return 1\n")
    failed = wait_until(lambda: (s := _script(suite, "u/broken"))["lock_error"] and s,
                        "the failed lock", 60)
    assert "nosuchpackage-xyz" in failed["lock_error"].lower(), failed
    dependency_job = suite.api.job(failed["lock_job"])  # the deploy's dependency job itself
    assert dependency_job["status"] == "failure" and dependency_job["tag"] == "dependency"
    assert "nosuchpackage" in (dependency_job["error"] or "").lower(), dependency_job
    with pytest.raises(CliError) as refused:
        _run(suite, "u/broken")
    assert "dependencies_failed" in refused.value.message or "409" in refused.value.message
    assert "nosuchpackage" in refused.value.message.lower()
    # Deployed again, fixed: the new version locks and runs.
    _deploy(suite, "u/broken", GUESSED)
    fixed = wait_until(lambda: (s := _script(suite, "u/broken"))["lock"] and s, "the new lock", 60)
    assert fixed["lock_error"] is None and "gocolors==0.3" in fixed["lock"]
    assert suite.api.job(_run(suite, "u/broken")["id"])["result"] == [
        "1.5 kB", "#f00"]


def test_scripts_with_dependencies_through_the_cli(suite: Suite, tmp_path: Path) -> None:
    """`getoperate run --file` of an inline script with a PEP 723 block; `getoperate script
    deploy` of one whose imports are guessed, then `getoperate run WS/PATH`, which runs with the
    lock its dependency job recorded."""
    (tmp_path / "size.py").write_text(DECLARED)
    inline = run_view("--language", "python3", "--file", str(tmp_path / "size.py"),
                      "--arg", "n=4200", cwd=suite.root)
    assert (inline["status"], inline["result"]) == ("success", "4.2 kB (v1)"), inline
    (tmp_path / "colors.py").write_text(GUESSED)
    cli("script", "deploy", "main/u/cli-colors", str(tmp_path / "colors.py"), "--language",
        "python3", cwd=suite.root, check=True)
    locked = wait_until(lambda: (s := _script(suite, "u/cli-colors"))["lock"] and s, "the lock", 60)
    assert "gocolors==0.3" in locked["lock"], locked
    deployed = run_view("main/u/cli-colors", cwd=suite.root)
    assert (deployed["status"], deployed["result"]) == ("success", ["1.5 kB", "#f00"]), deployed


def test_a_dedicated_script_runs_warm_in_its_locked_environment(suite: Suite) -> None:
    """The warm runtime of a dedicated script imports from the same cached environment as its
    cold runs: the environment is built once, whoever needs it first."""
    code = ("# /// script\n# dependencies = [\"gohumane>=2\", \"gocolors\"]\n# ///\n"
            "import os, gohumane, gocolors\nSTARTED = os.urandom(4).hex()\n\n"
            "def main(n: int):\n    return [gohumane.size(n), gocolors.RED, STARTED]\n")
    _deploy(suite, "u/warm", code)
    wait_until(lambda: _script(suite, "u/warm")["lock"], "the lock", 60)
    suite.api.set_group("pyded", dedicated=["main:u/warm"])
    worker = suite.worker("pyded", WORKER_GROUP="pyded", **suite.uv_env)  # type: ignore
    worker.wait_for('"worker_ready"', timeout=60)
    views = [suite.api.job(_run(suite, "u/warm", {"n": 1000 * i})["id"]) for i in (1, 2)]
    assert all(v["tag"] == "main:u/warm" and v["status"] == "success" for v in views), views
    assert [v["result"][:2] for v in views] == [["1.0 kB", "#f00"], ["2.0 kB", "#f00"]]
    assert views[0]["result"][2] == views[1]["result"][2]  # one warm process served both
    worker.stop()


def test_a_workspaces_cached_lock_never_decides_anothers_versions(suite: Suite, index: Path
                                                                  ) -> None:
    """Inline locks are cached per workspace: wsa's lock of gonew (made while only 1.0 was
    published) is not what wsb gets once 2.0 is out, and a deploy's dependency job resolves
    afresh rather than from any cache."""
    code = "import gonew\n\ndef main():\n    return gonew.V\n"
    first = suite.api.job(suite.api.submit(code, language="python3", workspace="wsa")["id"])
    assert first["result"] == 1, first
    make_wheel(index, "gonew", "2.0", "V = 2\n")
    other = suite.api.job(suite.api.submit(code, language="python3", workspace="wsb")["id"])
    assert other["result"] == 2, other
    again = suite.api.job(suite.api.submit(code, language="python3", workspace="wsa")["id"])
    assert again["result"] == 1, again  # its own cached lock (LOCK_TTL), not wsb's
    suite.api.call("PUT", "config", "/scripts/wsa/u/new", {"language": "python3", "content": code})
    locked = wait_until(lambda: (s := suite.api.call("GET", "config", "/scripts/wsa/u/new"))
                        ["lock"] and s, "the lock", 60)
    assert "gonew==2.0" in locked["lock"], locked


def test_a_package_that_unpacks_too_large_a_file_is_refused(suite: Suite) -> None:
    """uv runs on the host with every file it writes capped (WORKER_TOOL_FILE_BYTES): a wheel
    that unpacks to more fails the job, and leaves no environment behind."""
    before = _envs(suite)
    code = "import gobomb\n\ndef main():\n    return gobomb.X\n"
    view = suite.api.job(suite.api.submit(code, language="python3")["id"])
    assert view["status"] == "failure", view
    assert "larger than 8388608 bytes" in view["error"], view["error"]
    assert _envs(suite) == before
