"""Least privilege on NATS, against a real `getoperate up`: every attack of issue 13 that a
stolen credential could make, replayed with nats-py, now refused by nats-server (the authority's
permissions) or ignored by the services. The rest of the suite runs under these same users."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats
import pytest

from services.common import natsauth, permissions
from services.common.subjectmatch import allowed
from shared import subjects
from shared.codec import encode
from shared.jobs import Job, WorkerStatus
from tests.integration.conftest import Suite
from tests.integration.natsclients import raw_connect


def _creds(s: Suite) -> dict[str, str]:
    return json.loads((s.root / ".getoperate" / "nats-credentials.json").read_text())  # type: ignore[no-any-return]


class Conn:
    """A connection as `user`, declaring what the authority asks for, collecting its errors."""

    def __init__(self, s: Suite, user: str, password: str | None = None, **declare: str) -> None:
        self.s, self.user, self.declare = s, user, declare
        self.password = password if password is not None else _creds(s)[user]
        self.errors: list[str] = []
        self.nc: Any = None

    async def __aenter__(self) -> Any:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(self.s.plain_nats_url, user=self.user,
                                     password=self.password, error_cb=on_error,
                                     allow_reconnect=False, max_reconnect_attempts=0,
                                     **natsauth.connection_options("probe", self.user,
                                                                   **self.declare))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    def violated(self) -> bool:
        return any("permissions violation" in e.lower() for e in self.errors)


def worker_conn(s: Suite, group: str = "default", part: str = "jobs") -> Conn:
    return Conn(s, natsauth.worker_user(group), worker=f"probe-{group}", part=part)


async def _published_seen(s: Suite, conn: Conn, subject: str, wait: float = 1.0) -> bool:
    """Publish as `conn`; did an admin subscriber see it? (Where even the admin may not
    subscribe, e.g. the JetStream API, only the violation tells.)"""
    admin = await nats.connect(s.nats_url)
    seen = asyncio.Event()

    async def on_msg(msg: object) -> None:
        seen.set()

    try:
        if allowed(subject, permissions.static("admin").sub_allow):
            await admin.subscribe(subject, cb=on_msg)
            await admin.flush()
        await conn.nc.publish(subject, b'{"forged": true}')
        await conn.nc.flush()
        try:
            await asyncio.wait_for(seen.wait(), wait)
        except asyncio.TimeoutError:
            pass
        return seen.is_set()
    finally:
        await admin.close()


@pytest.mark.parametrize("subject", [subjects.group_subject("default"),
                                     subjects.job_subject("bash"),
                                     subjects.wake_subject("gpu"),
                                     "$JS.API.STREAM.DELETE.GO_CONFIG",
                                     "$JS.API.STREAM.PURGE.GO_JOBS",
                                     f"$JS.API.CONSUMER.DELETE.GO_JOBS.{subjects.tag_consumer('bash')}",
                                     f"$JS.API.CONSUMER.CREATE.GO_JOBS.{subjects.tag_consumer('gpu')}",
                                     f"$JS.API.CONSUMER.DURABLE.CREATE.GO_JOBS.{subjects.tag_consumer('gpu')}",
                                     f"$JS.API.CONSUMER.MSG.NEXT.GO_JOBS.{subjects.tag_consumer('gpu')}",
                                     f"$JS.ACK.GO_JOBS.{subjects.tag_consumer('gpu')}.1.1.1.1.0",
                                     "$O.GO_SNAPSHOTS.C.forged",
                                     "$SYS.REQ.SERVER.PING",
                                     "$SYS.REQ.USER.AUTH",
                                     "$KV.GO_CANCELS.someone-elses-job",
                                     # the mark of a cancelled queued job of a tag it lacks
                                     "$KV.GO_CANCELS."
                                     + subjects.cancelled_queued_key("gpu", "a" * 32),
                                     "anything.else"])
def test_a_worker_cannot_publish_outside_its_work(suite: Suite, subject: str) -> None:
    async def attempt() -> tuple[bool, Conn]:
        async with worker_conn(suite) as conn:
            seen = await _published_seen(suite, conn, subject)
            await asyncio.sleep(0.2)
            return seen, conn

    seen, conn = asyncio.run(attempt())
    assert not seen
    assert conn.violated(), conn.errors


@pytest.mark.parametrize("subject", [">", "go.jobs.q.>", subjects.job_subject("bash"), "_INBOX.>",
                                     "$JS.API.>", "go.jobev.>", subjects.SUBMIT_SUBJECT,
                                     subjects.wake_subject("gpu"), "$KV.GO_WORKERS.>"])
def test_a_worker_cannot_listen_to_jobs_inboxes_or_the_api(suite: Suite, subject: str) -> None:
    """The attack: subscribe to `>` (or the job subjects, every inbox, the JetStream API) and
    collect every workspace's code and arguments while jobs are submitted."""

    async def attempt() -> tuple[list[bytes], Conn]:
        async with worker_conn(suite) as conn:
            got: list[bytes] = []

            async def on_msg(msg: Any) -> None:
                got.append(msg.data)

            queue = {"queue": subjects.ROUTER_QUEUE_GROUP} if subject == subjects.SUBMIT_SUBJECT else {}
            await conn.nc.subscribe(subject, cb=on_msg, **queue)
            await conn.nc.flush()
            await asyncio.sleep(0.3)
            await asyncio.to_thread(suite.api.submit, "echo secret-code-$RANDOM")
            await asyncio.sleep(0.5)
            return got, conn

    got, conn = asyncio.run(attempt())
    assert conn.violated(), conn.errors
    assert not any(b"secret-code" in body for body in got)


def test_a_default_worker_cannot_take_a_gpu_job(extra_workers: Suite) -> None:
    """The attack: `$JS.API.CONSUMER.MSG.NEXT.GO_JOBS.tag_gpu` with a `default` worker's
    credentials stole a gpu job. Now refused; the job stays for a gpu worker."""
    s = extra_workers
    s.api.set_group("gpu", tags=["gpu"])
    answer = s.api.submit("echo on-gpu", tag="gpu")

    async def steal() -> tuple[Any, Conn]:
        async with worker_conn(s) as conn:
            psub = await conn.nc.jetstream().pull_subscribe_bind(
                durable=subjects.tag_consumer("gpu"), stream=subjects.JOBS_STREAM)
            try:
                got = await psub.fetch(1, timeout=1.0)
            except Exception as exc:  # refused: nothing comes
                got = exc
            await asyncio.sleep(0.2)
            return got, conn

    got, conn = asyncio.run(steal())
    assert conn.violated() and not isinstance(got, list), (got, conn.errors)
    s.worker("gpu", WORKER_GROUP="gpu")
    assert s.api.job(answer["id"])["status"] == "success"


def test_a_worker_with_another_groups_password_is_refused(suite: Suite) -> None:
    creds = _creds(suite)
    name = "x inbox=0123456789abcdef worker=x part=jobs"
    _, answer = raw_connect(suite, user=natsauth.worker_user("gpu"),
                            **{"pass": creds[natsauth.worker_user("default")]}, name=name)
    assert "Authorization Violation" in answer
    _, ok = raw_connect(suite, user=natsauth.worker_user("default"),
                        **{"pass": creds[natsauth.worker_user("default")]}, name=name)
    assert "PONG" in ok  # the control: its own password is taken


def test_a_connection_must_declare_its_inbox(suite: Suite) -> None:
    creds = _creds(suite)
    client = {"user": "client", "pass": creds["client"]}
    assert "Authorization Violation" in raw_connect(suite, **client, name="x")[1]
    assert "PONG" in raw_connect(suite, **client, name="x inbox=0123456789client")[1]


def _own_key(conn: Conn, worker_id: str) -> str:
    """The one heartbeat key the authority lets `conn` write: its nonce derives from its inbox
    token."""
    token = natsauth.declared(conn.nc.options["name"])["inbox"]
    return subjects.heartbeat_key(conn.user, worker_id, subjects.heartbeat_nonce(token))


def test_heartbeats_only_under_its_own_key(suite: Suite) -> None:
    """The attack: overwrite or delete another worker's heartbeat (of another group, or of its
    own: it knows the id, not the nonce), or plant a fake worker claiming a group it does not
    belong to, alive for ten years."""
    workers = suite.api.workers()
    native = next(w for w in workers if w["group"] == "native")
    sibling = next(w for w in workers if w["group"] == "default")
    guesses = [subjects.heartbeat_key(natsauth.worker_user("native"), native["id"], "guess"),
               subjects.heartbeat_key(natsauth.worker_user("default"), sibling["id"], "guess"),
               subjects.heartbeat_key(natsauth.worker_user("default"), sibling["id"], "*")]

    async def attack() -> tuple[Conn, Conn]:
        async with worker_conn(suite, part="control") as conn:
            kv = await conn.nc.jetstream().key_value(subjects.WORKERS_BUCKET)
            for key in guesses:
                for action in (kv.put(key, b"{}"), kv.delete(key)):
                    try:  # a denied publish is never answered: the violation is what counts
                        await asyncio.wait_for(action, 1.0)
                    except Exception:
                        pass
            # its own key, claiming group gpu and a heartbeat ten years ahead; then its own
            # group, but a tag the group does not have
            fake = WorkerStatus(id="probe-default", group="gpu", tags=["gpu"], tags_source="group",
                                config_version=1, state="ready", hostname="h", pid=1,
                                started_at=time.time(), heartbeat_at=time.time() + 10 * 365 * 86400)
            await kv.put(_own_key(conn, "probe-default"), encode(fake))
            fake2 = WorkerStatus(id="probe-default2", group="default", tags=["gpu"],
                                 tags_source="group", config_version=1, state="ready",
                                 hostname="h", pid=1, started_at=time.time(),
                                 heartbeat_at=time.time())
            async with Conn(suite, natsauth.worker_user("default"), worker="probe-default2",
                            part="control") as other:
                kv2 = await other.nc.jetstream().key_value(subjects.WORKERS_BUCKET)
                await kv2.put(_own_key(other, "probe-default2"), encode(fake2))
                await asyncio.sleep(0.3)
            return conn, other

    conn, other = asyncio.run(attack())
    assert conn.violated() and not other.violated(), (conn.errors, other.errors)
    denied = [e for e in conn.errors if "permissions violation" in e.lower()]
    assert len(denied) >= len(guesses), denied
    time.sleep(1.0)
    after = suite.api.workers()
    for victim in (native, sibling):
        assert any(w["id"] == victim["id"] and w["group"] == victim["group"] for w in after)
    assert not any(w["id"] in ("probe-default", "probe-default2") for w in after)


def test_a_worker_reads_only_its_groups_config(suite: Suite) -> None:
    """Another group's config events hold its init script and static variables (secrets):
    a worker of `default` may replay its own group and the assignable tags, nothing else."""
    suite.api.set_group("secretive", tags=["t-secretive"])

    async def replay(subject: str) -> tuple[int, bool]:
        async with worker_conn(suite, part="control") as conn:
            js = conn.nc.jetstream()
            try:  # a denied request is never answered: a short wait is enough
                sub = await asyncio.wait_for(js.pull_subscribe(
                    subject, durable=None, stream=subjects.CONFIG_STREAM), 2.0)
                got = len(await sub.fetch(1, timeout=2))
            except Exception:
                got = 0
            try:  # the unfiltered form that ordered consumers use
                await asyncio.wait_for(js.subscribe(subject, stream=subjects.CONFIG_STREAM,
                                                    ordered_consumer=True), 2.0)
                got += 1
            except Exception:
                pass
            await asyncio.sleep(0.2)
            return got, conn.violated()

    own, own_violated = asyncio.run(replay(subjects.group_subject("default")))
    other, other_violated = asyncio.run(replay(subjects.group_subject("secretive")))
    assert own == 1 and own_violated  # its group, pulled; the ordered form is refused
    assert other == 0 and other_violated


def test_wake_ups_carry_no_job(suite: Suite) -> None:
    async def listen() -> list[bytes]:
        async with worker_conn(suite) as conn:
            got: list[bytes] = []

            async def on_msg(msg: Any) -> None:
                got.append(msg.data)

            await conn.nc.subscribe(subjects.wake_subject("bash"), cb=on_msg)
            await conn.nc.flush()
            await asyncio.to_thread(suite.api.submit, "echo wake-secret")
            for _ in range(50):
                if got:
                    break
                await asyncio.sleep(0.05)
            assert not conn.violated(), conn.errors
            return got

    got = asyncio.run(listen())
    assert got and all(body == b"" for body in got)


def test_a_router_cannot_write_config_or_snapshots_and_config_cannot_enqueue(suite: Suite) -> None:
    async def probe(user: str, subject: str) -> bool:
        if user == "config":  # the static user: nats-server's config, not the authority
            nc = await nats.connect(suite.plain_nats_url, user="config",
                                    password=_creds(suite)["config"],
                                    **natsauth.connection_options("probe", "config"))
            conn = Conn(suite, "config")
            conn.nc = nc
            try:
                return await _published_seen(suite, conn, subject)
            finally:
                await nc.close()
        async with Conn(suite, user) as conn:
            return await _published_seen(suite, conn, subject)

    assert asyncio.run(probe("router", subjects.group_subject("x"))) is False
    assert asyncio.run(probe("router", "$O.GO_SNAPSHOTS.C.forged")) is False
    assert asyncio.run(probe("config", subjects.job_subject("bash"))) is False
    assert asyncio.run(probe("client", subjects.job_subject("bash"))) is False


def test_a_forged_job_on_a_queue_cannot_come_from_a_worker(suite: Suite) -> None:
    """Only routers (and the operator) put jobs on queues: a worker's publish is refused."""
    job = Job(id="forged-1", workspace="ws2", language="bash", code="echo forged", tag="bash",
              submitted_at=time.time())

    async def forge() -> tuple[bool, Conn]:
        async with worker_conn(suite) as conn:
            try:
                await conn.nc.jetstream().publish(subjects.job_subject("bash"), encode(job),
                                                  timeout=1.0)
            except Exception:
                pass
            await asyncio.sleep(0.2)
            return await _published_seen(suite, conn, subjects.job_subject("bash")), conn

    seen, conn = asyncio.run(forge())
    assert not seen and conn.violated()
    from cli.client import CliError

    with pytest.raises(CliError):
        suite.api.job("forged-1", wait=False)  # never queued: 404


def test_worker_credentials_may_store_job_events_and_ask_a_router(suite: Suite) -> None:
    async def as_worker() -> tuple[int, dict[str, object]]:
        async with worker_conn(suite, part="control") as conn:
            ack = await conn.nc.jetstream().publish(subjects.job_events_subject("probe-job"),
                                                    b'{"probe": true}', timeout=10)
            reply = await conn.nc.request(subjects.SUBMIT_SUBJECT, json.dumps(
                {"language": "bash", "code": "echo step"}).encode(), timeout=10,
                headers=suite.auth())  # a submission carries a token (test_identity.py)
            assert not conn.violated(), conn.errors
            return ack.seq, json.loads(reply.data)

    seq, answer = asyncio.run(as_worker())
    assert seq > 0  # stored on GO_JOB_EVENTS
    assert "tag" in answer or "error" in answer  # answered (the router decides who may submit)


def test_no_credentials_no_connection(suite: Suite) -> None:
    """Speak the NATS protocol by hand: CONNECT without credentials is refused."""
    info, answer = raw_connect(suite)
    assert info["auth_required"] is True
    assert "Authorization Violation" in answer


def test_jobs_do_not_see_nats_credentials(suite: Suite) -> None:
    view = suite.api.job(suite.api.submit('echo "${NATS_PASSWORD:-none} ${NATS_USER:-none}"')["id"])
    assert view["result"] == "none none"
    assert (suite.root / ".getoperate" / "nats-credentials.json").stat().st_mode & 0o777 == 0o600


def test_group_static_env_reaches_jobs_but_worker_secrets_do_not(extra_workers: Suite) -> None:
    from tests.integration.harness import cli, ready

    s = extra_workers
    out = cli("group", "set", "envstatic", "--tags", "t-envstatic", "--env", "REGION=eu-west",
              "--env", "MODE=batch", cwd=s.root)
    assert out.returncode == 0, out.stderr
    proc = s.worker("envstatic", WORKER_GROUP="envstatic", NATS_PASSWORD_HINT="x")
    s.api.wait_workers(ready("envstatic"))
    code = 'echo "$REGION ${MODE:-unset} ${NATS_PASSWORD:-none} ${NATS_PASSWORD_HINT:-none}"'
    assert s.api.job(s.api.submit(code, tag="t-envstatic")["id"])["result"] == "eu-west batch none none"
    changed = s.api.set_group("envstatic", env={"REGION": "us-east"})
    s.api.wait_workers(ready("envstatic", version=changed["seq"]))
    assert s.api.job(s.api.submit(code, tag="t-envstatic")["id"])["result"] == "us-east unset none none"
    assert any("env: REGION" in c for r in proc.log_events("hot_reload") for c in r["changes"])
    bad = cli("group", "set", "envstatic", "--env", "GO_JOB_ID=x", cwd=s.root)
    assert bad.returncode == 2 and "not allowed" in bad.stderr


def test_a_tag_added_by_hot_reload_is_pulled_without_a_restart(extra_workers: Suite) -> None:
    """The jobs connection is reopened with the new tag's rights; no permission violation."""
    from tests.integration.harness import ready

    s = extra_workers
    s.api.set_group("hotperm", tags=["t-hotperm-a"])
    proc = s.worker("hotperm", WORKER_GROUP="hotperm")
    s.api.wait_workers(ready("hotperm"))
    changed = s.api.set_group("hotperm", tags=["t-hotperm-a", "t-hotperm-b"])
    s.api.wait_workers(ready("hotperm", version=changed["seq"]))
    assert s.api.job(s.api.submit("echo b", tag="t-hotperm-b")["id"])["result"] == "b"
    s.api.set_group("hotperm", tags=["t-hotperm-b"])  # a removed tag's rights go too
    assert s.api.job(s.api.submit("echo b2", tag="t-hotperm-b")["id"])["result"] == "b2"
    assert not [e for e in proc.log_events("nats_error") if "violation" in str(e)]


def test_the_router_answers_only_on_an_inbox(suite: Suite) -> None:
    """The attack: a submission whose reply subject is a cancel key (or a queue, a snapshot):
    NATS lets a responder answer outside its own allow list, so the router wrote there."""
    job = suite.api.submit("sleep 2; echo survived")["id"]
    token = (suite.root / ".getoperate" / "admin.token").read_text().strip()

    async def deputy() -> None:
        async with Conn(suite, "client") as conn:
            await conn.nc.publish(subjects.SUBMIT_SUBJECT, b"{}junk",
                                  reply=f"$KV.GO_CANCELS.{job}",
                                  headers={"Authorization": f"Bearer {token}"})
            await conn.nc.flush()
            await asyncio.sleep(0.5)

    asyncio.run(deputy())
    assert suite.api.job(job)["result"] == "survived"
    assert "reply_refused" in suite.up.output()


def test_stolen_router_credentials_can_neither_shrink_a_stream_nor_copy_submissions(
        suite: Suite) -> None:
    async def attack() -> tuple[Conn, list[bytes]]:
        async with Conn(suite, "router") as conn:
            got: list[bytes] = []

            async def on_msg(msg: Any) -> None:
                got.append(msg.data)

            await conn.nc.subscribe(subjects.SUBMIT_SUBJECT, cb=on_msg)  # no queue group
            try:
                await conn.nc.request("$JS.API.STREAM.UPDATE.GO_JOB_EVENTS", json.dumps(
                    {"name": "GO_JOB_EVENTS", "subjects": ["go.jobev.>"], "max_msgs": 5}).encode(),
                    timeout=1.0)
            except Exception:
                pass
            await conn.nc.flush()
            await asyncio.to_thread(suite.api.submit, "echo copy-me")
            await asyncio.sleep(0.5)
            return conn, got

    conn, got = asyncio.run(attack())
    assert conn.violated() and not got, conn.errors

    async def events_kept() -> int:
        nc = await nats.connect(suite.nats_url)
        try:
            info = await nc.jetstream().stream_info(subjects.JOB_EVENTS_STREAM)
            return int(info.config.max_msgs or -1)
        finally:
            await nc.close()

    assert asyncio.run(events_kept()) in (-1, 0)


def test_a_forged_job_queued_moves_no_job(suite: Suite) -> None:
    """The attack: a `job.queued` with `workspace: ws2` written by a worker for a job of
    another workspace; its owner then got 404 for its own job. Only the first one counts."""
    from shared.jobs import JobQueued

    job = suite.api.submit("sleep 1; echo mine", workspace="main")["id"]
    forged = JobQueued(job_id=job, time=time.time(), tag="bash", workspace="ws2", language="bash")

    async def forge() -> None:
        async with worker_conn(suite, part="control") as conn:
            await conn.nc.jetstream().publish(subjects.job_events_subject(job), encode(forged),
                                              timeout=10)

    asyncio.run(forge())
    view = suite.api.job(job)
    assert (view["workspace"], view["result"]) == ("main", "mine")
