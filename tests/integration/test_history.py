"""The event history as a product: events, replay, diff, verify (with tampering), snapshots."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import nats
import pytest

from services.common import bus
from services.common.natsserver import NatsServer
from shared import subjects
from services.common.signingkeys import load_verifier
from shared.snapshots import decode_snapshot, open_snapshot
from shared.state import ConfigState
from tests.integration.configproc import TOKEN, ConfigProc
from tests.integration.harness import cli, cli_env


class History:
    def __init__(self, config: ConfigProc):
        self.config = config
        self.root = config.root

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, "--config-url", f"http://127.0.0.1:{self.config.port}", cwd=self.root,
                   env={"GETOPERATE_TOKEN": TOKEN})

    def state(self, at: str | None = None) -> dict[str, Any]:
        status, body = self.config.call("GET", f"/state?at={at}" if at else "/state")
        assert status == 200, body
        return body  # type: ignore[no-any-return]


@pytest.fixture
def history(tmp_path: Path, nats_server: NatsServer) -> Iterator[History]:
    svc = ConfigProc(tmp_path, nats_server.url)
    svc.extra_env["GETOPERATE_SNAPSHOT_EVERY"] = "4"  # so a few changes cross several snapshots
    svc.start()
    yield History(svc)
    svc.stop()


def test_events_show_who_changed_what_with_filters(history: History) -> None:
    h = history
    for tags in (["a"], ["a", "b"], ["c"]):
        assert h.cli("group", "set", "gpu", "--tags", ",".join(tags), "--reason",
                     f"ticket {len(tags)}").returncode == 0
    h.cli("group", "set", "cpu", "--tags", "x")
    out = h.cli("events", "--group", "gpu").stdout.splitlines()
    assert len(out) == 4  # created + three tag changes
    assert "group gpu tags = c" in out[-1] and "admin" in out[-1] and "(reason: ticket 1)" in out[-1]
    rows = [json.loads(line) for line in h.cli("events", "--type", "group.tags_set", "--json").stdout.splitlines()]
    assert [r["event"]["group"] for r in rows] == ["default", "native", "gpu", "gpu", "gpu", "cpu"]
    assert all(r["actor"] in ("system", "admin") for r in rows)
    seqs = [r["seq"] for r in rows]
    windowed = [json.loads(x)["seq"] for x in h.cli("events", "--since", str(seqs[2]), "--until",
                                                    str(seqs[3]), "--json").stdout.splitlines()]
    assert windowed == list(range(seqs[2], seqs[3] + 1))
    assert h.cli("events", "--actor", "nobody").stdout == ""
    bad = h.cli("events", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "since" in bad.stderr


def test_replay_at_several_points_matches_the_state_then(history: History) -> None:
    h = history
    seen: list[tuple[int, str, dict[str, Any]]] = []
    for i in range(9):  # crosses two snapshots (every 4 events)
        h.config.call("PUT", "/groups/g", {"tags": [f"t{i}"], "init_script": f"echo {i % 2}"})
        state = h.state()
        _, events = h.config.call("GET", f"/events?since={state['seq']}")
        seen.append((state["seq"], events[0]["time"], state))
        time.sleep(0.002)
    for seq, when, state in seen:
        assert h.state(at=str(seq)) == state
        assert h.state(at=when) == state
    replay = json.loads(h.cli("replay", "--at", str(seen[3][0]), "--json").stdout)
    assert replay["groups"]["g"]["tags"] == ["t3"]
    human = h.cli("replay", "--at", str(seen[3][0])).stdout
    assert "group g (v" in human and "t3" in human
    diff = h.cli("diff", str(seen[1][0]), str(seen[4][0])).stdout
    assert "~ group g: tags [t1] -> [t4]" in diff
    assert "init_script" in diff


def test_restart_with_snapshots_gives_the_same_state(history: History) -> None:
    h = history
    for i in range(10):
        h.config.call("PUT", "/groups/snap", {"tags": [f"s{i}"]})
    before = h.state()
    db = sqlite3.connect(h.root / "data" / "config.sqlite")
    rows = db.execute("SELECT count(*) FROM snapshots").fetchone()[0]
    db.close()
    assert rows >= 3
    h.config.stop(signal.SIGKILL)
    h.config.start()
    assert h.state() == before

    async def latest() -> ConfigState:
        nc = await nats.connect(h.config.nats_url)
        try:
            body = await bus.get_snapshot(nc.jetstream())
            assert body is not None
            return open_snapshot(decode_snapshot(body), load_verifier(h.root / "data"))
        finally:
            await nc.close()

    snap = asyncio.run(latest())
    assert 0 < snap.seq <= before["seq"]
    assert h.state(at=str(snap.seq))["groups"] == json.loads(json.dumps(
        __import__("msgspec").to_builtins(snap)))["groups"]


def test_verify_passes_then_names_the_first_bad_sequence(history: History) -> None:
    h = history
    for i in range(3):
        h.config.call("PUT", "/groups/v", {"tags": [f"v{i}"]})
    ok = h.cli("verify")
    assert ok.returncode == 0, ok.stderr
    assert "intact: 8 events in the log, 8 on the stream" in ok.stdout
    db = sqlite3.connect(h.root / "data" / "config.sqlite")
    body = db.execute("SELECT body FROM events WHERE seq = 7").fetchone()[0]
    assert '"v1"' in body
    db.execute("UPDATE events SET body = ? WHERE seq = 7", [body.replace('"v1"', '"evil"')])
    db.commit()
    tampered = h.cli("verify")
    assert tampered.returncode == 1
    assert "verification failed at seq 7" in tampered.stderr
    db.execute("UPDATE events SET body = ? WHERE seq = 7", [body])
    db.commit()
    assert h.cli("verify").returncode == 0

    a, b = (db.execute("SELECT body FROM events WHERE seq = ?", [s]).fetchone()[0] for s in (3, 4))
    db.execute("UPDATE events SET body = ? WHERE seq = 3", [b])
    db.execute("UPDATE events SET body = ? WHERE seq = 4", [a])
    db.commit()
    reordered = h.cli("verify")
    assert reordered.returncode == 1 and "at seq 3" in reordered.stderr
    db.execute("UPDATE events SET body = ? WHERE seq = 3", [a])
    db.execute("UPDATE events SET body = ? WHERE seq = 4", [b])
    db.commit()
    db.close()

    async def delete(seq: int) -> None:
        nc = await nats.connect(h.config.nats_url)
        try:
            await nc.jetstream().delete_msg(subjects.CONFIG_STREAM, seq)
        finally:
            await nc.close()

    asyncio.run(delete(5))
    missing = h.cli("verify", "--json")
    assert missing.returncode == 1
    report = json.loads(missing.stdout)
    assert report["first_bad_seq"] == 5 and "missing from the stream" in report["problem"]


def public_key(h: History) -> str:
    """The config service's public key, as a deployment hands it to a follower."""
    return (h.root / "data" / "config-signing.pub").read_text().strip()


def test_events_follow_streams_new_events_live(history: History) -> None:
    h = history
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "events", "--follow", "--json", "--group", "live",
         "--config-url", f"http://127.0.0.1:{h.config.port}"],
        cwd=h.root, env=cli_env({"GETOPERATE_TOKEN": TOKEN, "NATS_URL": h.config.nats_url,
                                 "GETOPERATE_CONFIG_PUBLIC_KEY": public_key(h)}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Written while the command starts: printed once, by its history or by its follow
        # (they used to be lost when the history was empty). Its line says the history was read.
        out: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [out.put(line) for line in proc.stdout],  # type: ignore[union-attr]
                         daemon=True).start()
        h.config.call("PUT", "/groups/live", {"tags": ["l1"]})
        first = json.loads(out.get(timeout=60))  # a lost event fails here, not hangs
        h.config.call("PUT", "/groups/other", {"tags": ["o1"]})
        h.config.call("PUT", "/groups/live", {"tags": ["l2"]})
        h.config.call("PUT", "/groups/live", {"tags": ["l3"]})
        lines = [first] + [json.loads(out.get(timeout=60)) for _ in range(3)]
        assert [r["event"]["type"] for r in lines] == ["group.created"] + ["group.tags_set"] * 3
        assert [r["event"]["group"] for r in lines] == ["live"] * 4
        assert [r["event"]["tags"] for r in lines[1:]] == [["l1"], ["l2"], ["l3"]]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)  # waits, and closes the pipes
    assert proc.returncode == 0
