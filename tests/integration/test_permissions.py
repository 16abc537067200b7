"""NATS permissions of `getoperate up`: with a worker's credentials one cannot forge a config event,
inject a job or touch streams; the services work under their own roles (the rest of the suite)."""

from __future__ import annotations

import asyncio
import json
import socket

import nats
import pytest

from shared import subjects
from tests.integration.conftest import Suite


def _creds(s: Suite) -> dict[str, str]:
    return json.loads((s.root / ".getoperate" / "nats-credentials.json").read_text())  # type: ignore[no-any-return]


async def _probe(s: Suite, role: str, subject: str, wait: float = 1.0) -> tuple[bool, list[str]]:
    """Publish as `role`; report whether an admin subscriber saw it, and the server's errors."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    admin = await nats.connect(s.nats_url)
    probe = await nats.connect(s.plain_nats_url, user=role, password=_creds(s)[role],
                               error_cb=on_error)
    seen = asyncio.Event()

    async def on_msg(msg: object) -> None:
        seen.set()

    try:
        await admin.subscribe(subject, cb=on_msg)
        await admin.flush()
        await probe.publish(subject, b'{"forged": true}')
        await probe.flush()
        try:
            await asyncio.wait_for(seen.wait(), wait)
        except asyncio.TimeoutError:
            pass
        return seen.is_set(), errors
    finally:
        await probe.close()
        await admin.close()


@pytest.mark.parametrize("subject", [subjects.group_subject("default"),
                                     subjects.job_subject("bash"),
                                     "$JS.API.STREAM.DELETE.GO_CONFIG",
                                     "$JS.API.STREAM.PURGE.GO_JOBS",
                                     # beyond its allow list: the shared tag consumers, the
                                     # snapshots, the system account, any other subject
                                     f"$JS.API.CONSUMER.DELETE.GO_JOBS.{subjects.tag_consumer('bash')}",
                                     "$O.GO_SNAPSHOTS.C.forged",
                                     "$SYS.REQ.SERVER.PING",
                                     "anything.else"])
def test_worker_credentials_cannot_forge_config_inject_jobs_or_touch_streams(
    suite: Suite, subject: str
) -> None:
    delivered, errors = asyncio.run(_probe(suite, "worker", subject))
    assert not delivered
    assert any("permissions violation" in e.lower() for e in errors), errors


def test_worker_credentials_may_store_job_events_and_ask_a_router(suite: Suite) -> None:
    async def as_worker() -> tuple[int, dict[str, object]]:
        nc = await nats.connect(suite.plain_nats_url, user="worker", password=_creds(suite)["worker"])
        try:
            ack = await nc.jetstream().publish(subjects.job_events_subject("probe-job"),
                                               b'{"probe": true}', timeout=10)
            reply = await nc.request(subjects.SUBMIT_SUBJECT, json.dumps(
                {"language": "bash", "code": "echo step"}).encode(), timeout=10,
                headers=suite.auth())  # a submission carries a token (tests/integration/test_identity.py)
            return ack.seq, json.loads(reply.data)
        finally:
            await nc.close()

    seq, answer = asyncio.run(as_worker())
    assert seq > 0  # stored on GO_JOB_EVENTS
    assert answer["tag"] == "bash" and answer["id"]
    assert suite.api.job(str(answer["id"]))["result"] == "step"


def test_a_router_cannot_write_config_and_config_cannot_enqueue(suite: Suite) -> None:
    assert asyncio.run(_probe(suite, "router", subjects.group_subject("x")))[0] is False
    assert asyncio.run(_probe(suite, "config", subjects.job_subject("bash")))[0] is False


def test_no_credentials_no_connection(suite: Suite) -> None:
    """Speak the NATS protocol by hand: CONNECT without credentials is refused."""
    with socket.create_connection(("127.0.0.1", suite.base), timeout=5) as sock:
        info = sock.recv(4096).decode()
        assert info.startswith("INFO ") and json.loads(info[5:])["auth_required"] is True
        sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        answer = sock.recv(4096).decode()
    assert "Authorization Violation" in answer


def test_jobs_do_not_see_nats_credentials(suite: Suite) -> None:
    view = suite.api.job(suite.api.submit('echo "${NATS_PASSWORD:-none} ${NATS_USER:-none}"')["id"])
    assert view["result"] == "none none"
    assert (suite.root / ".getoperate" / "nats-credentials.json").stat().st_mode & 0o777 == 0o600


def test_group_static_env_reaches_jobs_but_worker_secrets_do_not(extra_workers: Suite) -> None:
    from tests.integration.harness import cli
    from tests.integration.test_routing_e2e import ready

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
