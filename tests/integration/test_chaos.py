"""The chaos test: jobs over several tags and groups while workers are SIGKILLed and restarted at
random, a hot reload moves a tag, the config service is killed once and nats-server restarted
once. Every job must end with exactly one result; config must equal the fold of its log; verify
must pass. CHAOS_JOBS / CHAOS_SECONDS scale it up (the CI size is small)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import msgspec
import pytest

from cli.client import CliError
from shared.codec import decode
from shared.events import Recorded
from shared.state import ConfigState, fold
from tests.integration.conftest import Suite, running_suite
from tests.integration.test_routing_e2e import finished_events
from tests.integration.harness import Proc, cli

JOBS = int(os.environ.get("CHAOS_JOBS", "80"))
SECONDS = float(os.environ.get("CHAOS_SECONDS", "12"))
ENV = {"GETOPERATE_ACK_WAIT": "2", "GETOPERATE_MAX_DELIVER": "20"}


def retry(fn: Callable[[], Any], within: float = 60) -> Any:
    """Calls made while the chaos runs may hit a service that is restarting: try again."""
    deadline = time.monotonic() + within
    while True:
        try:
            return fn()
        except CliError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def pid_of(pattern: str) -> int:
    ps = subprocess.run(["ps", "-eo", "pid,args", "-ww"], capture_output=True, text=True).stdout
    return int(next(line.split()[0] for line in ps.splitlines() if pattern in line))


@pytest.fixture
def chaos_suite(tmp_path: Path) -> Iterator[Suite]:
    with running_suite(tmp_path, ENV, kill_extra=True) as s:
        yield s


def test_chaos(chaos_suite: Suite) -> None:
    s = chaos_suite
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "7")))
    s.api.set_group("chaos-a", tags=["c1", "c2"])
    s.api.set_group("chaos-b", tags=["c2", "c3"])
    workers: dict[str, Proc] = {}

    def start(name: str) -> None:
        workers[name] = s.worker(name, WORKER_GROUP=name.split("#")[0], **ENV)

    for name in ("chaos-a#1", "chaos-a#2", "chaos-b#1", "chaos-b#2"):
        start(name)
    ids: list[str] = []
    stop = threading.Event()

    def submit() -> None:
        for i in range(JOBS):
            tag = rng.choice(["c1", "c2", "c3"])
            ids.append(retry(lambda: s.api.submit(f"sleep 0.{i % 4 + 1}; echo {i}", tag=tag))["id"])
            time.sleep(SECONDS / JOBS)
        stop.set()

    submitter = threading.Thread(target=submit)
    submitter.start()
    kills = 0
    moved = config_killed = nats_restarted = False
    started_at = time.monotonic()
    while not stop.is_set():
        time.sleep(rng.uniform(0.4, 1.2))
        victim = rng.choice(sorted(workers))
        workers[victim].stop(signal.SIGKILL)
        kills += 1
        start(victim)
        elapsed = time.monotonic() - started_at
        if not moved and elapsed > SECONDS * 0.3:
            retry(lambda: s.api.set_group("chaos-b", tags=["c2"]))
            retry(lambda: s.api.set_group("chaos-a", tags=["c1", "c2", "c3"]))
            moved = True
        if not config_killed and elapsed > SECONDS * 0.5:
            os.kill(pid_of("cli.main config"), signal.SIGKILL)  # `up` restarts it
            config_killed = True
        if not nats_restarted and elapsed > SECONDS * 0.7:
            os.kill(pid_of(f"{s.root}/.getoperate/nats/nats.conf"), signal.SIGKILL)  # and NATS
            nats_restarted = True
    submitter.join()
    assert moved and config_killed and nats_restarted and kills >= 3
    views = [retry(lambda j=j: s.api.job(j, timeout=120), within=180) for j in ids]
    assert [v["status"] for v in views] == ["success"] * len(ids), [v for v in views if v["status"] != "success"][:3]
    assert sorted(int(v["result"]) for v in views) == list(range(JOBS))
    finished = asyncio.run(finished_events(s.nats_url))
    assert all(finished[j] == 1 for j in ids), {j: finished[j] for j in ids if finished[j] != 1}
    redeliveries = sum(max(v["attempts"] - 1, 0) for v in views)
    suppressed = sum(len(p.log_events(e)) for p in s.extra
                     for e in ("job_result_already_stored", "job_result_superseded",
                               "job_changed_while_starting"))
    # Config equals the fold of its own log, and the log and stream agree byte for byte.
    log = retry(lambda: s.api.call("GET", "config", "/events?limit=10000"))
    folded = fold(decode(json.dumps(r), Recorded) for r in log)
    state = msgspec.convert(retry(lambda: s.api.call("GET", "config", "/state")), ConfigState)
    assert folded == state
    verify = retry(lambda: cli("verify", cwd=s.root))
    assert verify.returncode == 0, verify.stderr
    print(f"\nchaos: {len(ids)} jobs, {kills} worker kills, 1 config kill, 1 nats restart, "
          f"1 hot reload; {redeliveries} redeliveries, {suppressed} duplicate runs or results"
          f" suppressed, {sum(finished[j] for j in ids) - len(ids)} duplicate results stored")
