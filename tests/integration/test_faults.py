"""Faults with real processes: SIGKILLed workers, dead letters, cancellation, timeouts, failing
init scripts, NATS down during a config write, a NATS restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import nats
import pytest

from services.common.natsserver import NatsServer
from shared import subjects
from tests.integration.configproc import ConfigProc
from tests.integration.conftest import Suite, running_suite
from tests.integration.harness import (
    Proc, cli, finished_events, free_port_base, live_pids, ready, wait_until,
)

FAST = {"GETOPERATE_ACK_WAIT": "2", "GETOPERATE_MAX_DELIVER": "2"}


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """A suite whose jobs are redelivered 2 s after their worker dies, dead-lettered after 2."""
    with running_suite(tmp_path_factory.mktemp("faults"), FAST, kill_extra=True) as s:
        yield s


def worker(s: Suite, group: str, **env: str) -> Proc:
    return s.worker(group, WORKER_GROUP=group, **FAST, **env)


def wait_status(s: Suite, job_id: str, status: str, timeout: float = 30) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        view = s.api.job(job_id, wait=False)
        if view["status"] == status:
            return view  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"job stayed {view['status']}, expected {status}: {view}")
        time.sleep(0.05)


def test_a_job_of_a_killed_worker_is_redelivered_and_recorded_once(fast: Suite) -> None:
    s = fast
    s.api.set_group("kill", tags=["t-kill"])
    first = worker(s, "kill")
    s.api.wait_workers(ready("kill"))
    job = s.api.submit("sleep 2; echo survived", tag="t-kill")["id"]
    running = wait_status(s, job, "running")
    assert running["worker"].startswith("kill-")
    first.stop(signal.SIGKILL)
    second = worker(s, "kill")
    view = s.api.job(job, timeout=60)
    assert (view["status"], view["result"], view["attempts"]) == ("success", "survived", 2)
    assert view["worker"] != running["worker"]
    assert asyncio.run(finished_events(s.nats_url))[job] == 1
    assert second.p.poll() is None


def test_a_job_that_keeps_killing_its_worker_is_dead_lettered(fast: Suite) -> None:
    s = fast
    s.api.set_group("crash", tags=["t-crash"])
    # Only an unsandboxed job can reach its worker (test_sandbox.py shows a sandboxed one can't);
    # here it stands for any way a worker dies mid-job (OOM killer, host lost).
    job = s.api.submit("kill -9 $PPID; sleep 1", tag="t-crash")["id"]
    deaths = 0
    deadline = time.monotonic() + 90
    while s.api.job(job, wait=False)["status"] != "failure":
        assert time.monotonic() < deadline, "the job was never dead-lettered"
        proc = worker(s, "crash", JOB_SANDBOX="none")
        try:
            proc.p.wait(15)  # the job kills it...
            deaths += 1
        except Exception:
            pass
        # ...and JetStream redelivers it after ack_wait, to the next worker started
    view = s.api.job(job, wait=False)
    assert view["dead_letter"] is True and "dead-lettered after 2 deliveries" in view["error"]
    assert deaths == 2

    async def parked() -> dict:  # type: ignore[type-arg]
        nc = await nats.connect(s.nats_url)
        try:
            msg = await nc.jetstream().get_last_msg(subjects.DEAD_STREAM, subjects.dead_subject("t-crash"))
            return json.loads(msg.data)  # type: ignore[no-any-return]
        finally:
            await nc.close()

    dead = asyncio.run(parked())
    assert dead["job"]["id"] == job and dead["deliveries"] == 3
    started = [e for e in dead["history"] if e["type"] == "job.started"]
    # The redelivery's start is always recorded; the first attempt's only if it got out before
    # the job killed its worker (docs/configuration.md, Delivery).
    assert 2 in [e["attempt"] for e in started]


def test_cancel_kills_a_running_job_and_the_worker_goes_on(fast: Suite) -> None:
    s = fast
    s.api.set_group("cancelg", tags=["t-cancel"])
    worker(s, "cancelg")
    mark = f"{time.time_ns() % 10**9}.5"  # a unique sleep argument: the job's process, seen from the host
    job = s.api.submit(f"sleep {mark} & wait", tag="t-cancel")["id"]
    wait_status(s, job, "running")
    deadline = time.monotonic() + 10
    while not live_pids(f"sleep {mark}"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    out = cli("cancel", job, cwd=s.root)
    assert out.returncode == 0, out.stderr
    view = wait_status(s, job, "cancelled", timeout=15)
    assert "cancelled" in view["error"]
    assert view["duration_ms"] > 0, view  # it ran until killed: not "cancelled in 0 ms"
    deadline = time.monotonic() + 5
    while live_pids(f"sleep {mark}"):
        assert time.monotonic() < deadline, "the job's process survived cancellation"
        time.sleep(0.05)
    after = s.api.job(s.api.submit("echo next", tag="t-cancel")["id"])
    assert after["result"] == "next"
    again = cli("cancel", job, cwd=s.root)
    assert again.returncode == 1 and "already ended" in again.stderr


def test_cancelling_a_flow_kills_its_running_step(fast: Suite) -> None:
    """The step's worker watches for its flow's cancel (workers may not write cancels)."""
    s = fast
    s.api.set_group("cancelg", tags=["t-cancel"])
    worker(s, "cancelg")
    mark = f"{time.time_ns() % 10**9}.25"
    s.api.call("PUT", "config", "/flows/ws1/f/slowflow", {"preserve_step_tags": True, "steps": [
        {"name": "slow", "language": "bash", "content": f"sleep {mark} & wait", "tag": "t-cancel"},
        {"name": "never", "language": "bash", "content": "echo never"}]})
    flow = s.api.call("POST", "router", "/jobs", {"workspace": "ws1", "path": "f/slowflow"})["id"]
    deadline = time.monotonic() + 20
    while not live_pids(f"sleep {mark}"):
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    out = cli("cancel", flow, cwd=s.root)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 15
    while live_pids(f"sleep {mark}"):
        assert time.monotonic() < deadline, "the step's process survived its flow's cancel"
        time.sleep(0.05)
    view = wait_status(s, flow, "cancelled", timeout=15)
    assert view["status"] == "cancelled"


def test_cancel_a_queued_job_means_it_never_runs(fast: Suite, tmp_path: Path) -> None:
    s = fast
    marker = tmp_path / "ran"
    s.api.set_group("cq", tags=["t-cq"])
    job = s.api.submit(f"touch {marker}", tag="t-cq")["id"]
    view = json.loads(cli("cancel", job, "--json", cwd=s.root).stdout)
    assert view["status"] == "cancelled" and "before it started" in view["error"]
    worker(s, "cq", JOB_SANDBOX="none")  # unsandboxed, so the marker would appear if it ran
    later = s.api.job(s.api.submit("echo ok", tag="t-cq")["id"])
    assert later["status"] == "success"
    assert not marker.exists()


def test_per_script_timeout(fast: Suite) -> None:
    s = fast
    (s.root / "slow.sh").write_text("sleep 10\n")
    cli("script", "deploy", "ws1/f/slow", "slow.sh", "--language", "bash", "--timeout", "0.5",
        cwd=s.root, check=True)
    view = s.api.job(s.api.call("POST", "router", "/jobs", {"workspace": "ws1", "path": "f/slow"})["id"])
    assert (view["status"], view["error"]) == ("failure", "timed out after 0.5s")


def test_a_failing_init_script_keeps_the_worker_out_until_fixed(fast: Suite) -> None:
    s = fast
    s.api.set_group("badinit", tags=["t-badinit"], init_script="echo broken >&2; exit 3\n")
    proc = worker(s, "badinit")
    ws = s.api.wait_workers(lambda ws: any(w["group"] == "badinit" and w["init_status"] == "failed"
                                           for w in ws))
    status = [w for w in ws if w["group"] == "badinit"][0]
    assert "exited with 3" in status["init_error"] and "broken" in status["init_error"]
    table = cli("workers", cwd=s.root).stdout
    assert "init-failed" in [line for line in table.splitlines() if "badinit" in line][0].split()
    job = s.api.submit("echo finally", tag="t-badinit")["id"]
    failed = len(proc.log_events("init_script_failed"))
    # The worker tried its script again with the job waiting on its tag: it still took nothing.
    wait_until(lambda: len(proc.log_events("init_script_failed")) > failed,
               "another failed run of the init script", 60)
    assert s.api.job(job, wait=False)["status"] == "queued"
    assert proc.p.poll() is None  # retried with backoff, never a crash
    s.api.set_group("badinit", init_script="echo fixed\n")
    assert s.api.job(job, timeout=30)["result"] == "finally"
    assert len(proc.log_events("init_script_failed")) >= 1


def test_a_config_write_while_nats_is_down_is_stored_then_published(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    config = ConfigProc(tmp_path, nats_server.url).start()
    try:
        nats_server.stop()
        status, answer = config.call("PUT", "/groups/offline", {"tags": ["o1"]})
        assert status == 200 and answer["published"] is False
        restarted = NatsServer(nats_server.data_dir, port=nats_server.port).start()
        try:
            deadline = time.monotonic() + 30
            while config.call("GET", "/healthz")[1]["published_seq"] < answer["seq"]:
                assert time.monotonic() < deadline, "the outbox never published"
                time.sleep(0.1)

            async def on_stream() -> int:
                nc = await nats.connect(restarted.url)
                try:
                    info = await nc.jetstream().stream_info(subjects.CONFIG_STREAM)
                    return int(info.state.last_seq)
                finally:
                    await nc.close()

            assert asyncio.run(on_stream()) == answer["seq"]
        finally:
            config.stop()
            restarted.stop()
    finally:
        if config.proc and config.proc.p.poll() is None:
            config.stop()


def test_a_nats_restart_loses_no_queued_job_and_services_reconnect(tmp_path: Path) -> None:
    base = free_port_base()
    up = Proc(["up", "--port-base", str(base)], cwd=tmp_path, env={}, name="up")
    s = Suite(tmp_path, base, up)
    try:
        up.wait_for("Ctrl-C stops everything", timeout=60)
        s.api.set_group("restart", tags=["t-restart"])
        queued = [s.api.submit(f"echo {i}", tag="t-restart")["id"] for i in range(10)]
        ps = subprocess.run(["ps", "-eo", "pid,args", "-ww"], capture_output=True, text=True).stdout
        nats_pid = int(next(line.split()[0] for line in ps.splitlines()
                            if f"{tmp_path}/.getoperate/nats/nats.conf" in line))
        os.kill(nats_pid, signal.SIGKILL)  # `up` notices and starts it again on the same store
        up.wait_for("nats-server exited", timeout=30)
        try:
            s.worker("restart", WORKER_GROUP="restart")
            views = [s.api.job(j, timeout=60) for j in queued]
            assert [v["result"] for v in views] == [str(i) for i in range(10)]
            assert s.api.set_group("restart", tags=["t-restart", "t-more"])["published"] is True
            later = s.api.job(s.api.submit("echo default-worker-back")["id"], timeout=60)
            assert later["result"] == "default-worker-back"  # up's own workers reconnected
        finally:
            for proc in s.extra:
                proc.stop()
            up.stop(signal.SIGINT, timeout=60)
    finally:
        if up.p.poll() is None:
            up.stop(signal.SIGKILL)


def test_jobs_that_cannot_start_never_jam_the_worker(fast: Suite) -> None:
    """A job with an empty id (it cannot name its events) and a body that is no job, on the tag
    of a one-slot worker: both are ended at once, never retried, and valid jobs still run."""
    s = fast
    s.api.set_group("jam", tags=["t-jam"])
    proc = worker(s, "jam")
    s.api.wait_workers(ready("jam", tags={"t-jam"}))
    bad = {"id": "", "workspace": "main", "language": "bash", "code": "echo never", "tag": "t-jam",
           "submitted_at": time.time()}

    async def inject() -> None:
        nc = await nats.connect(s.nats_url)  # admin: a worker may not put jobs on a queue
        try:
            js = nc.jetstream()
            await js.publish(subjects.job_subject("t-jam"), json.dumps(bad).encode())
            await js.publish(subjects.job_subject("t-jam"), b'{"id": "x", "code": ')
        finally:
            await nc.close()

    asyncio.run(inject())

    async def settled() -> bool:
        """Both bad messages delivered and ended: none pending, none waiting for an ack (a
        message that was nak'd or left to time out would be one of these)."""
        nc = await nats.connect(s.nats_url)
        try:
            info = await nc.jetstream().consumer_info(subjects.JOBS_STREAM,
                                                      subjects.tag_consumer("t-jam"))
            return (info.delivered.stream_seq > 0 and info.num_pending == 0
                    and info.num_ack_pending == 0 and info.num_redelivered == 0)
        finally:
            await nc.close()

    wait_until(lambda: proc.log_events("job_dead_lettered") and proc.log_events("job_parked")
               and asyncio.run(settled()), "both bad messages ended, not redelivered", 60)
    views = [s.api.job(s.api.submit(f"echo ok{i}", tag="t-jam")["id"]) for i in range(3)]
    assert [v["result"] for v in views] == ["ok0", "ok1", "ok2"]
    dead = proc.log_events("job_dead_lettered")
    assert [d["reason"] for d in dead] == ["its id is empty"]
    assert len(proc.log_events("job_parked")) == 1  # the body that is no job, as it came
    assert not proc.log_events("job_not_started") and not proc.log_events("job_result_not_recorded")
    assert "permissions violation" not in proc.output().lower()

    async def parked() -> list[tuple[dict[str, str], bytes]]:
        nc = await nats.connect(s.nats_url)
        found = []
        try:
            js = nc.jetstream()
            seq = 1
            for _ in range(2):
                msg = await js.get_msg(subjects.DEAD_STREAM, seq=seq, next=True,
                                       subject=subjects.dead_subject("t-jam"))
                found.append((dict(msg.headers or {}), msg.data or b""))
                seq = int(msg.seq or 0) + 1
            return found
        finally:
            await nc.close()

    letters = asyncio.run(parked())
    whole = [json.loads(data) for headers, data in letters
             if subjects.DEAD_REASON_HEADER not in headers]
    assert len(whole) == 1
    assert whole[0]["job"]["id"] == "" and whole[0]["job"]["code"] == "echo never"
    raw = [(h, data) for h, data in letters if subjects.DEAD_REASON_HEADER in h]
    assert raw[0][1] == b'{"id": "x", "code": '  # parked as it came, with why
    assert raw[0][0][subjects.DEAD_REASON_HEADER].startswith("it is not a job: ")


def test_malformed_and_unforged_config_messages_are_rejected_not_fatal(fast: Suite) -> None:
    """Junk on a job subject and on the group's config subject: the worker and the router log
    and skip it, and the next real change still lands (the outbox removes the strays). A
    newer-version or unknown-type event the config service signed is skipped: that
    is tests/unit/test_admission.py; here nobody but the config service can sign one."""
    s = fast
    s.api.set_group("garb", tags=["t-garb"])
    proc = worker(s, "garb")
    s.api.wait_workers(ready("garb", tags={"t-garb"}))

    async def inject() -> None:
        nc = await nats.connect(s.nats_url)
        js = nc.jetstream()
        try:
            await js.publish(subjects.job_subject("t-garb"), b"\xff\x00 not json")
            await js.publish(subjects.job_subject("t-garb"), b'{"v": 9, "id": 1}')
            subject = subjects.group_subject("garb")
            await js.publish(subject, b"garbage")
            info = await js.stream_info(subjects.CONFIG_STREAM)
            seq = info.state.last_seq + 1
            unknown = {"seq": seq, "id": "u", "time": "t", "actor": "x", "prev_hash": "0" * 64,
                       "hash": "0" * 64, "event": {"type": "group.colour_set", "group": "garb"}}
            await js.publish(subject, json.dumps(unknown).encode())
            newer = {"seq": seq + 1, "id": "n", "time": "t", "actor": "x", "prev_hash": "0" * 64,
                     "hash": "0" * 64, "event": {"type": "group.tags_set", "v": 2, "group": "garb",
                                                 "tags": ["t-garb", "t-newer"], "colour": "red"}}
            await js.publish(subject, json.dumps(newer).encode())
        finally:
            await nc.close()

    asyncio.run(inject())
    deadline = time.monotonic() + 10
    while len(proc.log_events("config_event_rejected")) < 3:
        assert time.monotonic() < deadline, proc.output()[-3000:]
        time.sleep(0.05)
    assert {e["reason"] for e in proc.log_events("config_event_rejected")} == {"malformed", "unsigned"}
    assert "t-newer" not in [w for w in s.api.workers() if w["group"] == "garb"][0]["tags"]
    s.api.set_group("garb", tags=["t-garb", "t-real"])
    s.api.wait_workers(ready("garb", tags={"t-garb", "t-real"}))
    assert s.api.job(s.api.submit("echo alive", tag="t-real")["id"])["result"] == "alive"
    assert proc.p.poll() is None
    assert len(proc.log_events("job_parked")) == 2
    router_log = s.up.output()
    assert "config_event_rejected" in router_log and "config_stream_foreign_message" in router_log
