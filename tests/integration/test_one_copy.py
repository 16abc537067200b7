"""One copy running at a time (issue 14, point 5, and point 4's results that cannot be stored).

A SIGKILLed worker's sandboxed job dies with it, setsid and double forks included; an unsandboxed
one loses its main process, and what it started lives on until a worker starts on the machine
(docs/production.md, "When two copies of a job can overlap", says so: tested here). A worker cut
off from NATS kills its job before JetStream may redeliver it (the lease, services/worker/
attempt.py), and only the redelivered copy records a result. A result JetStream refuses for
storage is written again until it is stored, without a restart and without running the job twice.

Each test has its own deployment (its own nats-server, so a test can stop it or change a stream),
the config service, one router, and workers as real processes.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import nats
import pytest
from nats.js import api

from services.common.natsserver import NatsServer
from shared import subjects
from tests.integration import harness
from tests.integration.harness import TOKEN, Proc, live_pids, needs_sandbox

ACK_WAIT = 3.0  # seconds: JetStream redelivers a job this long after its last in-progress ack


class Deployment(harness.Deployment):
    """nats-server, config service, one router; workers started by the test."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, routers=1, env={"GETOPERATE_ACK_WAIT": str(ACK_WAIT)})
        self.router_port = self.router_ports[0]

    def start(self, *groups: str) -> "Deployment":  # type: ignore[override]
        super().start()
        for group in groups:
            status, body = self.call(self.config_port, "PUT", f"/groups/{group}",
                                     {"tags": [f"t-{group}"]})
            assert status in (200, 201), body
        return self

    def worker(self, group: str, **env: str) -> Proc:
        return self.start_worker(group, **env)

    def call(self, port: int, method: str, path: str, body: Any = None,
             timeout: float = 30) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else b""
            conn.request(method, path, data, {"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def submit(self, code: str, group: str) -> str:
        status, body = self.call(self.router_port, "POST", "/jobs",
                                 {"language": "bash", "code": code, "tag": f"t-{group}"})
        assert status in (200, 201, 202), body
        return str(body["id"])

    def ended(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        status, view = self.call(self.router_port, "GET",
                                 f"/jobs/{job_id}?wait=1&timeout={timeout}", timeout=timeout + 30)
        assert status == 200 and view["status"] not in ("queued", "running"), view
        return view  # type: ignore[no-any-return]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(tmp_path)
    try:
        yield d
    finally:
        d.stop()


def wait_until(fact: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll `fact` until it is truthy; fail naming `what` past the deadline."""
    deadline = time.monotonic() + timeout
    while not (value := fact()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)
    return value


def alive(pid: int) -> bool:
    """A process that still runs (a zombie has ended: it only waits to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def kill_all(*needles: str) -> None:
    for needle in needles:
        for pid in live_pids(needle):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def marks() -> tuple[str, str]:
    """Two unique sleep arguments: the job's processes, seen from the host by their argv."""
    n = time.time_ns() % 10**9
    return f"sleep 987.{n}", f"sleep 986.{n}"


def results_of(nats_url: str, job_id: str) -> list[int]:
    """The attempt of each job.finished event of `job_id` in GO_JOB_EVENTS."""

    async def read() -> list[int]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            found: list[int] = []
            seq = 1
            while True:
                try:
                    msg = await js.get_msg(subjects.JOB_EVENTS_STREAM, seq=seq, next=True,
                                           subject=subjects.job_events_subject(job_id))
                except nats.js.errors.NotFoundError:
                    return found
                event = json.loads(msg.data or b"{}")
                if event["type"] == "job.finished":
                    found.append(int(event["attempt"]))
                seq = int(msg.seq or 0) + 1
        finally:
            await nc.close()

    return asyncio.run(read())


async def _job_events_limit(nats_url: str, max_msgs: int | None,
                            discard: api.DiscardPolicy) -> api.DiscardPolicy:
    """Set GO_JOB_EVENTS' max_msgs (None: the number it holds now: full) and discard policy;
    returns the discard policy it had."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.JOB_EVENTS_STREAM)
        cfg, before = info.config, info.config.discard or api.DiscardPolicy.OLD
        cfg.max_msgs = info.state.messages if max_msgs is None else max_msgs
        cfg.discard = discard
        await js.update_stream(cfg)
        return before
    finally:
        await nc.close()


# A job that never ends by itself: a background child and a setsid double fork (both outside the
# main process's reach), and a foreground loop.
def forever(mark: str, mark2: str, before: str = "") -> str:
    return f"{before}{mark} & ( setsid {mark2} & ) ; while :; do sleep 0.1; done"


@needs_sandbox
def test_a_sigkilled_workers_sandboxed_job_dies_with_it(deployment: Deployment) -> None:
    """bwrap (the default): --die-with-parent and the job's own PID namespace end every process
    of the job, setsid and double forks included, as soon as the worker is SIGKILLed; the
    redelivered copy can never run beside them."""
    d = deployment.start("boxed")
    worker = d.worker("boxed", JOB_SANDBOX="bwrap")
    mark, mark2 = marks()
    d.submit(forever(mark, mark2), "boxed")
    try:
        wait_until(lambda: live_pids(mark) and live_pids(mark2), "the job's processes ran")
        worker.stop(signal.SIGKILL)
        wait_until(lambda: not live_pids(mark) and not live_pids(mark2),
                   "every process of the job ended with its worker", timeout=10)
    finally:
        kill_all(mark, mark2)


def test_a_sigkilled_workers_unsandboxed_job_loses_its_main_process_not_its_children(
        deployment: Deployment, tmp_path: Path) -> None:
    """JOB_SANDBOX=none: the job's main process dies with the worker (setpriv --pdeathsig), so
    the script stops where it was; what it started (a background child, a setsid daemon) lives
    on, until a worker starts on the machine and kills what dead workers' runs left in their
    cgroups (where cgroups are writable). The redelivered copy then runs and records the only
    result."""
    d = deployment.start("bare")
    first = d.worker("bare", JOB_SANDBOX="none")
    mark, mark2 = marks()
    main_pid, again = tmp_path / "main.pid", tmp_path / "ran-once"
    # Unsandboxed, the job sees the host: it leaves its pid where the test reads it, and its
    # redelivered copy (which finds the flag) ends at once.
    job = d.submit(forever(mark, mark2, before=(
        f"if [ -e {again} ]; then echo second copy; exit 0; fi; touch {again}; "
        f"echo $$ > {main_pid}; ")), "bare")
    try:
        wait_until(lambda: main_pid.exists() and main_pid.read_text().strip()
                   and live_pids(mark) and live_pids(mark2), "the job's processes ran")
        pid = int(main_pid.read_text())
        assert parent_of(pid) == first.p.pid  # the worker's own child (the exec chain)
        first.stop(signal.SIGKILL)
        wait_until(lambda: not alive(pid), "the job's main process ended with its worker",
                   timeout=10)
        # What it started lives on: the documented caveat of `none`.
        assert live_pids(mark) and live_pids(mark2)
        if "cgroups_unavailable" in first.output():
            pytest.skip("no writable cgroups here: nothing kills what a dead worker's job left")
        d.worker("bare", JOB_SANDBOX="none")
        wait_until(lambda: not live_pids(mark) and not live_pids(mark2),
                   "a worker starting on the machine killed what the dead worker's job left")
        view = d.ended(job)
        assert (view["status"], view["result"], view["attempts"]) == (
            "success", "second copy", 2), view
        assert results_of(d.nats.url, job) == [2]
    finally:
        kill_all(mark, mark2)


@pytest.mark.timeout(240)
def test_a_worker_cut_off_from_nats_kills_its_job_before_it_can_be_redelivered(
        deployment: Deployment) -> None:
    """nats-server stops under a running job: the worker's in-progress acks go unanswered, so
    it kills the job when its lease runs out (1.75 s after the last answered ack, ack_wait
    being 3) while NATS is still away, and logs job_lease_lost. Once NATS is back JetStream
    redelivers the job, and the redelivered copy records the one result."""
    d = deployment.start("lease")
    worker = d.worker("lease")  # bwrap where it works, else none (harness.cli_env)
    mark, _ = marks()
    # The first copy would run for 16 minutes; a copy that finds the test listening (it does
    # once the first is gone) ends at once. A job may connect out, sandboxed or not.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        job = d.submit(f"if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then echo second;"
                       f" else {mark}; fi", "lease")
        try:
            wait_until(lambda: live_pids(mark), "the job ran")
            d.nats.stop()
            wait_until(lambda: not live_pids(mark), "the job was killed while NATS was away")
            lost = wait_until(lambda: [e for e in worker.log_events("job_lease_lost")
                                       if e.get("job_id") == job], "job_lease_lost was logged")
            assert lost[0]["phase"] == "running"
            assert d.nats.proc is not None and d.nats.proc.poll() is not None  # still away
            listener.listen()
            d.nats = NatsServer(d.nats.data_dir, port=d.nats.port).start()
            view = d.ended(job, timeout=90)
        finally:
            kill_all(mark)
    assert (view["status"], view["result"]) == ("success", "second"), view
    recorded = results_of(d.nats.url, job)
    assert len(recorded) == 1 and recorded[0] >= 2, recorded  # the redelivery's, alone


@pytest.mark.timeout(180)
def test_a_result_refused_for_storage_is_stored_once_there_is_room(
        deployment: Deployment) -> None:
    """GO_JOB_EVENTS refuses writes for storage (here: at its max_msgs with discard new, err_code
    10077) when a running job ends: the worker keeps the delivery (no redelivery, the job runs
    once), logs job_result_retry, and stores the result when the stream has room again,
    without a restart."""
    d = deployment.start("full")
    worker = d.worker("full", JOB_SANDBOX="none")
    gate = d.root / "gate"
    # No process left behind: unsandboxed, the run would last as long as it (its stdout).
    job = d.submit(f"while [ ! -e {gate} ]; do sleep 0.05; done; echo stored", "full")

    def status() -> str:
        return str(d.call(d.router_port, "GET", f"/jobs/{job}")[1]["status"])

    def retries() -> list[dict[str, Any]]:
        return [e for e in worker.log_events("job_result_retry") if e.get("job_id") == job]

    wait_until(lambda: status() == "running", "the job ran and its job.started was stored")
    discard = asyncio.run(_job_events_limit(d.nats.url, None, api.DiscardPolicy.NEW))
    gate.touch()  # the job ends now, and its result cannot be stored
    wait_until(lambda: len(retries()) >= 3, "job_result_retry was logged three times", timeout=60)
    assert {(e["write"], e["reason"]) for e in retries()} == {("job.finished", "storage_full")}
    assert status() == "running"  # held, not given up: no redelivery meanwhile
    asyncio.run(_job_events_limit(d.nats.url, -1, discard))
    view = d.ended(job)
    assert (view["status"], view["result"], view["attempts"]) == ("success", "stored", 1)
    assert results_of(d.nats.url, job) == [1]
    assert len([e for e in worker.log_events("job_started") if e.get("job_id") == job]) == 1
    assert not worker.log_events("job_lease_lost")


def test_an_unsandboxed_job_ends_when_its_main_process_does(deployment: Deployment) -> None:
    """JOB_SANDBOX=none: a job that exits leaving a background child still holding its stdout
    ends at once (its result recorded), and what it left is killed, as bwrap's namespace would;
    it does not stay "running" until the child ends or the job times out."""
    d = deployment.start("bare2")
    d.worker("bare2", JOB_SANDBOX="none")
    mark, _ = marks()
    try:
        job_id = d.submit(f"{mark} & echo done", "bare2")
        view = d.ended(job_id, timeout=30)
        assert view["status"] == "success" and view["result"] == "done", view
        wait_until(lambda: not live_pids(mark), "the child the job left was killed", timeout=10)
    finally:
        kill_all(mark)
