"""Signed configuration, attacked for real (issue 13, points 4 and 5): real nats-server, real
SQLite, real config service, router and workers; no mocks.

- junk, a forged (signed-looking) `group.init_script_set` and a replayed old event on GO_CONFIG,
  published with the admin NATS credentials: routers and workers reject them, keep folding the
  real events after them, and the outbox is not wedged;
- a token added to a SQLite snapshot, or a snapshot written to GO_SNAPSHOTS by someone else: not
  accepted after a restart, and `verify` names the sequence;
- a derived column edited in SQLite: `verify` names it, and the audit filters are not fooled;
- a key rotation: the config service re-signs the stream with its new key.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Iterator

import msgspec
import nats
import pytest

from services.common import bus
from services.common.http import hash_token
from services.common.natsserver import NatsServer
from services.common.signingkeys import load_verifier
from services.config.signing import keygen
from shared import subjects
from shared.admission import check_signed, decode_raw
from shared.codec import encode, encode_compact
from shared.events import GroupInitScriptSet, RawRecorded, seal
from shared.signing import (
    SIGNATURE_HEADER, SUBJECT_PREV_HEADER, Signer, new_private_key, parse_private_key,
)
from shared.snapshots import encode_snapshot, seal_snapshot
from shared.state import ApiToken, ConfigState
from tests.integration.configproc import TOKEN, SignedDeployment
from tests.integration.conftest import Suite
from tests.integration.harness import Proc, cli, cli_json, ready, wait_until

EVIL = "goa_planted-by-someone-with-sqlite-or-nats-access"


# --- helpers ----------------------------------------------------------------------------------


async def _with_js(url: str, work: Any) -> Any:
    nc = await nats.connect(url)
    try:
        return await work(nc.jetstream())
    finally:
        await nc.close()


def on_nats(url: str, work: Any) -> Any:
    return asyncio.run(_with_js(url, work))


async def stream_messages(js: Any) -> list[Any]:
    info = await js.stream_info(subjects.CONFIG_STREAM)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            out.append(await js.get_msg(subjects.CONFIG_STREAM, seq))
        except nats.js.errors.NotFoundError:
            continue
    return out


def forged_event(last: RawRecorded, event: Any, subject_prev: int) -> tuple[dict[str, str], bytes]:
    """The next event, chained correctly to the last one on the stream and signed, with a key
    that is not the config service's: what a stolen admin NATS password can publish."""
    rec = seal(prev_hash=last.hash, seq=last.seq + 1, id=uuid.uuid4().hex, time=last.time,
               actor="admin", reason="looks legit", event=event)
    body = encode(rec)
    subject = subjects.group_subject(event.group)
    mallory = Signer(new_private_key())
    return {SIGNATURE_HEADER: mallory.sign_event(rec.seq, subject, subject_prev, body),
            SUBJECT_PREV_HEADER: str(subject_prev)}, body


@pytest.fixture
def deployment(tmp_path: Path, nats_server: NatsServer) -> Iterator[SignedDeployment]:
    d = SignedDeployment(tmp_path, nats_server.url)
    d.config.start()
    try:
        yield d
    finally:
        d.stop()


def workers_of(s: Suite, group: str) -> list[dict[str, Any]]:
    return [w for w in s.api.workers() if w["group"] == group]


# --- GO_CONFIG: junk, forged and replayed events, with the admin NATS credentials -------------


def test_forged_junk_and_replayed_config_events_are_rejected_and_real_ones_still_land(
    extra_workers: Suite,
) -> None:
    s = extra_workers
    s.api.set_group("sg", tags=["t-sg1"], init_script="echo real init\n")
    proc = s.worker("sg", WORKER_GROUP="sg")
    s.api.wait_workers(ready("sg", tags={"t-sg1"}))
    wait_until(lambda: proc.log_events("init_script_ok"), what="the real init script ran")
    before = workers_of(s, "sg")[0]
    runs = (len(proc.log_events("init_script_ok")), len(proc.log_events("hot_reload")))
    subject = subjects.group_subject("sg")

    async def attack(js: Any) -> None:
        last_on_sg = await js.get_last_msg(subjects.CONFIG_STREAM, subject)
        last = decode_raw((await stream_messages(js))[-1].data)
        headers, body = forged_event(
            last, GroupInitScriptSet(group="sg", init_script="touch /tmp/pwned; echo pwned\n"),
            subject_prev=decode_raw(last_on_sg.data).seq)
        await js.publish(subject, body, headers=headers)  # signed-looking, wrong key
        unsigned = {k: v for k, v in headers.items() if k != SIGNATURE_HEADER}
        await js.publish(subject, body, headers=unsigned)
        await js.publish(subject, b"junk \xff")  # not even JSON
        await js.publish("go.config.group.x", b'{"seq": 1}')  # on another group's subject
        signed = {k: v for k, v in last_on_sg.headers.items() if k.startswith("Go-")}
        await js.publish(subject, last_on_sg.data, headers=signed)  # a replay, validly signed

    on_nats(s.nats_url, attack)
    wait_until(lambda: len(proc.log_events("config_event_rejected")) >= 4, what="worker rejects")
    reasons = {e["reason"] for e in proc.log_events("config_event_rejected")}
    assert {"unknown_key", "unsigned", "malformed", "repeat"} <= reasons, reasons
    def router_reasons() -> set[str]:
        return {json.loads(line)["reason"] for line in s.up.output().splitlines()
                if '"config_event_rejected"' in line and '"stream_seq"' in line}

    # The router follows the stream on its own: wait for it to reach the replay, the last one.
    wait_until(lambda: {"unknown_key", "unsigned", "malformed", "repeat"} <= router_reasons(),
               what="router rejects")
    assert {"unknown_key", "unsigned", "malformed", "repeat"} <= router_reasons(), router_reasons()
    now = workers_of(s, "sg")[0]
    assert now["config_version"] == before["config_version"] and now["state"] == "ready"
    # The forged init script was never folded, so never run: no reload, no second init run.
    assert (len(proc.log_events("init_script_ok")), len(proc.log_events("hot_reload"))) == runs

    # The outbox is not wedged: the next real change is published, and folded everywhere.
    answer = s.api.set_group("sg", tags=["t-sg1", "t-sg2"])
    assert answer["published"] is True
    s.api.wait_workers(ready("sg", tags={"t-sg1", "t-sg2"}))
    assert s.api.job(s.api.submit("echo after", tag="t-sg2")["id"])["result"] == "after"
    foreign = [json.loads(line) for line in s.up.output().splitlines()
               if '"config_stream_foreign_message"' in line]
    assert len(foreign) >= 5 and all(f["deleted"] for f in foreign)
    report = cli_json("verify", cwd=s.root)
    assert report["ok"] is True, report  # the strays are gone from the stream


# --- snapshots --------------------------------------------------------------------------------


def test_a_token_added_to_the_sqlite_snapshot_is_refused_after_restart_and_verify_names_it(
    deployment: SignedDeployment,
) -> None:
    d = deployment
    for i in range(6):  # seeds 1-4 (snapshot at 4), then 5-10: snapshot at 8, log at 10
        assert d.config.call("PUT", f"/groups/snap{i % 2}", {"tags": [f"s{i}"]})[0] == 200
    d.config.stop()
    db = sqlite3.connect(d.root / "data" / "config.sqlite")
    seq, body = db.execute("SELECT seq, body FROM snapshots WHERE seq < (SELECT max(seq) FROM"
                           " events) ORDER BY seq DESC LIMIT 1").fetchone()
    state = msgspec.msgpack.decode(body, type=ConfigState)
    planted = msgspec.structs.replace(state, tokens={**state.tokens, "evil": ApiToken(
        name="evil", token_hash=hash_token(EVIL))})
    db.execute("UPDATE snapshots SET body = ? WHERE seq = ?", [encode_compact(planted), seq])
    db.commit()
    db.close()

    d.config.start()
    assert d.config.call("GET", "/groups", token=EVIL)[0] == 401
    assert d.config.call("GET", f"/state?at={seq}")[1]["tokens"] == {}
    assert d.config.proc is not None
    rejected = d.config.proc.log_events("snapshot_rejected")
    assert [(e["seq"], e["source"], e["reason"]) for e in rejected][:1] == \
        [(seq, "sqlite", "bad_signature")]
    report = d.verify()
    assert not report["ok"]
    assert (report["first_bad_seq"], report["check"], report["field"]) == (seq, "snapshot", "sqlite")
    failed = cli("verify", "--config-url", f"http://127.0.0.1:{d.config.port}", cwd=d.root,
                 env={"GETOPERATE_TOKEN": TOKEN})
    assert failed.returncode == 1 and f"verification failed at seq {seq}" in failed.stderr


def test_a_snapshot_written_to_go_snapshots_by_someone_else_is_ignored(
    deployment: SignedDeployment,
) -> None:
    d = deployment
    d.config.call("PUT", "/groups/sg", {"tags": ["t-real"]})
    router = d.router()
    worker = d.worker("sg")
    worker.wait_for('"worker_ready"', timeout=60)
    _, health = d.router_get("/healthz")
    seq = health["config_seq"]
    verifier = load_verifier(d.root / "data")

    async def current(js: Any) -> ConfigState:
        from shared.snapshots import decode_snapshot, open_snapshot

        stored = await bus.get_snapshot(js)
        return open_snapshot(decode_snapshot(stored), verifier)

    real = on_nats(d.nats_url, current)
    planted = msgspec.structs.replace(real, tokens={"evil": ApiToken(
        name="evil", token_hash=hash_token(EVIL))}, seq=seq)
    mallory = Signer(new_private_key())
    forgeries = {
        "malformed": encode_compact(planted),  # unsigned, as an older version wrote it
        "unknown_key": encode_snapshot(seal_snapshot(mallory, planted, "0" * 64, 0)),
    }
    for reason, blob in forgeries.items():
        router.stop()
        d.procs.remove(router)

        async def put(js: Any, blob: bytes = blob) -> None:
            await (await js.object_store(subjects.SNAPSHOT_BUCKET)).put(subjects.SNAPSHOT_NAME, blob)

        on_nats(d.nats_url, put)
        router = d.router()
        assert d.router_get("/jobs", token=EVIL)[0] == 401
        assert d.router_get("/healthz")[1]["config_seq"] == seq  # replayed from the stream
        assert [e["reason"] for e in router.log_events("snapshot_rejected")] == [reason]
        report = d.verify()
        assert not report["ok"] and report["check"] == "snapshot"
        assert any(p["check"] == "snapshot" and subjects.SNAPSHOT_BUCKET in (p.get("field") or "")
                   for p in report["problems"]), report
    # Workers never start from a snapshot: a restarted one still has its group's real config.
    worker.stop()
    d.procs.remove(worker)
    worker = d.worker("sg")
    worker.wait_for('"worker_ready"', timeout=60)
    assert "t-real" in worker.output() and not worker.log_events("config_event_rejected")


# --- derived columns and the audit filters ------------------------------------------------------


def test_an_edited_column_is_reported_and_neither_hides_nor_forges_an_audited_event(
    deployment: SignedDeployment,
) -> None:
    d = deployment
    for tags in (["a"], ["b"]):
        d.config.call("PUT", "/groups/audit", {"tags": tags})
    _, events = d.config.call("GET", "/events?actor=admin")
    mine = [e["seq"] for e in events]
    assert len(mine) == 3  # created, tags a, tags b
    db = sqlite3.connect(d.root / "data" / "config.sqlite")
    db.execute("UPDATE events SET actor = 'system' WHERE seq = ?", [mine[1]])  # hide it
    db.execute("UPDATE events SET type = 'token.created' WHERE seq = ?", [mine[2]])  # forge one
    db.commit()
    db.close()

    _, by_admin = d.config.call("GET", "/events?actor=admin")
    assert [e["seq"] for e in by_admin] == mine
    _, by_system = d.config.call("GET", "/events?actor=system")
    assert mine[1] not in [e["seq"] for e in by_system]
    assert d.config.call("GET", "/events?type=token.created")[1] == []
    cli_rows = cli("events", "--actor", "admin", "--type", "group.tags_set", "--json",
                   "--config-url", f"http://127.0.0.1:{d.config.port}", cwd=d.root,
                   env={"GETOPERATE_TOKEN": TOKEN}).stdout.splitlines()
    assert [json.loads(r)["seq"] for r in cli_rows] == mine[1:]

    report = d.verify()
    assert not report["ok"]
    assert (report["first_bad_seq"], report["check"], report["field"]) == (mine[1], "column", "actor")
    assert [(p["seq"], p["field"]) for p in report["problems"]] == \
        [(mine[1], "actor"), (mine[2], "type")]


# --- the outbox and a foreign message, without `up` -----------------------------------------------


def test_junk_on_go_config_does_not_wedge_the_outbox(deployment: SignedDeployment) -> None:
    d = deployment

    async def junk(js: Any) -> None:
        await js.publish("go.config.group.x", b"junk")
        await js.publish("go.config.group.x", b"more junk", headers={"Nats-Msg-Id": "j2"})

    on_nats(d.nats_url, junk)
    assert d.verify()["foreign_messages"] == 2  # reported until the outbox meets them
    status, answer = d.config.call("PUT", "/groups/after", {"tags": ["x"]})
    assert status == 200 and answer["published"] is True
    msgs = on_nats(d.nats_url, stream_messages)
    assert [decode_raw(m.data).seq for m in msgs] == list(range(1, answer["seq"] + 1))
    assert d.verify()["ok"] is True
    d.config.stop(signal.SIGKILL)  # and a restart finds its position past the junk's hole
    d.config.start()
    assert d.config.call("PUT", "/groups/after", {"tags": ["y"]})[1]["published"] is True
    assert d.verify()["ok"] is True


def test_services_refuse_to_start_without_the_public_key(tmp_path: Path,
                                                         nats_server: NatsServer) -> None:
    for args, env in ((["router"], {}), (["worker"], {"WORKER_GROUP": "g"})):
        proc = Proc(args, cwd=tmp_path, env={"NATS_URL": nats_server.url,
                                              "GETOPERATE_ADMIN_TOKEN": TOKEN, **env},
                    name=args[0])
        assert proc.p.wait(60) == 2
        lines = [line for line in proc.output().splitlines() if "error" in line]
        assert len(lines) == 1 and "GETOPERATE_CONFIG_PUBLIC_KEY" in lines[0], proc.output()
        proc.stop()


# --- a new key ----------------------------------------------------------------------------------


def test_a_new_signing_key_re_signs_the_stream(deployment: SignedDeployment) -> None:
    d = deployment
    d.config.call("PUT", "/groups/rot", {"tags": ["r1"]})
    old = load_verifier(d.root / "data")
    d.config.stop()
    private, public = keygen()
    old_public = (d.root / "data" / "config-signing.pub").read_text().strip()
    d.config.extra_env.update(GETOPERATE_CONFIG_SIGNING_KEY=private,
                              GETOPERATE_CONFIG_PUBLIC_KEY=f"{public},{old_public}")
    d.config.start()
    assert d.config.proc is not None
    d.config.proc.wait_for('"config_stream_resigned"')
    new = Signer(parse_private_key(private, field="key"))
    msgs = on_nats(d.nats_url, stream_messages)
    _, state = d.config.call("GET", "/state")
    assert [decode_raw(m.data).seq for m in msgs] == list(range(1, state["seq"] + 1))
    for m in msgs:
        check_signed(decode_raw(m.data), m.subject, m.headers, m.data, load_verifier(d.root / "data"))
        assert m.headers[SIGNATURE_HEADER].startswith(new.key_id)
    assert old.key_ids != [new.key_id]
    assert d.verify()["ok"] is True
    router = Proc(["router"], cwd=d.root, env={**d.env(), "GETOPERATE_CONFIG_PUBLIC_KEY": public},
                  name="router-new-key")
    d.procs.append(router)
    router.wait_for('"http_listening"')
    assert d.router_get("/healthz")[1]["config_seq"] == state["seq"]
    assert not router.log_events("config_event_rejected")
