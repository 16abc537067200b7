"""Submissions you can retry (issue 14, points 1 and 2): an idempotency key names one job across
routers, router kills and NATS outages; an answer says when a job's outcome is unknown.

One deployment for the module: its own nats-server (so a test can stop, pause or restart it),
the config service, two routers, one worker. Every count is read from GO_JOB_EVENTS itself."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import nats
import pytest

from services.common.natsserver import NatsServer
from shared import subjects
from tests.integration.harness import TOKEN, Deployment, cli, counts, job_events, request

TAG = "idem"


def job(code: str, workspace: str = "main") -> dict[str, Any]:
    return {"language": "bash", "code": code, "tag": TAG, "workspace": workspace}


def wait_ended(d: Deployment, job_id: str, timeout: float = 60) -> dict[str, Any]:
    status, view, _ = request(d.router_ports[0], "GET", f"/jobs/{job_id}?wait=1&timeout={timeout}",
                              timeout=timeout + 30)
    assert status == 200, view
    return view


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = Deployment(tmp_path_factory.mktemp("idempotency"))
    try:
        d.start(group=TAG)
        yield d
    finally:
        d.stop()


def test_a_repeated_key_answers_with_the_first_job_from_any_router(deployment: Deployment) -> None:
    d = deployment
    status, first, headers = request(d.router_ports[0], "POST", "/jobs", job("echo once", "ws-a"),
                                     key="order-42")
    assert status == 201 and not first["replayed"] and "Idempotent-Replayed" not in headers
    assert wait_ended(d, first["id"])["status"] == "success"
    for port in d.router_ports:  # the other router too, after the job ended
        status, again, headers = request(port, "POST", "/jobs", job("echo once", "ws-a"),
                                         key="order-42")
        assert status == 201 and again["id"] == first["id"] and again["replayed"], again
        assert headers.get("Idempotent-Replayed") == "true"
    # The same key in another workspace is another job; a new key is another job.
    _, other_ws, _ = request(d.router_ports[1], "POST", "/jobs", job("echo once", "ws-b"),
                             key="order-42")
    _, other_key, _ = request(d.router_ports[1], "POST", "/jobs", job("echo once", "ws-a"),
                              key="order-43")
    assert len({first["id"], other_ws["id"], other_key["id"]}) == 3
    for j in (other_ws["id"], other_key["id"]):
        wait_ended(d, j)
    queued, finished = counts(d, "ws-a")
    assert queued == {first["id"]: 1, other_key["id"]: 1} and finished == queued, (queued, finished)


def test_the_same_key_with_another_request_is_a_conflict(deployment: Deployment) -> None:
    d = deployment
    status, first, _ = request(d.router_ports[0], "POST", "/jobs", job("echo a", "ws-c"), key="k1")
    assert status == 201
    status, body, _ = request(d.router_ports[1], "POST", "/jobs", job("echo b", "ws-c"), key="k1")
    assert status == 409 and body["error"] == "idempotency_conflict", body
    assert body["field"] == "Idempotency-Key"
    assert wait_ended(d, first["id"])["result"] == "a"
    queued, _ = counts(d, "ws-c")
    assert queued == {first["id"]: 1}


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9".encode("latin-1"), b"tab\there"])
def test_a_key_that_is_not_printable_ascii_is_a_400(deployment: Deployment, key: Any) -> None:
    status, body, _ = request(deployment.router_ports[0], "POST", "/jobs", job("echo no", "ws-d"),
                              key=key)
    assert status == 400 and body["field"] == "Idempotency-Key", body


def test_racing_repeats_on_two_routers_queue_one_job(deployment: Deployment) -> None:
    d = deployment
    answers: list[tuple[int, dict[str, Any]]] = []

    def submit(port: int) -> None:
        status, body, _ = request(port, "POST", "/jobs", job("echo raced", "ws-race"), key="race")
        answers.append((status, body))

    threads = [threading.Thread(target=submit, args=(d.router_ports[i % 2],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {status for status, _ in answers} == {201}, answers
    ids = {body["id"] for _, body in answers}
    assert len(ids) == 1, ids
    assert wait_ended(d, ids.pop())["status"] == "success"
    queued, finished = counts(d, "ws-race")
    assert list(queued.values()) == [1] and list(finished.values()) == [1], (queued, finished)


def test_racing_repeats_with_different_requests_queue_one_and_refuse_the_other(
        deployment: Deployment) -> None:
    """Two routers, two requests under one key at once: exactly one request is queued; every
    answer of 201 is for that request, every other is 409 idempotency_conflict."""
    d = deployment
    answers: list[tuple[str, int, dict[str, Any]]] = []

    def submit(i: int) -> None:
        code = f"echo {'AB'[i % 2]}"
        status, body, _ = request(d.router_ports[i % 2], "POST", "/jobs", job(code, "ws-mix"),
                                  key="mixed")
        answers.append((code, status, body))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = {body["id"] for _, status, body in answers if status == 201}
    assert len(won) == 1, answers
    view = wait_ended(d, won.pop())
    for code, status, body in answers:
        if code == f"echo {view['result']}":
            assert status == 201, body
        else:
            assert status == 409 and body["error"] == "idempotency_conflict", body
    queued, _ = counts(d, "ws-mix")
    assert list(queued.values()) == [1]


def test_a_key_on_go_router_submit(deployment: Deployment) -> None:
    async def go() -> list[dict[str, Any]]:
        nc = await nats.connect(deployment.nats.url)
        try:
            out = []
            for code in ("echo nats", "echo nats", "echo other"):
                reply = await nc.request(subjects.SUBMIT_SUBJECT, json.dumps(job(code, "ws-n")).encode(),
                                         timeout=15, headers={"Authorization": f"Bearer {TOKEN}",
                                                              "Idempotency-Key": "over-nats"})
                out.append(json.loads(reply.data))
            return out
        finally:
            await nc.close()

    first, again, other = asyncio.run(go())
    assert again["id"] == first["id"] and again["replayed"] and not first["replayed"]
    assert other["error"] == "idempotency_conflict", other


def test_the_cli_key_finds_the_first_job(deployment: Deployment) -> None:
    d = deployment
    env = {"GETOPERATE_ROUTER_URL": f"http://127.0.0.1:{d.router_ports[1]}",
           "GETOPERATE_ADMIN_TOKEN": TOKEN}
    args = ("run", "--language", "bash", "--code", "echo cli", "--tag", TAG, "--workspace",
            "ws-cli", "--idempotency-key", "cli-key-1", "--json")
    first = cli(*args, cwd=d.root, env=env, check=True)
    again = cli(*args, cwd=d.root, env=env, check=True)
    assert json.loads(first.stdout)["id"] == json.loads(again.stdout)["id"]
    assert "already submitted with this idempotency key" in again.stderr


def test_an_unconfirmed_submission_says_its_outcome_is_unknown_and_runs_once(
        deployment: Deployment) -> None:
    """nats-server paused (SIGSTOP): the router's publishes wait in its socket unacknowledged.
    The router answers within its bound (10 s) that the outcome is unknown, with the job's id;
    once NATS resumes, that job runs under that id (never `failure: not enqueued`). A keyed
    submission cannot even look its key up: it is refused as unavailable, nothing queued, and
    the same key queues exactly one job once NATS is back."""
    d = deployment
    pid = d.nats.proc.pid  # type: ignore[union-attr]
    answers: dict[str, Any] = {}

    def submit(name: str, port: int, code: str, key: str | None) -> None:
        answers[name] = request(port, "POST", "/jobs", job(code, "ws-u"), key=key, timeout=30)

    os.kill(pid, signal.SIGSTOP)
    try:
        both = [threading.Thread(target=submit, args=("unkeyed", d.router_ports[0], "echo u", None)),
                threading.Thread(target=submit, args=("keyed", d.router_ports[1], "echo k", "paused"))]
        for t in both:
            t.start()
        for t in both:
            t.join()
    finally:
        os.kill(pid, signal.SIGCONT)
    (status, unkeyed, _), (status2, keyed, _) = answers["unkeyed"], answers["keyed"]
    assert status == 503 and unkeyed["error"] == "outcome_unknown", unkeyed
    assert unkeyed["id"] in unkeyed["message"] and f"/jobs/{unkeyed['id']}" in unkeyed["message"]
    assert status2 == 503 and keyed["error"] == "unavailable", keyed
    assert keyed["field"] == "Idempotency-Key" and "nothing was queued" in keyed["message"]
    # Its publishes reach the stream once NATS resumes: until then a look-up is a 404.
    deadline = time.monotonic() + 30
    while request(d.router_ports[0], "GET", f"/jobs/{unkeyed['id']}")[0] == 404:
        assert time.monotonic() < deadline, "the unconfirmed job never reached the stream"
        time.sleep(0.1)
    view = wait_ended(d, unkeyed["id"])
    assert view["status"] == "success", view
    _, first, _ = request(d.router_ports[0], "POST", "/jobs", job("echo k", "ws-u"), key="paused")
    _, again, _ = request(d.router_ports[1], "POST", "/jobs", job("echo k", "ws-u"), key="paused")
    assert again["id"] == first["id"] and again["replayed"] and not first["replayed"]
    wait_ended(d, first["id"])
    queued, finished = counts(d, "ws-u")
    assert queued == {unkeyed["id"]: 1, first["id"]: 1} and finished == queued


def _retrying_client(d: Deployment, keys: list[str], workspace: str, out: dict[str, str],
                     errors: Counter[str], gate: threading.Event | None = None) -> None:
    """A client that gives each job a key and repeats it on any failure, on either router,
    until it gets an answer: what the docs tell integrators to do. With a `gate`, the second
    half of its keys waits for it, so those submissions meet the fault whatever the machine's
    speed. An answer that took over 2 s counts as the fault seen (the router waited for NATS)."""
    ports = itertools.cycle(d.router_ports)
    for i, key in enumerate(keys):
        if gate is not None and i == len(keys) // 2:
            gate.wait(120)
        port = d.router_ports[0]
        while True:
            started = time.monotonic()
            try:
                status, body, _ = request(port, "POST", "/jobs",
                                          job(f"echo {key.rsplit('-', 1)[1]}", workspace), key=key,
                                          timeout=15)
            except (OSError, http.client.HTTPException) as exc:
                errors[type(exc).__name__] += 1
                port = next(ports)
                time.sleep(0.05)
                continue
            if status == 201:
                if time.monotonic() - started > 2:
                    errors["slow answer"] += 1
                out[key] = body["id"]
                break
            assert status in (503, 429), (status, body)  # nothing else is worth a retry
            errors[body["error"]] += 1
            port = next(ports)
            time.sleep(0.2)


def _clients(d: Deployment, workspace: str, n: int, threads: int,
             gate: threading.Event | None = None
             ) -> tuple[list[threading.Thread], dict[str, str], Counter[str]]:
    ids: dict[str, str] = {}
    errors: Counter[str] = Counter()
    keys = [f"{workspace}-{i}" for i in range(n)]
    clients = [threading.Thread(target=_retrying_client,
                                args=(d, keys[t::threads], workspace, ids, errors, gate))
               for t in range(threads)]
    for c in clients:
        c.start()
    return clients, ids, errors


def _wait_answers(ids: dict[str, str], count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(ids) < count:
        assert time.monotonic() < deadline, f"only {len(ids)} answers"
        time.sleep(0.005)


def _check_exactly_once(d: Deployment, workspace: str, ids: dict[str, str], n: int) -> None:
    assert len(ids) == n and len(set(ids.values())) == n
    for key, job_id in ids.items():
        view = wait_ended(d, job_id, timeout=120)
        assert view["status"] == "success" and view["result"] == key.rsplit("-", 1)[1], view
    queued, finished = counts(d, workspace)
    assert set(queued) == set(ids.values()), "a job ran that no answer named"
    assert set(queued.values()) == {1} and set(finished.values()) == {1} and finished.keys() == queued.keys()


def test_router_killed_mid_stream_with_retrying_clients(deployment: Deployment) -> None:
    """Eight clients submit to router 0 at once; it is SIGKILLed under them (requests in flight
    are cut, some after their job was queued) and restarted; the clients repeat their keys on
    either router. Every key gets one job, every job one result, and no job runs unnamed."""
    d = deployment
    n = 160
    killed = threading.Event()
    clients, ids, errors = _clients(d, "ws-kill", n, threads=8, gate=killed)
    _wait_answers(ids, 40)
    victim = d.routers[0]
    victim.stop(signal.SIGKILL)
    killed.set()
    d.procs.remove(victim)
    d.routers[0] = d.start_router(0)
    for c in clients:
        c.join(180)
    assert not any(c.is_alive() for c in clients)
    _check_exactly_once(d, "ws-kill", ids, n)
    assert errors, "the kill was never seen by a client"
    replays = sum(len(r.log_events("job_submission_replayed")) for r in d.routers)
    print(f"\nrouter kill: {n} jobs, client retries by cause: {dict(errors)}; {replays} repeats"
          " answered with the job the first attempt had queued")


def test_nats_down_with_retrying_clients(deployment: Deployment) -> None:
    """NATS stops for longer than the routers' 10 s answer bound (12 s; NATS_OUTAGE_SECONDS=75
    replays the issue's longest outage) under four clients that repeat their keys on any
    failure: requests in flight answer 503 within the bound, later ones at once, and once NATS
    is back every key has one job and every job one result, none unnamed."""
    d = deployment
    n = 120
    seconds = float(os.environ.get("NATS_OUTAGE_SECONDS", "12"))
    outage = threading.Event()
    clients, ids, errors = _clients(d, "ws-down", n, threads=4, gate=outage)
    _wait_answers(ids, 30)
    port = d.nats.port
    d.nats.stop()
    outage.set()
    time.sleep(seconds)
    d.nats = NatsServer(d.root / "nats", port=port).start()
    for c in clients:
        c.join(180)
    assert not any(c.is_alive() for c in clients)
    _check_exactly_once(d, "ws-down", ids, n)
    assert errors["unavailable"] + errors["outcome_unknown"], errors
    # The routers stayed up: every request got an answer within the clients' 15 s, the timeout
    # the docs recommend (their bound is 10 s), however long NATS was away.
    assert "TimeoutError" not in errors, errors
    print(f"\nNATS down {seconds:g} s: {n} jobs, client retries by cause: {dict(errors)}")


def test_a_flow_run_again_after_its_worker_died_runs_each_step_once(tmp_path: Path) -> None:
    """The flow's worker is SIGKILLed while step 2 runs; JetStream hands the flow to another
    worker, which submits its steps again under the same keys (`flow <id> step <n>`): it is
    answered with the steps already queued, waits for their results, and no step runs twice."""
    d = Deployment(tmp_path, routers=1, env={"GETOPERATE_ACK_WAIT": "2"})
    try:
        d.start()
        for group, tags in (("orch", ["flow"]), ("stepq", ["stepq"])):
            status, body, _ = request(d.config_port, "PUT", f"/groups/{group}", {"tags": tags})
            assert status in (200, 201), body
        status, body, _ = request(d.config_port, "PUT", "/flows/main/f/two", {
            "preserve_step_tags": True, "steps": [
                {"name": "one", "language": "bash", "content": "echo 1", "tag": "stepq"},
                {"name": "two", "language": "bash", "content": "sleep 6; echo 2", "tag": "stepq"}]})
        assert status in (200, 201), body
        orchestrator = d.start_worker("orch")
        d.start_worker("stepq")
        port = d.router_ports[0]
        _, flow, _ = request(port, "POST", "/jobs", {"path": "f/two"})

        def step_two_running() -> bool:
            events = asyncio.run(job_events(d.nats.url))
            steps = [e["job_id"] for e in events
                     if e["type"] == "job.queued" and e.get("parent") == flow["id"]]
            return len(steps) == 2 and any(e["type"] == "job.started" and e["job_id"] == steps[1]
                                           for e in events)

        deadline = time.monotonic() + 60
        while not step_two_running():
            assert time.monotonic() < deadline, "step 2 never started"
            time.sleep(0.2)
        orchestrator.stop(signal.SIGKILL)
        d.start_worker("orch")
        view = wait_ended(d, flow["id"], timeout=90)
        assert view["status"] == "success" and view["result"] == "2", view
        assert view["attempts"] == 2, view  # the flow itself ran twice: its steps once
        events = asyncio.run(job_events(d.nats.url))
        steps = [e for e in events if e["type"] == "job.queued" and e.get("parent") == flow["id"]]
        finished = Counter(e["job_id"] for e in events if e["type"] == "job.finished")
        assert len(steps) == 2, steps
        assert all(finished[s["job_id"]] == 1 for s in steps), finished
        replays = d.routers[0].log_events("job_submission_replayed")
        assert len(replays) >= 1, "the second run never repeated a step's key"
        # A client sending a step's key names another job: it can neither claim nor find it.
        status, mine, _ = request(port, "POST", "/jobs", {
            "language": "bash", "code": "echo mine", "tag": "stepq"},
            key=f"flow {flow['id']} step 1")
        assert status == 201 and not mine["replayed"], mine
        assert mine["id"] not in {s["job_id"] for s in steps}
    finally:
        d.stop()
