"""Round trip per language, cold and warm, and the python3 dependency cache, in one run.

Cold: one job at a time through the whole path (submit, route, queue, a worker, the sandbox, the
language's runtime, the result), against the bare start of the same runtime measured in the same
run (what no platform can avoid: `python3 -c pass`, `deno run` of an empty module, a compiled go
binary...). The overhead is p50(job) - p50(bare start).

Warm: a dedicated worker's long-lived runtime (python3, deno, bun), one job at a time, against
the same language's cold p50. The query languages (postgresql, mysql, graphql) need servers:
their rows are bench/querylanguages.py's.

Dependencies: inline python3 jobs that need a package (wheels built on the spot, resolved by uv
from a local folder): the first run of each requirement set resolves a lock and builds an
environment; a repeat finds both in the worker's cache.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import percentile
from bench.suite import LocalSuite, progress, run_jobs
from bench.wheels import make_wheel

# language -> (a script whose main takes x and returns it, how to start the bare runtime)
SCRIPTS = {
    "bash": 'echo "$1"\n',
    "python3": "def main(x):\n    return x\n",
    "deno": "export function main(x: number) { return x; }\n",
    "nativets": "export function main(x: number) { return x; }\n",
    "bun": "export function main(x: number) { return x; }\n",
    "go": "package inner\n\nfunc main(x int) (interface{}, error) {\n\treturn x, nil\n}\n",
}
WARM = ("python3", "deno", "bun")


def _bare(language: str, runtime: str, folder: Path) -> list[str] | None:
    """The argv that starts `language`'s runtime on an empty program."""
    (folder / "empty.ts").write_text("export {};\n")
    if language == "bash":
        return ["bash", "-c", "true"]
    if language == "python3":
        return [sys.executable, "-c", "pass"]
    if language in ("deno", "nativets"):
        return [runtime, "run", "--quiet", "--no-config", "--no-lock", str(folder / "empty.ts")]
    if language == "bun":
        return [runtime, "run", str(folder / "empty.ts")]
    if language == "go":
        (folder / "main.go").write_text("package main\n\nfunc main() {}\n")
        env = {**os.environ, "CGO_ENABLED": "0", "GOCACHE": str(folder / "gocache"),
               "GOPATH": str(folder / "gopath")}
        done = subprocess.run([runtime, "build", "-o", str(folder / "empty"), str(folder / "main.go")],
                              cwd=folder, env=env, capture_output=True)
        return [str(folder / "empty")] if done.returncode == 0 else None
    return None


def _runtimes() -> dict[str, str]:
    from services.worker.languages import registry

    return registry().found


def _starts(argv: list[str], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - started)
    return samples


def _jobs(suite: LocalSuite, payloads: list[dict[str, Any]]) -> list[float]:
    return asyncio.run(run_jobs(suite.nats_url, suite.token, payloads, in_flight=1))


def _ms(samples: list[float]) -> float:
    return round(percentile(samples, 50) * 1000, 2)


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 20 if quick else 100
    rows: list[dict[str, Any]] = []
    found = _runtimes()
    scratch = Path(tempfile.mkdtemp(prefix="getoperate-bench-lang-"))
    wheels = scratch / "wheels"
    wheels.mkdir()
    k = 3 if quick else 10  # distinct requirement sets: each one's first run is a cache miss
    for i in range(k):
        make_wheel(wheels, f"gobench{i}", "1.0", f"VALUE = {i}\n")
    try:
        with LocalSuite(WORKER_CACHE_DIR=str(scratch / "cache"), UV_FIND_LINKS=str(wheels),
                        UV_NO_INDEX="1", UV_CACHE_DIR=str(scratch / "uv")) as suite:
            suite.wait_workers(lambda ws: {w["group"] for w in ws if w["state"] == "ready"}
                               >= {"default", "native"})
            cold: dict[str, float] = {}
            for language, code in SCRIPTS.items():
                if language not in found:
                    progress(f"languages: {language}: no runtime here, skipped")
                    continue
                bare_argv = _bare(language, found[language], scratch)
                if bare_argv is None:
                    continue
                job = {"workspace": "bench", "language": language, "code": code,
                       "args": {"x": 1}}
                _jobs(suite, [job] * 3)  # warm-up (a go build, the page cache)
                progress(f"languages: {language}: {n} bare starts, then {n} jobs one at a time")
                bare = _starts(bare_argv, n)
                jobs = _jobs(suite, [job] * n)
                cold[language] = _ms(jobs)
                overhead = cold[language] - _ms(bare)
                rows.append({
                    "name": f"cold {language} job round trip, one at a time ({n} jobs): p50",
                    "value": cold[language], "unit": "ms", "baseline": _ms(bare),
                    "baseline_name": f"p50 bare start of {language}'s runtime",
                    "ratio": round(cold[language] / max(_ms(bare), 0.01), 2),
                    "target": "overhead <= 15 ms", "met": overhead <= 15,
                    "bound": "the sandbox (bwrap, cgroup, seccomp) and NATS round trips in "
                             "series; the runtime's own start",
                })
            rows += _warm(suite, [lang for lang in WARM if lang in cold], cold, n)
            rows += _dependencies(suite, k, cold.get("python3"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def _warm(suite: LocalSuite, languages: list[str], cold: dict[str, float], n: int
          ) -> list[dict[str, Any]]:
    cfg = suite.config_url
    for language in languages:
        suite.http("PUT", f"{cfg}/scripts/bench/f/warm-{language}",
                   {"language": language, "content": SCRIPTS[language]})
    suite.http("PUT", f"{cfg}/groups/bench-warm",
               {"dedicated": [f"bench:f/warm-{lang}" for lang in languages]})
    suite.worker(WORKER_GROUP="bench-warm")
    suite.wait_workers(lambda ws: any(w["group"] == "bench-warm" and w["state"] == "ready"
                                      for w in ws))
    rows = []
    for language in languages:
        job = {"workspace": "bench", "path": f"f/warm-{language}", "args": {"x": 1}}
        _jobs(suite, [job] * 5)  # the runtime starts with the first
        progress(f"languages: warm {language}: {n} jobs one at a time")
        warm = _ms(_jobs(suite, [job] * n))
        rows.append({
            "name": f"warm (dedicated) {language} job round trip, one at a time ({n} jobs): p50",
            "value": warm, "unit": "ms", "baseline": cold[language],
            "baseline_name": f"cold {language} p50, same run",
            "ratio": round(warm / cold[language], 3), "target": "<= 5 ms", "met": warm <= 5,
            "bound": "NATS round trips (submit, pull, result, ack) and one call on the runtime's "
                     "pipe",
        })
    return rows


def _dependencies(suite: LocalSuite, k: int, plain: float | None) -> list[dict[str, Any]]:
    progress(f"languages: python3 with a dependency: {k} first runs, then {k} repeats")
    first, again = [], []
    for i in range(k):
        job = {"workspace": "bench", "language": "python3", "args": {},
               "code": f"import gobench{i}\n\ndef main():\n    return gobench{i}.VALUE\n"}
        first += _jobs(suite, [job])
        again += _jobs(suite, [job] * 3)
    hit, miss = _ms(again), _ms(first)
    target = (plain or 0) + 5
    return [{
        "name": f"python3 job with a dependency, cache hit ({len(again)} runs of {k} scripts): p50",
        "value": hit, "unit": "ms", "baseline": miss,
        "baseline_name": "p50 of each script's first run (uv lock + environment build)",
        "ratio": round(hit / miss, 3),
        "target": f"<= cold python3 p50 + 5 ms ({target:.1f} ms)", "met": hit <= target,
        "bound": "a hit costs two cache look-ups (the lock by requirements, the environment by "
                 "lock) and a read-only mount; a miss runs uv twice (resolve, then install)",
    }]
