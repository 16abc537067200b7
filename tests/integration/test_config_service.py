"""The config service against a real nats-server and a real SQLite file: log, outbox, recovery, HTTP."""

from __future__ import annotations

import json
import signal
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import nats
import pytest

from services.common.natsserver import NatsServer
from shared import subjects
from shared.codec import decode
from shared.events import Recorded, verify_chain
from tests.integration.configproc import ConfigProc


@pytest.fixture
def config(tmp_path: Path, nats_server: NatsServer):  # type: ignore[no-untyped-def]
    svc = ConfigProc(tmp_path, nats_server.url).start()
    yield svc
    svc.stop()


async def stream_records(url: str) -> list[Recorded]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.CONFIG_STREAM)
        return [decode((await js.get_msg(subjects.CONFIG_STREAM, seq)).data, Recorded)
                for seq in range(info.state.first_seq, info.state.last_seq + 1)]
    finally:
        await nc.close()


async def test_first_start_seeds_default_and_native_as_events(config: ConfigProc) -> None:
    status, groups = config.call("GET", "/groups")
    assert status == 200
    assert {g["name"]: g["tags"] for g in groups} == {
        "default": ["deno", "python3", "go", "bash", "powershell", "dependency", "flow", "hub",
                    "other", "bun"],
        "native": ["nativets", "postgresql", "mysql", "graphql", "snowflake", "bigquery", "mssql"],
    }
    records = await stream_records(config.nats_url)
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert {r.actor for r in records} == {"system"}
    assert verify_chain(records) is None


async def test_stream_holds_exactly_the_log_in_order(config: ConfigProc) -> None:
    for i in range(5):
        status, answer = config.call("PUT", "/groups/g1", {"tags": [f"t{i}"], "reason": "test"})
        assert status == 200 and answer["published"] is True
    _, log = config.call("GET", "/events")
    stream = await stream_records(config.nats_url)
    assert [decode(json.dumps(r), Recorded) for r in log] == stream
    assert stream[-1].reason == "test" and stream[-1].actor == "admin"


async def test_restart_gives_the_same_state(config: ConfigProc) -> None:
    config.call("PUT", "/groups/keep", {"tags": ["k1", "k2"], "init_script": "echo hi"})
    _, before = config.call("GET", "/state")
    config.stop(signal.SIGKILL)
    config.start()
    _, after = config.call("GET", "/state")
    assert after == before
    assert len(await stream_records(config.nats_url)) == before["seq"]  # nothing published twice


async def test_log_ahead_of_an_empty_nats_is_republished_once(tmp_path: Path) -> None:
    first = NatsServer(tmp_path / "nats1").start()
    svc = ConfigProc(tmp_path, first.url).start()
    svc.call("PUT", "/groups/g", {"tags": ["a"]})
    _, state = svc.call("GET", "/state")
    svc.stop()
    first.stop()
    fresh = NatsServer(tmp_path / "nats2").start()  # a brand-new, empty JetStream
    try:
        svc.nats_url = fresh.url
        svc.start()
        records = await stream_records(fresh.url)
        assert [r.seq for r in records] == list(range(1, state["seq"] + 1))
        assert verify_chain(records) is None
        svc.stop()
        svc.start()  # and a second restart publishes nothing more
        assert len(await stream_records(fresh.url)) == state["seq"]
    finally:
        svc.stop()
        fresh.stop()


async def test_empty_data_dir_is_rebuilt_from_the_stream(config: ConfigProc, tmp_path: Path) -> None:
    config.call("PUT", "/groups/g", {"tags": ["a", "b"]})
    _, state = config.call("GET", "/state")
    config.stop()
    (tmp_path / "data" / "config.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / "data" / f"config.sqlite{suffix}").unlink(missing_ok=True)
    config.start()
    _, rebuilt = config.call("GET", "/state")
    assert rebuilt == state
    rows = sqlite3.connect(tmp_path / "data" / "config.sqlite").execute(
        "SELECT count(*), min(published) FROM events").fetchone()
    assert rows == (state["seq"], 1)


async def test_an_appended_but_unpublished_event_is_published_on_restart(
    config: ConfigProc, tmp_path: Path
) -> None:
    """Simulates a crash between the SQLite append and the NATS publish."""
    config.call("PUT", "/groups/g", {"tags": ["a"]})
    config.stop(signal.SIGKILL)
    db = sqlite3.connect(tmp_path / "data" / "config.sqlite")
    seq = db.execute("SELECT max(seq) FROM events").fetchone()[0]
    db.execute("UPDATE events SET published = 0 WHERE seq = ?", [seq])  # as if the publish never happened
    db.commit()
    db.close()
    config.start()
    records = await stream_records(config.nats_url)
    assert [r.seq for r in records] == list(range(1, seq + 1))  # on the stream once, not twice


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("PUT", "/groups/g", {"tags": "gpu"}, 400, "tags"),
        ("PUT", "/groups/g", {"tags": [""]}, 400, "tags[0]"),
        ("PUT", "/groups/g", {"tags": ["x" * 101]}, 400, "tags[0]"),
        ("PUT", "/groups/g", {"tags": ["a*b,c"]}, 400, "tags[0]"),
        ("PUT", "/groups/g", {"tagz": ["a"]}, 400, None),
        ("PUT", "/groups/Bad%20Name", {"tags": ["a"]}, 400, "group"),
        ("PUT", "/groups/g", {"tags": ["a"], "expected_version": 999}, 409, "expected_version"),
        ("POST", "/groups/g/reset", {"preset": "gpu"}, 400, "preset"),
        ("DELETE", "/groups/missing", None, 404, "group"),
        ("GET", "/groups/missing", None, 404, "group"),
    ],
)
def test_bad_requests_get_4xx_json_naming_the_field(
    config: ConfigProc, method: str, path: str, body: Any, status: int, field: str | None
) -> None:
    got, answer = config.call(method, path, body)
    assert got == status, answer
    assert answer["message"]
    if field:
        assert answer.get("field") == field, answer


def test_malformed_json_oversized_body_and_missing_token(config: ConfigProc) -> None:
    status, answer = config.call("PUT", "/groups/g", raw=b"{not json")
    assert status == 400 and "malformed JSON" in answer["message"]
    status, answer = config.call("PUT", "/groups/g", raw=b'{"tags": ["' + b"a" * 2_000_000 + b'"]}')
    assert status == 413
    status, answer = config.call("GET", "/groups", token=None)
    assert status == 401
    status, answer = config.call("GET", "/groups", token="wrong")
    assert status == 401
    _, groups = config.call("GET", "/groups")
    assert "g" not in {g["name"] for g in groups}  # nothing half-written


def test_concurrent_writer_with_stale_version_gets_409(config: ConfigProc) -> None:
    _, created = config.call("PUT", "/groups/cc", {"tags": ["a"]})
    version = created["group"]["version"]
    ok, _ = config.call("PUT", "/groups/cc", {"tags": ["b"], "expected_version": version})
    lost, answer = config.call("PUT", "/groups/cc", {"tags": ["c"], "expected_version": version})
    assert (ok, lost) == (200, 409)
    _, group = config.call("GET", "/groups/cc")
    assert group["tags"] == ["b"]


def test_a_write_waiting_on_the_disk_does_not_stall_reads(config: ConfigProc) -> None:
    """A slow disk, made real: another connection holds SQLite's write lock, so the service's
    append (on the log's own thread) waits for it. Meanwhile the service answers what it holds
    in memory (groups, state, health, readiness); once the lock goes, the write lands. (Reads
    of the log itself, history and the page's recent events, queue behind the write.)"""
    import re
    import threading

    from tests.integration.harness import wait_until

    blocker = sqlite3.connect(config.root / "data" / "config.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the write lock: the service's append must wait
    answers: dict[str, Any] = {}
    writer = threading.Thread(target=lambda: answers.setdefault(
        "put", config.call("PUT", "/groups/slowdisk", {"tags": ["slow"]})))
    def waiting() -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{config.port}/metrics", timeout=10).read()
        found = re.search(rb"^getoperate_config_writes_waiting (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    try:
        writer.start()
        wait_until(lambda: waiting() == 1, "the write to wait for the disk", 10)
        for path in ("/groups", "/healthz", "/readyz", "/state", "/tokens"):
            status, _ = config.call("GET", path)
            assert status == 200, path
            assert writer.is_alive(), (f"{path} answered only after the write: it waited for it",
                                       answers)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    writer.join(30)
    assert answers["put"][0] in (200, 201), answers
    status, groups = config.call("GET", "/groups")
    assert "slowdisk" in {g["name"] for g in groups}
