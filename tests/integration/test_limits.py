"""Limits, enforced on real processes with the worker's own runner: each past-the-limit job fails
with an error naming the limit, and the machine (and the next job) is unharmed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from services.worker.runner import Outcome, run_job
from services.worker.workspace import Workspace
from services.worker.cgroups import Cgroups
from services.worker.sandbox import Policy, default_uid
from shared import limits as lim
from shared.jobs import Job
from tests.integration.harness import needs_sandbox

needs_bwrap = needs_sandbox


def job(code: str, language: str = "bash", **args: object) -> Job:
    return msgspec.convert({"id": f"limit-{time.time_ns()}", "language": language, "code": code,
                            "tag": language, "workspace": "ws1", "submitted_at": 0,
                            "args": args}, Job)


def run(tmp_path: Path, j: Job, kind: str = "bwrap", timeout: float = 20, **limits: str
        ) -> tuple[Outcome, Cgroups | None]:
    cgroups, _ = Cgroups.detect()
    policy = Policy(kind=kind, limits=lim.effective(lim.validate(limits)), uid=default_uid())
    ws = Workspace(tmp_path / "work", default_uid())
    env = {"PATH": "/usr/bin:/bin", "HOME": "/job"}
    try:
        out = asyncio.run(run_job(j, ws=ws, policy=policy, env=env, timeout=timeout,
                                  cgroups=cgroups, cache=tmp_path / "cache"))
    finally:
        if cgroups is not None:
            cgroups.remove()
    return out, cgroups


def cgroups_here() -> bool:
    cg, _ = Cgroups.detect()
    if cg is None:
        return False
    cg.remove()
    return True


needs_cgroups = pytest.mark.skipif(not cgroups_here(), reason="cgroups are not writable here")


@needs_bwrap
@needs_cgroups
def test_a_fork_bomb_stays_bounded_and_names_the_process_limit(tmp_path: Path) -> None:
    bomb = "b() { b | b & }; b; sleep 3; echo survived"
    out, _ = run(tmp_path, job(bomb), processes="64", timeout=8)
    assert out.status == "failure"
    assert "limits.processes" in (out.error or ""), out.error
    after, _ = run(tmp_path, job("echo next"))
    assert after.status == "success" and after.result == "next"


@needs_bwrap
@needs_cgroups
def test_a_memory_hog_is_killed_and_names_the_memory_limit(tmp_path: Path) -> None:
    hog = "def main():\n    x = bytearray(600 * 1024 * 1024)\n    x[::4096] = b'1' * len(x[::4096])\n    return len(x)\n"
    out, _ = run(tmp_path, job(hog, "python3"), memory="128M")
    assert out.status == "failure"
    assert "limits.memory" in (out.error or ""), out.error
    ok, _ = run(tmp_path, job("def main():\n    return len(bytearray(10 * 1024 * 1024))\n",
                               "python3"), memory="128M")
    assert ok.status == "success" and ok.result == 10 * 1024 * 1024


@needs_bwrap
def test_cpu_time_is_limited_per_process(tmp_path: Path) -> None:
    out, _ = run(tmp_path, job("while :; do :; done"), cpu_seconds="1", timeout=15)
    assert out.status == "failure" and "limits.cpu_seconds" in (out.error or ""), out.error


@needs_bwrap
@pytest.mark.parametrize("language", ["bash", "python3"])
def test_file_size_is_limited(tmp_path: Path, language: str) -> None:
    # A limit stops the process that went past it; a script that goes on after a failed command
    # goes on here too (docs/security.md), so the writing command is the script's last.
    code = ("echo start; head -c 3000000 /dev/zero > big" if language == "bash" else
            "def main():\n    open('big', 'wb').write(bytes(3000000))\n")
    out, _ = run(tmp_path, job(code, language), file_size="1M")
    assert out.status == "failure", out
    assert "limits.file_size" in (out.error or ""), out


@needs_bwrap
def test_a_job_timeout_kills_the_whole_sandbox(tmp_path: Path) -> None:
    started = time.monotonic()
    out, _ = run(tmp_path, job("sleep 100 & sleep 100"), timeout=1)
    assert out.status == "failure" and out.error and out.error.startswith("timed out after 1s")
    assert time.monotonic() - started < 10


@needs_cgroups
def test_without_a_sandbox_the_cgroup_still_ends_what_a_job_left(tmp_path: Path) -> None:
    mark = f"{time.time_ns() % 10**9}.3"
    out, _ = run(tmp_path, job(f"nohup setsid sleep {mark} >/dev/null 2>&1 & echo started"),
                 kind="none")
    assert out.status == "success"
    deadline = time.monotonic() + 5
    while any(f"sleep\0{mark}".encode() in p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline")
              if p.exists()):
        assert time.monotonic() < deadline, "the setsid sleep outlived its unsandboxed job"
        time.sleep(0.05)
