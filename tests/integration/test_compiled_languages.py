"""go and bun jobs end to end: a real deployment, the real runtimes, the real sandbox.

Go scripts are compiled once per content into the worker's cache folder (WORKER_CACHE_DIR, fresh
for this module: its first build compiles the standard library too) and the binary runs in the
sandbox; bun runs TypeScript as deno does. Both come from .ci/run (Debian's golang-go, npm's bun).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.worker.languages.bun import find_bun
from services.worker.languages.go import find_go
from tests.integration.conftest import Suite, running_suite
from tests.integration.harness import HAS_SANDBOX

_MISSING = [name for name, found in (("go", find_go()), ("bun", find_bun())) if not found]
pytestmark = pytest.mark.skipif(
    bool(_MISSING) and not os.environ.get("GETOPERATE_REQUIRE_LANGUAGES"),
    reason=f"no {' or '.join(_MISSING)} here (.ci/run installs golang-go and npm's bun)")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    cache = tmp_path_factory.mktemp("cache")
    with running_suite(tmp_path_factory.mktemp("suite"),
                       env={"WORKER_CACHE_DIR": str(cache)}, ready=("default",)) as s:
        s.cache = cache  # type: ignore[attr-defined]
        yield s


def _run(suite: Suite, code: str, language: str, args: dict[str, Any] | None = None,
         timeout: float = 30) -> Any:
    job = suite.api.submit(code, language=language, args=args or {})
    return suite.api.job(job["id"], timeout=timeout)


def _builds(suite: Suite) -> list[str]:
    folder: Path = suite.cache / "go" / "builds"  # type: ignore[attr-defined]
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


GO_TYPED = '''package inner

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

type Point struct {
	X int `json:"x"`
	Y int `json:"y"`
}

func main(name string, n int, at Point, tags map[string]int) (interface{}, error) {
	fmt.Println("hello from go,", name)
	if n < 0 {
		return nil, errors.New("n must not be negative, got " + fmt.Sprint(n))
	}
	dir, _ := os.Getwd()
	return map[string]interface{}{
		"name": strings.ToUpper(name), "twice": n * 2, "sum": at.X + at.Y, "tags": len(tags),
		"dir": dir,
	}, nil
}
'''

GO_OTHER = '''package inner

func main(words []string) ([]int, error) {
	out := []int{}
	for _, w := range words {
		out = append(out, len(w))
	}
	return out, nil
}
'''


def test_workers_report_go_and_bun(suite: Suite) -> None:
    workers = [w for w in suite.api.workers() if w["group"] == "default"]
    assert workers and all({"go", "bun"} <= set(w["runtimes"]) for w in workers), workers
    if HAS_SANDBOX:  # so every job below ran in bubblewrap
        assert all(w["sandbox"] == "bwrap" for w in workers), workers


def test_go_jobs_get_typed_arguments_and_are_compiled_once_per_script(suite: Suite) -> None:
    """Arguments are decoded by name into main's types (a string, an int, a struct, a map);
    the result is JSON, stdout is the logs. The second run of the script reuses its binary;
    another script gets its own."""
    args = {"name": "gopher", "n": 21, "at": {"x": 2, "y": 3}, "tags": {"a": 1, "b": 2}}
    first = _run(suite, GO_TYPED, "go", args, timeout=120)  # compiles the standard library too
    assert first["status"] == "success", first
    assert first["result"] == {"name": "GOPHER", "twice": 42, "sum": 5, "tags": 2,
                               "dir": "/job" if HAS_SANDBOX else first["result"]["dir"]}
    assert "hello from go, gopher" in first["logs"]
    builds = _builds(suite)
    assert len(builds) == 1, builds

    again = _run(suite, GO_TYPED, "go", {**args, "n": 1})
    assert again["status"] == "success" and again["result"]["twice"] == 2, again
    assert _builds(suite) == builds  # no second build of the same script

    other = _run(suite, GO_OTHER, "go", {"words": ["a", "bcd"]})
    assert other["status"] == "success" and other["result"] == [1, 3], other
    assert len(_builds(suite)) == 2 and set(builds) < set(_builds(suite))


def test_a_go_error_fails_the_job_with_its_message(suite: Suite) -> None:
    returned = _run(suite, GO_TYPED, "go", {"name": "x", "n": -4})
    assert returned["status"] == "failure", returned
    assert returned["error"] == "n must not be negative, got -4"
    wrong = _run(suite, GO_TYPED, "go", {"name": "x", "n": "four"})
    assert wrong["status"] == "failure"
    assert "argument n: json: cannot unmarshal string" in wrong["error"], wrong


def test_a_go_compile_error_fails_the_job_with_the_compilers_message(suite: Suite) -> None:
    broken = GO_OTHER.replace("len(w)", "length(w)")
    view = _run(suite, broken, "go", {"words": []})
    assert view["status"] == "failure", view
    assert "did not compile" in view["error"] and "undefined: length" in view["error"], view
    assert "inner/script.go:6:" in view["error"]  # the script's own line numbers
    signature = _run(suite, "package inner\n\nfunc main(x int) int {\n\treturn x\n}\n", "go")
    assert signature["status"] == "failure"
    assert "main must return (result, error)" in signature["error"], signature


BUN_SCRIPT = '''export async function main(name: string, n: number = 2, shout?: boolean) {
  console.log(`hello from bun, ${name}`);
  if (n < 0) throw new RangeError(`n must not be negative, got ${n}`);
  const text = `${name}!`.repeat(n);
  return { text: shout ? text.toUpperCase() : text, runtime: typeof Bun, dir: process.cwd() };
}
'''


def test_a_go_build_for_a_group_without_network_fetches_nothing(suite: Suite) -> None:
    """The compile runs on the host, but for a group with the network off it stays offline
    (GOPROXY=off): an import path the script chose cannot make the host reach any server."""
    suite.api.set_group("gonet", tags=["t-gonet"], network=False)
    worker = suite.worker("gonet", WORKER_GROUP="gonet",
                          WORKER_CACHE_DIR=str(suite.cache))  # type: ignore[attr-defined]
    worker.wait_for('"worker_ready"', timeout=60)
    code = ('package inner\n\nimport _ "leak-secret.example.com/x"\n\n'
            "func main() (interface{}, error) { return 1, nil }\n")
    job = suite.api.submit(code, language="go", tag="t-gonet")
    view = suite.api.job(job["id"], timeout=60)
    assert view["status"] == "failure", view
    assert "module lookup disabled by GOPROXY=off" in view["error"], view["error"]
    assert "dial tcp" not in view["error"] and "proxy.golang.org" not in view["error"]
    worker.stop()


def test_bun_jobs_get_arguments_by_name_with_defaults(suite: Suite) -> None:
    named = _run(suite, BUN_SCRIPT, "bun", {"shout": True, "name": "bun"})
    assert named["status"] == "success", named
    where = "/job" if HAS_SANDBOX else named["result"]["dir"]
    assert named["result"] == {"text": "BUN!BUN!", "runtime": "object", "dir": where}  # n = 2
    assert "hello from bun, bun" in named["logs"]
    given = _run(suite, BUN_SCRIPT, "bun", {"name": "b", "n": 3})
    assert given["result"]["text"] == "b!b!b!", given


def test_a_bun_exception_fails_the_job_with_its_message(suite: Suite) -> None:
    view = _run(suite, BUN_SCRIPT, "bun", {"name": "x", "n": -1})
    assert view["status"] == "failure", view
    assert view["error"] == "RangeError: n must not be negative, got -1"
    assert "hello from bun, x" in view["logs"]
