"""GO_CONFIG purged, partly purged or deleted under a running suite (`getoperate up`: a real
nats-server, the config service, a router and workers as processes, real SQLite): the config
service puts the log back on the stream by itself, without a restart, each event once and in log
order, signed; a router and a worker that followed the stream all along fold the config written
afterwards, and route and run a job with it (docs/production.md, "Recovering the config stream").
Last, the stream deleted while the config service is stopped: created again on its start.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import nats
from nats.js import api
from nats.js.errors import NotFoundError

from services.common.natsserver import NatsServer
from services.common.signingkeys import load_verifier
from shared import subjects
from shared.admission import check_signed, decode_raw
from tests.integration.configproc import TOKEN, SignedDeployment
from tests.integration.conftest import Suite
from tests.integration.harness import cli, ready, wait_until

DEADLINE = 60.0  # the outbox looks every 5 s; a router's ordered consumer resubscribes within 20 s


def on_nats(url: str, work: Any) -> Any:
    """Run `work(js)` on NATS at `url` (with the admin's credentials: the operator's tools)."""
    async def go() -> Any:
        nc = await nats.connect(url)
        try:
            return await work(nc.jetstream())
        finally:
            await nc.close()
    return asyncio.run(go())


async def stream(js: Any) -> tuple[api.StreamState, list[api.RawStreamMsg]] | None:
    """GO_CONFIG's state and every message on it, in stream order; None if there is no stream."""
    try:
        info = await js.stream_info(subjects.CONFIG_STREAM)
    except NotFoundError:
        return None
    msgs: list[api.RawStreamMsg] = []
    seq = int(info.state.first_seq)
    while True:
        try:
            msg = await js.get_msg(subjects.CONFIG_STREAM, seq, next=True,
                                   subject=subjects.CONFIG_SUBJECTS)
        except NotFoundError:
            return info.state, msgs
        msgs.append(msg)
        seq = int(msg.seq or 0) + 1


def sqlite_log(data_dir: Path) -> list[tuple[str, bytes]]:
    """(subject, exact bytes) of every event in the config service's SQLite log, in order."""
    path = data_dir / "config.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [(str(subject), str(body).encode())
                for subject, body in db.execute("SELECT subject, body FROM events ORDER BY seq")]
    finally:
        db.close()


def stream_is_the_log(url: str, data_dir: Path) -> bool:
    """The stream holds every event of the SQLite log once, in log order, with its exact bytes
    and subject, signed by the config service; nothing else."""
    found = on_nats(url, stream)
    if found is None:
        return False
    _, msgs = found
    if [(m.subject, m.data) for m in msgs] != sqlite_log(data_dir):
        return False
    verifier = load_verifier(data_dir)
    for m in msgs:
        check_signed(decode_raw(m.data), m.subject, m.headers, m.data, verifier)
    return True


def data(s: Suite) -> Path:
    return s.root / ".getoperate"


def config_pid(s: Suite) -> int:
    """The config service `up` started (its child running `cli.main config`)."""
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit():
                continue
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == s.up.p.pid and argv[-2:] == [b"config", b""]:
            return int(proc.name)
    raise AssertionError("no config service under `up`")


def start_follower(s: Suite, group: str) -> tuple[str, str]:
    """A group with one tag and a worker of it, ready: a router and a worker that follow the
    stream from before it is damaged. Returns (the tag, the worker's id)."""
    tag = f"t-{group}-0"
    s.api.set_group(group, tags=[tag])
    s.worker(group, WORKER_GROUP=group)
    workers = s.api.wait_workers(ready(group, tags={tag}))
    return tag, next(w["id"] for w in workers if w["group"] == group)


def after_recovery(s: Suite, group: str, tags: list[str], worker_id: str, pid: int) -> None:
    """The facts every recovery must leave: a write lands, the stream is the log, the router
    and the worker that followed all along fold the write and run a job with it, verify is
    clean, and the config service is the same process (it never crashed nor restarted)."""
    new_tag = f"t-{group}-{uuid.uuid4().hex[:6]}"
    answer = s.api.set_group(group, tags=[*tags, new_tag])
    seq = int(answer["seq"])
    wait_until(lambda: stream_is_the_log(s.nats_url, data(s)) and decode_raw(
        on_nats(s.nats_url, stream)[1][-1].data).seq == seq, "the write on the stream")
    wait_until(lambda: s.api.call("GET", "router", "/healthz")["config_seq"] == seq,
               "the router at the write")
    s.api.wait_workers(ready(group, tags={*tags, new_tag}, version=seq), timeout=DEADLINE)
    submitted = s.api.submit("echo $GO_WORKER_GROUP", tag=new_tag)
    assert submitted["groups"] == [group], submitted  # the router's config has the new tag
    view = s.api.job(submitted["id"], timeout=30)
    assert (view["status"], view["group"], view["worker"]) == ("success", group, worker_id), view
    report = s.api.call("GET", "config", "/verify")
    assert report["ok"] is True and report["stream_events"] == seq, report
    assert cli("verify", cwd=s.root).returncode == 0
    assert config_pid(s) == pid
    assert "config exited" not in s.up.output()


def test_a_purged_config_stream_is_republished_from_the_log(extra_workers: Suite) -> None:
    s = extra_workers
    tag, worker_id = start_follower(s, "purged")
    pid = config_pid(s)
    events = len(sqlite_log(data(s)))
    assert stream_is_the_log(s.nats_url, data(s))

    on_nats(s.nats_url, lambda js: js.purge_stream(subjects.CONFIG_STREAM))

    # Within the 2-minute dedup window of the first copies: republished under ids of their own.
    wait_until(lambda: stream_is_the_log(s.nats_url, data(s)), "the log back on the purged stream")
    assert '"config_stream_repair"' in s.up.output()
    assert len(sqlite_log(data(s))) == events  # the log is the truth: nothing added, nothing lost
    after_recovery(s, "purged", [tag], worker_id, pid)


def test_a_purged_subject_and_deleted_messages_are_put_back_in_log_order(
        extra_workers: Suite) -> None:
    s = extra_workers
    tag, worker_id = start_follower(s, "holes")
    pid = config_pid(s)
    events = len(sqlite_log(data(s)))

    async def make_holes(js: Any) -> None:
        found = await stream(js)
        assert found is not None
        _, msgs = found
        purged = subjects.group_subject("holes")
        others = [m for m in msgs if m.subject != purged]
        await js.purge_stream(subjects.CONFIG_STREAM, subject=purged)  # the newest events
        await js.delete_msg(subjects.CONFIG_STREAM, others[0].seq)  # the first event
        await js.delete_msg(subjects.CONFIG_STREAM, others[-1].seq)  # one in the middle
    on_nats(s.nats_url, make_holes)

    wait_until(lambda: stream_is_the_log(s.nats_url, data(s)), "the log back in order")
    assert len(sqlite_log(data(s))) == events
    after_recovery(s, "holes", [tag], worker_id, pid)


def test_a_deleted_config_stream_is_created_again_past_its_old_sequences(
        extra_workers: Suite) -> None:
    s = extra_workers
    tag, worker_id = start_follower(s, "deleted")
    pid = config_pid(s)
    events = len(sqlite_log(data(s)))
    old_last = int(on_nats(s.nats_url, stream)[0].last_seq)

    on_nats(s.nats_url, lambda js: js.delete_stream(subjects.CONFIG_STREAM))

    wait_until(lambda: stream_is_the_log(s.nats_url, data(s)), "the log on a new stream")
    state, _ = on_nats(s.nats_url, stream)
    # Followers resume at their old stream sequence + 1: the new stream starts past all of them.
    assert int(state.first_seq) > old_last
    assert '"config_stream_recreated"' in s.up.output()
    assert len(sqlite_log(data(s))) == events
    after_recovery(s, "deleted", [tag], worker_id, pid)


# --- deleted while the config service is stopped (its own process here, stopped and started) ---


def submit(d: SignedDeployment, tag: str) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{d.router_port}/jobs", method="POST",
        data=json.dumps({"language": "bash", "code": "echo $GO_WORKER_GROUP", "tag": tag}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_a_config_stream_deleted_while_the_config_service_is_down_is_created_past_its_old_sequences(
        tmp_path: Path, nats_server: NatsServer) -> None:
    """The router and the worker keep running; a junk message the outbox removed shifted the
    stream's sequences past the log's, so a stream started again from 1 would hide the next
    events from them (they resume at their old stream sequence + 1)."""
    d = SignedDeployment(tmp_path, nats_server.url)
    data_dir = tmp_path / "data"
    try:
        d.config.start()
        d.config.call("PUT", "/groups/down", {"tags": ["t-down-0"]})
        d.router()
        d.worker("down")
        wait_until(lambda: ready("down", tags={"t-down-0"})(d.router_get("/workers")[1]),
                   "the worker of group down")
        worker_id = next(w["id"] for w in d.router_get("/workers")[1] if w["group"] == "down")
        on_nats(d.nats_url, lambda js: js.publish("go.config.group.x", b"junk"))
        status, answer = d.config.call("PUT", "/groups/other", {"tags": ["t-other"]})
        assert status == 200 and answer["published"] is True  # and the junk is gone
        state, _ = on_nats(d.nats_url, stream)
        old_last = int(state.last_seq)
        assert old_last > answer["seq"]
        d.config.stop()

        on_nats(d.nats_url, lambda js: js.delete_stream(subjects.CONFIG_STREAM))
        d.config.start()

        wait_until(lambda: stream_is_the_log(d.nats_url, data_dir), "the log on a new stream")
        assert int(on_nats(d.nats_url, stream)[0].first_seq) > old_last
        assert d.config.proc is not None and '"config_stream_recreated"' in d.config.proc.output()
        status, answer = d.config.call("PUT", "/groups/down", {"tags": ["t-down-0", "t-down-1"]})
        assert status == 200
        seq = int(answer["seq"])
        wait_until(lambda: d.router_get("/healthz")[1]["config_seq"] == seq,
                   "the router at the write")
        wait_until(lambda: ready("down", tags={"t-down-0", "t-down-1"}, version=seq)(
            d.router_get("/workers")[1]), "the worker at the write")
        submitted = submit(d, "t-down-1")
        assert submitted["groups"] == ["down"], submitted
        status, view = d.router_get(f"/jobs/{submitted['id']}?wait=1&timeout=30")
        assert (view["status"], view["group"], view["worker"]) == ("success", "down", worker_id)
        wait_until(lambda: stream_is_the_log(d.nats_url, data_dir), "the write on the stream")
        assert d.verify()["ok"] is True
    finally:
        d.stop()
