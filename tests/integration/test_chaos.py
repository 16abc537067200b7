"""The chaos test: jobs over several tags and groups while workers are SIGKILLed and restarted at
random, a hot reload moves a tag, the config service is killed once and nats-server restarted
once, poison sits on a queue; then the job queue is filled to its limit and drained. Jobs are
submitted by a retrying client with idempotency keys (the CLI's), so a submission cut by a
restart is repeated, never doubled. Every job must end with exactly one result and no job may
run that no answer named; config must equal the fold of its log; verify must pass.
CHAOS_JOBS / CHAOS_SECONDS scale it up (the CI size is small)."""

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

import urllib.error
import urllib.request

import msgspec
import nats
import pytest
from nats.js import api

from cli.client import CliError, Endpoints
from cli.client import submit as submit_with_key
from shared import subjects
from shared.codec import decode
from shared.events import Recorded
from shared.state import ConfigState, fold
from tests.integration.conftest import Suite, running_suite
from tests.integration.harness import Proc, cli, finished_events

JOBS = int(os.environ.get("CHAOS_JOBS", "60"))
SECONDS = float(os.environ.get("CHAOS_SECONDS", "9"))
ENV = {"GETOPERATE_ACK_WAIT": "2", "GETOPERATE_MAX_DELIVER": "20",
       # A 64 MiB JetStream budget: the job queue's share (20%) fills with about 60 big jobs.
       "GETOPERATE_STORE_BYTES": str(64 * 1024 * 1024)}
BIG = "echo big # " + "x" * 200_000
POISON = [b"\xff not json", json.dumps({"v": 1, "id": "", "workspace": "main", "language": "bash",
                                        "code": "echo x", "tag": "c1", "submitted_at": 1.0}).encode()]


def retry(fn: Callable[[], Any], within: float = 60) -> Any:
    """Calls made while the chaos runs may hit a service that is restarting: try again (a
    refusal for storage is an answer, not a restart)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return fn()
        except CliError as exc:
            if time.monotonic() > deadline or "HTTP 507" in exc.message:
                raise
            time.sleep(0.3)


def pid_of(pattern: str, parent: int | None = None) -> int:
    """The process whose command line holds `pattern` (a child of `parent` when given): other
    tests run their own services on this machine at the same time, and must be left alone."""
    ps = subprocess.run(["ps", "-eo", "pid,ppid,args", "-ww"], capture_output=True,
                        text=True).stdout
    return int(next(line.split()[0] for line in ps.splitlines()[1:] if pattern in line
                    and (parent is None or int(line.split()[1]) == parent)))


@pytest.fixture
def chaos_suite(tmp_path: Path) -> Iterator[Suite]:
    with running_suite(tmp_path, ENV, kill_extra=True) as s:
        yield s


def test_chaos(chaos_suite: Suite) -> None:
    s = chaos_suite
    seed = int(os.environ.get("CHAOS_SEED", "7"))
    rng = random.Random(seed)  # the killer's choices
    tags_rng = random.Random(seed + 1)  # the submitter's, in its own thread: each reproducible
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
            tag = tags_rng.choice(["c1", "c2", "c3"])
            ids.append(keyed(f"sleep 0.{i % 4 + 1}; echo {i}", tag, f"chaos-{i}")["id"])
            time.sleep(SECONDS / JOBS)
        stop.set()

    def keyed(code: str, tag: str, key: str) -> dict[str, Any]:
        """The CLI's retrying client: the same key until the router answers (`up` restarts
        what is killed), through NATS restarts and config kills."""
        ep = Endpoints(s.root / ".getoperate")
        return retry(lambda: submit_with_key(
            f"{ep.router_url}/jobs", ep.token(), {"language": "bash", "code": code, "tag": tag},
            key, 60.0, lambda line: None))

    asyncio.run(_publish(s.nats_url, subjects.job_subject("c1"), POISON))

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
            os.kill(pid_of("cli.main config", parent=s.up.p.pid), signal.SIGKILL)  # `up` restarts it
            config_killed = True
        if not nats_restarted and elapsed > SECONDS * 0.7:
            os.kill(pid_of(f"{s.root}/.getoperate/nats/nats.conf"), signal.SIGKILL)  # and NATS
            nats_restarted = True
    submitter.join()
    assert moved and config_killed and nats_restarted and kills >= 3
    # Storage: fill the job queue's share with jobs for a tag nobody serves yet, until JetStream
    # refuses; the refusal is immediate and says so; serving the tag drains it and ends it.
    filled: list[str] = []
    ep = Endpoints(s.root / ".getoperate")
    for i in range(400):
        try:
            filled.append(keyed(BIG, "c-full", f"full-{i}")["id"])
        except CliError as exc:
            assert "HTTP 507" in exc.message and "no room" in exc.message, exc.message
            break
    assert 20 < len(filled) < 400, len(filled)
    ready = retry(lambda: _get(f"{ep.router_url}/readyz"))
    assert ready[0] == 503 and "GO_JOBS" in ready[1]["storage_full"], ready
    retry(lambda: s.api.set_group("chaos-a", tags=["c1", "c2", "c3", "c-full"]))
    deadline = time.monotonic() + 120
    while _get(f"{ep.router_url}/readyz")[0] != 200:
        assert time.monotonic() < deadline, "the router never saw room again"
        time.sleep(0.5)
    ids += filled
    views = [retry(lambda j=j: s.api.job(j, timeout=120), within=180) for j in ids]
    assert [v["status"] for v in views] == ["success"] * len(ids), [v for v in views if v["status"] != "success"][:3]
    assert sorted(int(v["result"]) for v in views if v["result"] != "big") == list(range(JOBS))
    finished = asyncio.run(finished_events(s.nats_url))
    assert all(finished[j] == 1 for j in ids), {j: finished[j] for j in ids if finished[j] != 1}
    # 0 duplicates: every job that ran was named by an answer (the refused one never ran).
    ran = {j for j in finished if j not in ids}
    assert all(retry(lambda j=j: s.api.job(j, wait=False))["error"].startswith("not enqueued")
               for j in ran), ran
    # The poison was parked with its reason, and c1 kept serving (its jobs all succeeded).
    assert asyncio.run(_dead_reasons(s.nats_url, "c1")) >= len(POISON)
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
          f"1 hot reload, {len(POISON)} poison messages, job queue filled with {len(filled)} big"
          f" jobs and drained; {redeliveries} redeliveries, {suppressed} duplicate runs or results"
          f" suppressed, {sum(finished[j] for j in ids) - len(ids)} duplicate results stored")


async def _publish(url: str, subject: str, bodies: list[bytes]) -> None:
    nc = await nats.connect(url)
    try:
        for i, body in enumerate(bodies):
            await nc.jetstream().publish(subject, body, headers={"Nats-Msg-Id": f"poison-{i}"})
    finally:
        await nc.close()


async def _dead_reasons(url: str, tag: str) -> int:
    """Messages parked on GO_DEAD for `tag` with a reason (header or DeadLetter.reason)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subjects.dead_subject(tag), durable=None,
                                      stream=subjects.DEAD_STREAM,
                                      config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE))
        n = 0
        try:
            while True:
                for msg in await sub.fetch(100, timeout=2):
                    header = (msg.headers or {}).get(subjects.DEAD_REASON_HEADER)
                    n += bool(header or json.loads(msg.data).get("reason"))
        except (nats.errors.TimeoutError, asyncio.TimeoutError):  # nats-py raises either
            return n
    finally:
        await nc.close()


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
