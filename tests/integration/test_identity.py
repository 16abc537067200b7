"""Every submission has an identity, and nothing is readable that should not be (issue 13, points
3 and 6): each attack replayed against a real `getoperate up` (nats-server, config service,
router, workers), with the NATS credentials `up` writes, and failing to do harm.

Tags: RESTRICTED is the issue's `gpu(ws1)`, served by group `idgpu`; HOLD is open to every
workspace and served by nobody, so a flow job waits there and a test can read its grant off the
queue, as the worker that would run it does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import msgspec
import nats
import pytest
from nats.js.errors import NotFoundError

from cli.client import Endpoints
from services.common import natsauth
from shared import grants, subjects
from shared.codec import decode, encode
from shared.jobs import DeadLetter, Job
from tests.conftest import eventually
from tests.integration.conftest import Suite
from tests.integration.harness import FakeWorkers, fake_status, ready, wait_router_seq
from tests.integration.natsclients import connect_as, creds, raw_connect

RESTRICTED = "t-id-gpu"
HOLD = "t-id-hold"
EXCLUDING = "t-id-x"  # open to all but ws3: a workspace token must not learn that ws3 exists


@dataclass
class Tokens:
    ws1: str
    ws2: str


async def submit_as(s: Suite, role: str, body: dict[str, Any],
                    headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A `go.router.submit` request over a connection of `role`; the router's JSON answer."""
    nc = await connect_as(s, role)
    try:
        reply = await nc.request(subjects.SUBMIT_SUBJECT, json.dumps(body).encode(), timeout=10,
                                 headers=headers)
        return json.loads(reply.data)  # type: ignore[no-any-return]
    finally:
        await nc.close()


def http(s: Suite, method: str, service: str, path: str, token: str | None,
         body: Any = None) -> tuple[int, str]:
    """(status, body text) of a real HTTP request with `token` (None: no Authorization)."""
    ep = Endpoints(s.root / ".getoperate")
    base = ep.config_url if service == "config" else ep.router_url
    req = urllib.request.Request(f"{base}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def tokens(suite: Suite) -> Iterator[Tokens]:
    s = suite
    s.api.call("POST", "config", "/tags", {"spec": f"{RESTRICTED}(ws1)"})
    s.api.call("POST", "config", "/tags", {"spec": HOLD})
    s.api.call("POST", "config", "/tags", {"spec": f"{EXCLUDING}(^ws3)"})
    s.api.set_group("idgpu", tags=[RESTRICTED])
    s.worker("idgpu", WORKER_GROUP="idgpu")  # stopped with the suite
    made = Tokens(ws1=s.api.call("POST", "config", "/tokens", {"workspace": "ws1"})["token"],
                  ws2=s.api.call("POST", "config", "/tokens", {"workspace": "ws2"})["token"])
    s.api.wait_workers(ready("idgpu"))
    wait_router_seq(s, s.api.call("GET", "config", "/healthz")["seq"])
    yield made


def jobs_on(s: Suite, tag: str) -> list[dict[str, Any]]:
    return s.api.call("GET", "router", f"/jobs?tag={tag}&limit=1000")  # type: ignore[no-any-return]


# --- submissions over NATS carry a token ---------------------------------------------------------


async def test_worker_credentials_submit_nothing_without_a_token_of_the_workspace(
        suite: Suite, tokens: Tokens) -> None:
    """The issue's attack: `go.router.submit` with a worker's NATS credentials, into ws1 and the
    ws1-only tag. No token, a bad token, a ws2 token: no job. A ws1 token: the job runs there."""
    s = suite
    body = {"language": "bash", "code": "echo pwned", "workspace": "ws1", "tag": RESTRICTED}
    before = len(jobs_on(s, RESTRICTED))
    refused = {
        "none": await submit_as(s, "worker", body),
        "bad": await submit_as(s, "worker", body, {"Authorization": "Bearer gow_forged"}),
        "not bearer": await submit_as(s, "worker", body, {"Authorization": tokens.ws1}),
        "ws2 into ws1": await submit_as(s, "worker", body, s.auth(tokens.ws2)),
        "ws2 on ws1's tag": await submit_as(s, "worker", {**body, "workspace": "ws2"},
                                            s.auth(tokens.ws2)),
        "ws2 as a flow step": await submit_as(
            s, "worker", {**body, "workspace": "ws2", "tag": "bash", "parent": "x", "step": 1},
            s.auth(tokens.ws2)),
    }
    assert refused["none"] == {"error": "unauthorized",
                               "message": "missing token: send 'Authorization: Bearer <token>'"}
    assert refused["bad"] == {"error": "unauthorized", "message": "invalid or revoked token"}
    assert refused["not bearer"]["error"] == "unauthorized"
    assert refused["ws2 into ws1"]["error"] == "forbidden"
    assert refused["ws2 into ws1"]["field"] == "workspace"
    assert refused["ws2 on ws1's tag"] == {
        "error": "forbidden", "field": "tag",
        "message": f"tag '{RESTRICTED}' is not available to workspace 'ws2'"}
    assert refused["ws2 as a flow step"]["field"] == "parent"
    assert len(jobs_on(s, RESTRICTED)) == before  # nothing was queued

    # The same token is an admission, not a bypass: ws1 may, and its job runs on the ws1 group.
    ok = await submit_as(s, "worker", {**body, "code": "echo ws1 here"}, s.auth(tokens.ws1))
    view = s.api.job(ok["id"])
    assert (view["status"], view["result"], view["group"]) == ("success", "ws1 here", "idgpu")
    # A body without workspace is the token's workspace, as on HTTP; any header case works.
    own = await submit_as(s, "worker", {"language": "bash", "code": "echo mine"},
                          {"authorization": f"Bearer {tokens.ws2}"})
    assert s.api.job(own["id"])["workspace"] == "ws2"


async def test_a_revoked_token_submits_nothing_over_nats(suite: Suite, tokens: Tokens) -> None:
    s = suite
    made = s.api.call("POST", "config", "/tokens", {"workspace": "ws2", "name": "id-revoked"})
    wait_router_seq(s, made["seq"])
    body = {"language": "bash", "code": "echo before"}
    assert "id" in await submit_as(s, "worker", body, s.auth(made["token"]))
    gone = s.api.call("DELETE", "config", "/tokens/id-revoked")
    wait_router_seq(s, gone["seq"])
    assert (await submit_as(s, "worker", body, s.auth(made["token"])))["error"] == "unauthorized"


# --- flow steps run with the identity of the flow's submitter ------------------------------------


async def test_flow_steps_run_with_the_submitters_rights(suite: Suite, tokens: Tokens) -> None:
    """A ws1 flow reaches the ws1-only tag through its step (its submitter may); the steps are
    ws1's jobs. The worker running the flow holds no token: its grant carries the identity."""
    s = suite
    s.api.call("PUT", "config", "/flows/ws1/f/idflow", {"preserve_step_tags": True, "steps": [
        {"name": "gpu", "language": "bash", "content": "echo 20", "tag": RESTRICTED},
        {"name": "show", "language": "bash", "content": 'echo "got $1"'},
    ]})
    answer = await submit_as(s, "worker", {"path": "f/idflow", "workspace": "ws1"},
                             s.auth(tokens.ws1))
    view = s.api.job(answer["id"])
    assert (view["status"], view["result"]) == ("success", "got 20"), view
    steps = [s.api.job(st["job_id"]) for st in view["steps"]]
    assert [(j["workspace"], j["tag"], j["group"], j["parent"]) for j in steps] == [
        ("ws1", RESTRICTED, "idgpu", view["id"]), ("ws1", "bash", "default", view["id"])]


async def _held_flow(s: Suite, token: str, workspace: str) -> Job:
    """Submit the held flow (waiting on HOLD, which nobody serves) and read its job, with its
    grant, from its queue, as the worker that takes it would."""
    answer = await submit_as(s, "worker", {"path": "f/held", "workspace": workspace, "tag": HOLD},
                             s.auth(token))
    assert answer["tag"] == HOLD and answer["steps"] == [HOLD], answer
    nc = await nats.connect(s.nats_url)
    try:
        js = nc.jetstream()
        for _ in range(100):
            raw = await js.get_last_msg(subjects.JOBS_STREAM, subjects.job_subject(HOLD))
            job = decode(raw.data or b"", Job)
            if job.id == answer["id"]:
                return job
            await asyncio.sleep(0.05)
        raise AssertionError(f"flow job {answer['id']} not on its queue")
    finally:
        await nc.close()


def _step(job: Job, **change: Any) -> dict[str, Any]:
    """Step 1 of the held flow, as the flow runner submits it, with `change` applied."""
    step = job.steps[0]
    return {"language": step.language, "code": step.code, "tag": step.tag,
            "workspace": job.workspace, "args": {}, "parent": job.id, "step": 1, **change}


def _tamper(grant: str, **change: Any) -> str:
    """The grant with its payload changed and its signature kept."""
    body, mac = grant.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(change)
    raw = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{raw}.{mac}"


async def test_a_grant_admits_exactly_its_flows_planned_steps(suite: Suite,
                                                              tokens: Tokens) -> None:
    """With a worker's credentials and a real grant of a ws2 flow: its planned step is admitted;
    another flow, workspace, tag (ws1's), step or code, a tampered or self-made grant, a step
    with no grant or a token beside it, and the grant of a revoked token are all refused."""
    s = suite
    s.api.call("PUT", "config", "/flows/ws2/f/held", {"steps": [
        {"name": "a", "language": "bash", "content": "echo held"}]})
    revocable = s.api.call("POST", "config", "/tokens", {"workspace": "ws2", "name": "id-held"})
    wait_router_seq(s, revocable["seq"])
    flow = await _held_flow(s, revocable["token"], "ws2")
    other = await _held_flow(s, tokens.ws2, "ws2")
    assert flow.grant and other.grant and flow.grant != other.grant
    grant = {subjects.FLOW_GRANT_HEADER: flow.grant}

    admitted = await submit_as(s, "worker", _step(flow), grant)
    assert admitted["tag"] == HOLD and "id" in admitted, admitted
    assert s.api.job(admitted["id"], wait=False)["workspace"] == "ws2"

    key = b"not the routers' key, long enough to look real"
    forged = grants.sign(key, grants.FlowGrant(
        flow=flow.id, workspace="ws2", admin=True, by="admin",
        steps=(grants.StepGrant(RESTRICTED, grants.step_digest("bash", "echo pwned")),)))
    attempts = {
        "other flow": (_step(flow, parent=other.id), grant),
        "other workspace": (_step(flow, workspace="ws1"), grant),
        "ws1's tag": (_step(flow, tag=RESTRICTED), grant),
        "other code": (_step(flow, code="echo pwned"), grant),
        "unplanned step": (_step(flow, step=2), grant),
        "deployed script": ({**_step(flow), "language": None, "code": None, "path": "f/held"},
                            grant),
        "tampered": (_step(flow, tag=RESTRICTED), {
            subjects.FLOW_GRANT_HEADER: _tamper(flow.grant, admin=True, steps=[
                [RESTRICTED, grants.step_digest("bash", "echo held")]])}),
        "self-made": (_step(flow, tag=RESTRICTED, code="echo pwned"),
                      {subjects.FLOW_GRANT_HEADER: forged}),
        "garbage": (_step(flow), {subjects.FLOW_GRANT_HEADER: "x"}),
        "no grant": (_step(flow), None),
        "grant and token": (_step(flow), {**grant, **s.auth()}),
    }
    answers = {name: await submit_as(s, "worker", body, headers)
               for name, (body, headers) in attempts.items()}
    assert all("error" in a for a in answers.values()), answers
    assert {n: a["error"] for n, a in answers.items()} == {
        "other flow": "forbidden", "other workspace": "forbidden", "ws1's tag": "forbidden",
        "other code": "forbidden", "unplanned step": "forbidden", "deployed script": "forbidden",
        "tampered": "unauthorized", "self-made": "unauthorized", "garbage": "unauthorized",
        "no grant": "unauthorized", "grant and token": "invalid"}
    assert f"is for flow {flow.id!r}" in answers["other flow"]["message"]
    assert f"planned on tag '{HOLD}'" in answers["ws1's tag"]["message"]
    assert "signature does not match" in answers["tampered"]["message"]
    assert "signature does not match" in answers["self-made"]["message"]
    assert "missing flow grant" in answers["no grant"]["message"]
    assert not [j for j in jobs_on(s, RESTRICTED) if j["workspace"] == "ws2"]

    gone = s.api.call("DELETE", "config", "/tokens/id-held")
    wait_router_seq(s, gone["seq"])
    late = await submit_as(s, "worker", _step(flow), grant)
    assert late["error"] == "unauthorized" and "was revoked" in late["message"], late


# --- workers re-check each job on receipt ---------------------------------------------------------


async def _dead_letters(s: Suite, tag: str) -> dict[str, DeadLetter]:
    nc = await nats.connect(s.nats_url)
    found: dict[str, DeadLetter] = {}
    try:
        js = nc.jetstream()
        sub = await js.subscribe(subjects.dead_subject(tag), stream=subjects.DEAD_STREAM,
                                 ordered_consumer=True)
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except Exception:
                    return found
                dead = decode(msg.data, DeadLetter)
                found[dead.job.id] = dead
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


async def _history(s: Suite, job_id: str) -> object:
    nc = await nats.connect(s.nats_url)
    try:
        return await nc.jetstream().get_last_msg(subjects.JOB_EVENTS_STREAM,
                                                 subjects.job_events_subject(job_id))
    except NotFoundError:
        return None
    finally:
        await nc.close()


async def test_a_job_put_straight_on_a_queue_is_dead_lettered_not_run(
        suite: Suite, tokens: Tokens) -> None:
    """The issue's attack: with router credentials, a ws2 job published straight on the queue of
    the ws1-only tag, and a job naming another tag on it. The gpu worker runs neither: both go
    to GO_DEAD with the reason, and neither touches the history of the job id it names."""
    s = suite
    marker = f"/tmp/getoperate-pwned-{uuid.uuid4().hex}"
    forged = Job(id=f"forged{uuid.uuid4().hex}", workspace="ws2", language="bash",
                 code=f"touch {marker}; echo pwned", tag=RESTRICTED, submitted_at=time.time())
    elsewhere = msgspec.structs.replace(forged, id=f"forged{uuid.uuid4().hex}", tag="bash",
                                        workspace="ws1")
    nc = await connect_as(s, "router")
    try:
        for job in (forged, elsewhere):
            await nc.jetstream().publish(subjects.job_subject(RESTRICTED), encode(job),
                                         headers={"Nats-Msg-Id": job.id})
    finally:
        await nc.close()

    async def parked() -> dict[str, DeadLetter] | None:
        found = await _dead_letters(s, RESTRICTED)
        return found if {forged.id, elsewhere.id} <= found.keys() else None

    dead = await eventually(parked, timeout=30, interval=0.2)
    assert dead[forged.id].reason == (f"tag '{RESTRICTED}' is not available to workspace 'ws2'"
                                      " (checked by the worker on receipt)")
    assert dead[elsewhere.id].reason == (
        f"it names tag 'bash' but was taken from the queue of tag '{RESTRICTED}'")
    assert await _history(s, forged.id) is None and await _history(s, elsewhere.id) is None
    import os

    assert not os.path.exists(marker)
    logged = [r for p in s.extra for r in p.log_events("job_dead_lettered")
              if r.get("job_id") in (forged.id, elsewhere.id)]
    assert len(logged) == 2 and all(r["reason"] for r in logged), logged


async def test_a_job_queued_before_its_tag_closed_is_refused_with_its_reason(
        extra_workers: Suite, tokens: Tokens) -> None:
    """A restriction added while a job waits binds the worker that takes it afterwards: the
    job ends failed (dead-lettered, the reason in its error) instead of running."""
    s = extra_workers
    tag = "t-id-later"
    s.api.call("POST", "config", "/tags", {"spec": tag})
    wait_router_seq(s, s.api.call("GET", "config", "/healthz")["seq"])
    answer = await submit_as(s, "worker", {"language": "bash", "code": "echo late", "tag": tag},
                             s.auth(tokens.ws2))
    closed = s.api.call("POST", "config", "/tags", {"spec": f"{tag}(ws1)", "replace": True})
    s.api.set_group("idlater", tags=[tag])
    s.worker("idlater", WORKER_GROUP="idlater")
    view = s.api.job(answer["id"], timeout=30)
    assert closed["seq"] and view["status"] == "failure" and view["dead_letter"], view
    assert view["error"] == (f"refused: tag '{tag}' is not available to workspace 'ws2' (checked"
                             " by the worker on receipt); parked on GO_DEAD")


# --- nothing readable that should not be ---------------------------------------------------------


def test_tags_list_shows_a_workspace_token_only_what_is_open_to_it(suite: Suite,
                                                                   tokens: Tokens) -> None:
    s = suite
    status, text = http(s, "GET", "config", "/tags", tokens.ws2)
    assert status == 200
    seen = {t["tag"]: t for t in json.loads(text)}
    assert RESTRICTED not in seen and HOLD in seen
    assert seen[EXCLUDING] == {"tag": EXCLUDING, "only": [], "exclude": [], "spec": EXCLUDING,
                               "restricted": True}
    assert "ws1" not in text and "ws3" not in text
    ws1 = {t["tag"] for t in json.loads(http(s, "GET", "config", "/tags", tokens.ws1)[1])}
    assert RESTRICTED in ws1
    admin = {t["tag"]: t for t in s.api.call("GET", "config", "/tags")}
    assert admin[RESTRICTED]["only"] == ["ws1"] and admin[EXCLUDING]["exclude"] == ["ws3"]


def test_workers_show_a_workspace_token_neither_other_jobs_nor_init_output(
        suite: Suite, tokens: Tokens) -> None:
    s = suite
    status, raw = http(s, "POST", "router", "/jobs", tokens.ws1,
                       {"language": "bash", "code": "sleep 3; echo done"})
    job_id = json.loads(raw)["id"]
    s.api.wait_workers(lambda ws: any(w["current_job"] == job_id for w in ws))
    secret = "init-output-naming-ws1-secrets"
    # Heartbeats of WORKER_TAGS workers (a group's may claim only its group's tags).
    env = {"group": None, "tags_source": "env"}
    fakes = [fake_status("id-fake-failed", tags=["bash"], init_status="failed",
                         init_error=secret, **env),
             fake_status("id-fake-ded", tags=["python3", "ws1:f/secret"],
                         dedicated=["ws1:f/secret"], priorities={"ws1:f/secret": 5},
                         init_status="ok", init_output=secret + "-ok", **env)]
    with FakeWorkers(s.nats_url, *fakes):
        s.api.wait_workers(lambda ws: {"id-fake-failed", "id-fake-ded"} <= {w["id"] for w in ws})
        as_ws2 = json.loads(http(s, "GET", "router", "/workers", tokens.ws2)[1])
        as_ws1 = json.loads(http(s, "GET", "router", "/workers", tokens.ws1)[1])
        admin = s.api.workers()
    text = json.dumps(as_ws2)
    assert job_id not in text and secret not in text and "ws1" not in text
    assert "idgpu" not in {w["group"] for w in as_ws2}  # serves only ws1's tag
    by_id = {w["id"]: w for w in as_ws2}
    assert by_id["id-fake-failed"]["init_status"] == "failed"  # the state, not the output
    assert by_id["id-fake-ded"]["tags"] == ["python3"] and by_id["id-fake-ded"]["dedicated"] == []
    assert any(w["current_job"] == job_id for w in as_ws1)  # its own job
    assert "idgpu" in {w["group"] for w in as_ws1}
    assert any(w["current_job"] == job_id for w in admin)
    assert any(w.get("init_error") == secret for w in admin)
    assert any(w.get("init_output") == secret + "-ok" for w in admin)


def test_metrics_show_a_workspace_token_only_its_tags(suite: Suite, tokens: Tokens) -> None:
    s = suite
    status, raw = http(s, "POST", "router", "/jobs", tokens.ws1,
                       {"language": "bash", "code": "echo m", "tag": RESTRICTED})
    assert status == 201, raw
    s.api.job(json.loads(raw)["id"])
    routed = f'getoperate_jobs_routed_total{{tag="{RESTRICTED}"}}'
    status, ws2 = http(s, "GET", "router", "/metrics", tokens.ws2)
    assert status == 200 and "getoperate_jobs_routed_total" in ws2
    assert RESTRICTED not in ws2 and "ws1" not in ws2
    assert 'worker="' not in ws2 and 'group="' not in ws2
    assert 'getoperate_jobs_routed_total{tag="bash"}' in ws2  # its tags are there
    assert routed in http(s, "GET", "router", "/metrics", tokens.ws1)[1]
    assert routed in http(s, "GET", "router", "/metrics", s.admin_token)[1]
    # A scrape without a token is the operator's (docs/security.md): everything.
    anonymous = http(s, "GET", "router", "/metrics", None)[1]
    assert routed in anonymous and 'group="idgpu"' in anonymous
    assert http(s, "GET", "router", "/metrics", "gow_forged")[0] == 401


# --- job events: written only by a job's holder, read only through a router ---------------------


async def _held_job(s: Suite, token: str, workspace: str) -> tuple[Job, str]:
    """Submit an inline job on HOLD (nobody serves it) and read it with its hold key off its
    queue, as the worker that pulls it would."""
    answer = await submit_as(s, "worker", {"language": "bash", "code": "echo held",
                                           "workspace": workspace, "tag": HOLD}, s.auth(token))
    nc = await nats.connect(s.nats_url)
    try:
        for _ in range(100):
            raw = await nc.jetstream().get_last_msg(subjects.JOBS_STREAM, subjects.job_subject(HOLD))
            job = decode(raw.data or b"", Job)
            if job.id == answer["id"]:
                return job, (raw.headers or {})[subjects.HOLD_HEADER]
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {answer['id']} not on its queue")
    finally:
        await nc.close()


async def _write_as_worker(s: Suite, event: Any, seal: str | None) -> None:
    nc = await connect_as(s, "worker")
    try:
        headers = {subjects.SEAL_HEADER: seal} if seal else None
        await nc.jetstream().publish(subjects.job_events_subject(event.job_id), encode(event),
                                     headers=headers, timeout=10)
    finally:
        await nc.close()


async def _read_as(s: Suite, role: str, job_id: str, headers: dict[str, str] | None,
                   **query: Any) -> dict[str, Any]:
    """A `go.router.job` request over a connection of `role`; the router's JSON answer."""
    nc = await connect_as(s, role)
    try:
        reply = await nc.request(subjects.JOB_SUBJECT, json.dumps({"id": job_id, **query}).encode(),
                                 timeout=40, headers=headers)
        return json.loads(reply.data)  # type: ignore[no-any-return]
    finally:
        await nc.close()


async def test_a_forged_result_changes_no_job(suite: Suite) -> None:
    """The issue's attack: a `job.finished` written with worker credentials on a running job's
    subject (unsealed, or sealed with a made-up key). The router believes neither: the job's
    result is the one its worker recorded."""
    from shared import seals
    from shared.jobs import JobFinished

    s = suite
    job = s.api.submit("sleep 1; echo real", workspace="main")["id"]
    forged = JobFinished(job_id=job, time=time.time(), status="success", result="forged",
                         worker="w", attempt=1)
    made_up = seals.seal("f" * 64, encode(forged))
    await _write_as_worker(s, forged, None)
    await _write_as_worker(s, msgspec.structs.replace(forged, result="forged 2"), made_up)
    view = s.api.job(job)
    assert (view["status"], view["result"]) == ("success", "real"), view
    skipped = [r for r in s.up.log_events("job_event_unsealed_skipped") if r.get("job_id") == job]
    assert skipped, "the router did not say it skipped the forged events"


async def test_events_written_ahead_for_a_predictable_id_make_no_job(suite: Suite) -> None:
    """Job ids are time-ordered, so a worker can guess the next one and write its `job.queued`
    first (to move it to another workspace) or a whole forged job. Nothing of it counts."""
    from shared.jobs import JobFinished, JobQueued

    s = suite
    ghost = f"{int(time.time() * 1000):012x}{uuid.uuid4().hex[:20]}"
    await _write_as_worker(s, JobQueued(job_id=ghost, time=time.time(), tag="bash",
                                        workspace="ws2", language="bash"), None)
    await _write_as_worker(s, JobFinished(job_id=ghost, time=time.time(), status="success",
                                          result="ghost", worker="w"), None)
    from cli.client import CliError

    with pytest.raises(CliError):
        s.api.job(ghost, wait=False)
    listed = s.api.call("GET", "router", "/jobs?workspace=ws2&limit=1000")
    assert ghost not in {j["id"] for j in listed}


async def test_one_jobs_hold_key_writes_and_reads_that_job_only(suite: Suite,
                                                                tokens: Tokens) -> None:
    """A worker that held job A (its hold key) can end A, and read A from a router; with A's key
    it can neither end B nor read it."""
    from shared import seals
    from shared.jobs import JobFinished

    s = suite
    a, hold_a = await _held_job(s, tokens.ws1, "ws1")
    b, hold_b = await _held_job(s, tokens.ws2, "ws2")
    assert hold_a != hold_b
    on_b = JobFinished(job_id=b.id, time=time.time(), status="success", result="not yours",
                       worker="w", attempt=1)
    await _write_as_worker(s, on_b, seals.seal(hold_a, encode(on_b)))
    refused = await _read_as(s, "worker", b.id, {subjects.HOLD_HEADER: hold_a})
    assert refused["error"] == "forbidden", refused
    assert s.api.job(b.id, wait=False)["status"] == "queued"

    on_a = JobFinished(job_id=a.id, time=time.time(), status="success", result="mine",
                       worker="w", attempt=1)
    await _write_as_worker(s, on_a, seals.seal(hold_a, encode(on_a)))
    record = await _read_as(s, "worker", a.id, {subjects.HOLD_HEADER: hold_a}, history=True)
    assert record["view"]["status"] == "success" and record["view"]["result"] is None, record
    assert [e["type"] for e in record["history"]] == ["job.queued", "job.finished"]
    assert record["subject_seq"] >= record["last_seq"] > 0


async def test_a_job_is_read_over_nats_with_a_token_of_its_workspace(
        suite: Suite, tokens: Tokens) -> None:
    """`go.router.job` applies the rules of `GET /jobs/{id}`: the owner's token reads and waits
    for its job; another workspace's token is told it does not exist; no token, no answer."""
    s = suite
    answer = await submit_as(s, "client", {"language": "bash", "code": "sleep 0.5; echo over nats",
                                           "workspace": "ws1"}, s.auth(tokens.ws1))
    job = answer["id"]
    record = await _read_as(s, "client", job, s.auth(tokens.ws1), wait=True, timeout=30)
    assert (record["view"]["status"], record["view"]["result"]) == ("success", "over nats")
    assert record["history"] is None
    other = await _read_as(s, "client", job, s.auth(tokens.ws2))
    assert other["error"] == "not_found" and "ws1" not in other["message"], other
    nobody = await _read_as(s, "client", job, None)
    assert nobody["error"] == "unauthorized", nobody


async def test_workers_read_no_job_events(suite: Suite) -> None:
    """Job events hold every workspace's results: a worker's credentials may not read them
    (neither one message nor a consumer); the worker asks a router instead."""
    s = suite
    job = s.api.submit("echo secret result", workspace="ws1")["id"]
    s.api.job(job)
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    user = natsauth.worker_user("default")
    nc = await nats.connect(s.plain_nats_url, user=user, password=creds(s)[user],
                            allow_reconnect=False, max_reconnect_attempts=0, error_cb=on_error,
                            **natsauth.connection_options("probe", user, worker="probe-reader",
                                                          part="control"))
    got: list[bytes] = []
    try:
        js = nc.jetstream()
        with pytest.raises(Exception):  # a denied request is never answered: wait briefly
            raw = await asyncio.wait_for(js.get_last_msg(subjects.JOB_EVENTS_STREAM,
                                                         subjects.job_events_subject(job)), 1.5)
            got.append(raw.data or b"")
        with pytest.raises(Exception):
            sub = await asyncio.wait_for(js.subscribe(
                subjects.job_events_subject(job), stream=subjects.JOB_EVENTS_STREAM,
                ordered_consumer=True), 1.5)
            got.append((await sub.next_msg(timeout=2)).data)
    finally:
        await nc.close()
    assert not got
    assert any("permissions violation" in e.lower() for e in errors), errors


async def test_a_job_without_a_hold_key_is_dead_lettered_not_run(suite: Suite) -> None:
    """A job that passes every check of the worker but was not queued by a router (published
    with router credentials, no hold key): parked with the reason, not run."""
    s = suite
    marker = f"/tmp/getoperate-pwned-{uuid.uuid4().hex}"
    forged = Job(id=f"forged{uuid.uuid4().hex}", workspace="main", language="bash",
                 code=f"touch {marker}; echo pwned", tag="bash", submitted_at=time.time())
    nc = await connect_as(s, "router")
    try:
        await nc.jetstream().publish(subjects.job_subject("bash"), encode(forged),
                                     headers={"Nats-Msg-Id": forged.id})
    finally:
        await nc.close()

    async def parked() -> DeadLetter | None:
        return (await _dead_letters(s, "bash")).get(forged.id)

    dead = await eventually(parked, timeout=30, interval=0.2)
    assert dead.reason is not None and subjects.HOLD_HEADER in dead.reason, dead
    import os

    assert not os.path.exists(marker)


# --- the second red-team pass: what a worker could still do, and no longer can -----------------


async def test_junk_under_the_message_ids_a_holder_will_use_drops_no_event(suite: Suite) -> None:
    """The attack: write junk on a job's subject under `Nats-Msg-Id: <id>:<n>:finished` (and
    `:queued` for ids guessed ahead: ids are time-ordered), so JetStream drops the real event
    as a duplicate and the job stays running (or vanishes) for good. The real ids carry a tag
    only the holder computes (shared/seals.py: msg_id)."""
    s = suite
    first = s.api.submit("echo one", workspace="main")["id"]
    s.api.job(first)
    ms, prefix, counter = int(first[:12], 16), first[12:24], int(first[24:], 16)
    nc = await connect_as(s, "worker")
    try:
        js = nc.jetstream()
        guessed = [f"{ms + d:012x}{prefix}{(counter + 1) & 0xFFFFFFFF:08x}"
                   for d in range(0, 3000)]
        for job_id in guessed:  # the next id, for the next 3 s
            await nc.publish(subjects.job_events_subject(job_id), b"junk",
                             headers={"Nats-Msg-Id": f"{job_id}:queued"})
        await nc.flush()
        answer = s.api.submit("sleep 1; echo real", workspace="ws2")
        job = answer["id"]
        for n in (1, 2, 3):
            for what in ("started", "finished"):
                await js.publish(subjects.job_events_subject(job), b"junk", timeout=10,
                                 headers={"Nats-Msg-Id": f"{job}:{n}:{what}"})
    finally:
        await nc.close()
    view = s.api.job(job)
    assert (view["status"], view["result"], view["workspace"]) == ("success", "real", "ws2"), view


async def test_a_worker_cannot_take_over_another_groups_inbox(suite: Suite) -> None:
    """The attack: learn a `native` worker's inbox token (it was the nonce of its heartbeat
    key, which workers could read), declare it as a `default` worker and read its replies:
    its group's config (static variables), its job reads. The key now holds a one-way nonce,
    workers may not read the heartbeat bucket, and a token is its first user's."""
    s = suite
    token = uuid.uuid4().hex
    victim_user, thief_user = natsauth.worker_user("native"), natsauth.worker_user("default")

    def connect(user: str) -> str:
        return raw_connect(s, user=user, **{"pass": creds(s)[user]},
                           name=f"probe inbox={token} worker=probe-x part=control")[1]

    assert "PONG" in connect(victim_user)
    assert "Authorization Violation" in connect(thief_user)
    assert "PONG" in connect(victim_user)  # a reconnect of its owner
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(s.plain_nats_url, user=thief_user, password=creds(s)[thief_user],
                            allow_reconnect=False, max_reconnect_attempts=0, error_cb=on_error,
                            **natsauth.connection_options("probe", thief_user,
                                                          worker="probe-lister", part="control"))
    try:
        for request in (
                (f"$JS.API.STREAM.MSG.GET.KV_{subjects.WORKERS_BUCKET}",
                 {"seq": 1, "next_by_subj": f"$KV.{subjects.WORKERS_BUCKET}.>"}),
                (f"$JS.API.STREAM.INFO.{subjects.JOB_EVENTS_STREAM}",
                 {"subjects_filter": f"{subjects.JOB_EVENTS_PREFIX}.>"}),
                (f"$JS.API.STREAM.INFO.{subjects.CONFIG_STREAM}",
                 {"subjects_filter": "go.config.>"})):
            with pytest.raises(Exception):
                await nc.request(request[0], json.dumps(request[1]).encode(), timeout=1)
    finally:
        await nc.close()
    assert sum("permissions violation" in e.lower() for e in errors) >= 3, errors


async def test_many_waiting_reads_of_one_token_leave_the_others_served(
        suite: Suite, tokens: Tokens) -> None:
    """The attack: a workspace token parks a thousand waiting reads of its own long job, which
    took one JetStream consumer each until the server had none left: every other tenant's
    reads then failed. Reads hold no consumer now, and one reader has at most 100 waiting."""
    s = suite
    mine = await submit_as(s, "client", {"language": "bash", "code": "sleep 8; echo slow",
                                         "workspace": "ws1"}, s.auth(tokens.ws1))
    other = await submit_as(s, "client", {"language": "bash", "code": "echo other",
                                          "workspace": "ws2"}, s.auth(tokens.ws2))
    admin = await nats.connect(s.nats_url)
    consumers_before = (await admin.jetstream().stream_info(
        subjects.JOB_EVENTS_STREAM)).state.consumer_count
    nc = await connect_as(s, "client")
    try:
        query = json.dumps({"id": mine["id"], "wait": True, "timeout": 20}).encode()
        waits = [asyncio.ensure_future(nc.request(subjects.JOB_SUBJECT, query, timeout=30,
                                                  headers=s.auth(tokens.ws1)))
                 for _ in range(130)]
        await asyncio.sleep(1.5)
        busy = [json.loads(w.result().data) for w in waits if w.done()]
        assert len(busy) == 30 and {b["error"] for b in busy} == {"too_busy"}, busy[:3]
        consumers = (await admin.jetstream().stream_info(
            subjects.JOB_EVENTS_STREAM)).state.consumer_count
        # A consumer per wait would add 100; the routers' job boards hold one each, which
        # nats-py may be recreating at this moment (one more or one fewer for a while).
        assert abs(consumers - consumers_before) <= 2, (consumers_before, consumers)
        theirs = await _read_as(s, "client", other["id"], s.auth(tokens.ws2), wait=True,
                                timeout=20)
        assert theirs["view"]["result"] == "other", theirs
        done = [json.loads(r.data) for r in await asyncio.gather(*waits)]
        assert sum(1 for d in done if d.get("view", {}).get("result") == "slow") == 100
    finally:
        await nc.close()
        await admin.close()


async def test_another_workspaces_job_reads_exactly_like_a_missing_one(
        suite: Suite, tokens: Tokens) -> None:
    s = suite
    job = s.api.submit("echo x", workspace="ws1")["id"]
    missing = job[:-4] + "0000" if not job.endswith("0000") else job[:-4] + "1111"
    seen = await _read_as(s, "client", job, s.auth(tokens.ws2))
    absent = await _read_as(s, "client", missing, s.auth(tokens.ws2))
    assert seen["message"].replace(job, "ID") == absent["message"].replace(missing, "ID")
    status, body = http(s, "GET", "router", f"/jobs/{job}", tokens.ws2)
    status2, body2 = http(s, "GET", "router", f"/jobs/{missing}", tokens.ws2)
    assert (status, status2) == (404, 404)
    assert body.replace(job, "ID") == body2.replace(missing, "ID")
