"""Fold rate of the config log, and cold-start time of the config service and the router with a
long log (1,000,000 events; 100,000 with --quick)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats

from bench.suite import ROOT, progress
from services.common import bus
from services.common.natsserver import NatsServer, free_port
from services.common.signingkeys import load_signer
from services.config.store import EventLog
from shared import subjects
from shared.codec import decode, encode
from shared.events import (
    GENESIS_HASH, GroupCreated, GroupInitScriptSet, GroupTagsSet, Recorded, ScriptDeployed, seal,
    subject_for,
)
from shared.signing import SIGNATURE_HEADER, SUBJECT_PREV_HEADER, Signer
from shared.state import fold

TOKEN = "bench-token"


def make_log(n: int) -> list[Recorded]:
    """A realistic mix: tag changes on 50 groups, init scripts, script deploys over 1,000 paths."""
    prev, out = GENESIS_HASH, []
    time_ = "2026-11-29T00:00:00.000000Z"
    for seq in range(1, n + 1):
        k = seq % 10
        if seq <= 50:
            event: Any = GroupCreated(group=f"g{seq}")
        elif k < 6:
            event = GroupTagsSet(group=f"g{seq % 50 + 1}", tags=(f"t{seq % 13}", "bash", "python3"))
        elif k < 7:
            event = GroupInitScriptSet(group=f"g{seq % 50 + 1}", init_script=f"echo {seq}\n")
        else:
            event = ScriptDeployed(workspace=f"ws{seq % 5}", path=f"f/script{seq % 1000}",
                                   language="python3", content=f"def main():\n    return {seq}\n")
        rec = seal(prev_hash=prev, seq=seq, id=f"{seq:032x}", time=time_, actor="bench",
                   reason=None, event=event)
        out.append(rec)
        prev = rec.hash
    return out


def _wait_healthz(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> float:
    started = time.perf_counter()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return time.perf_counter() - started
        except OSError:
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"{url} not up within {timeout}s") from None
            time.sleep(0.01)


def _start(service: str, env: dict[str, str], port: int, log: Path) -> tuple[float, subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", service], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    return _wait_healthz(f"http://127.0.0.1:{port}/healthz", proc), proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


async def _publish(url: str, records: list[Recorded], signer: Signer) -> None:
    """The stream as the config service's outbox leaves it: each event on its subject, signed
    with the data dir's key over its sequence, subject and previous sequence on the subject."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await bus.ensure_streams(js)
    last_on: dict[str, int] = {}
    for i, rec in enumerate(records):
        subject, body = subject_for(rec.event), encode(rec)
        prev = last_on.get(subject, 0)
        last_on[subject] = rec.seq
        await js.publish_async(subject, body, wait_stall=30, headers={
            SIGNATURE_HEADER: signer.sign_event(rec.seq, subject, prev, body),
            SUBJECT_PREV_HEADER: str(prev)})
        if i % 100_000 == 99_999:
            await js.publish_async_completed()
            progress(f"history: {i + 1} events on the stream")
    await js.publish_async_completed()
    await nc.close()


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 100_000 if quick else 1_000_000
    progress(f"history: sealing {n} events")
    records = make_log(n)
    started = time.perf_counter()
    state = fold(records)
    fold_rate = n / (time.perf_counter() - started)
    bodies = [encode(r) for r in records]
    started = time.perf_counter()
    decoded = [decode(b, Recorded) for b in bodies]
    decode_rate = n / (time.perf_counter() - started)
    assert fold(decoded) == state
    rows: list[dict[str, Any]] = [{
        "name": f"fold of the config log ({n} events in memory)",
        "value": round(fold_rate), "unit": "events/s", "baseline": round(decode_rate),
        "baseline_name": "msgspec decode of the same events", "ratio": round(fold_rate / decode_rate, 2),
        "target": ">= 200k events/s", "met": fold_rate >= 200_000,
        "bound": "CPU: one dict update per event",
    }]
    work = Path(tempfile.mkdtemp(prefix="getoperate-bench-history-"))
    with NatsServer(work / "nats", sync_always=False) as server:  # filling the stream, not durability
        log = EventLog(work / "data" / "config.sqlite")
        for i in range(0, n, 50_000):
            log.insert([(b, subject_for(r.event)) for b, r in
                        zip(bodies[i:i + 50_000], records[i:i + 50_000])], published=True)
        log.close()
        progress(f"history: {n} events in SQLite; publishing them to the stream, signed")
        asyncio.run(_publish(server.url, records, load_signer(work / "data")))
        del records, decoded, bodies
        cport = free_port()
        rport = free_port()
        while rport == cport:  # free_port closes its socket: two calls can agree
            rport = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NATS_URL": server.url,
               "GETOPERATE_DATA_DIR": str(work / "data"), "GETOPERATE_ADMIN_TOKEN": TOKEN,
               "CONFIG_PORT": str(cport), "ROUTER_PORT": str(rport)}
        first, proc = _start("config", env, cport, work / "config.log")
        _stop(proc)
        progress(f"history: config service first start (no snapshot) {first:.2f}s")
        cold, proc = _start("config", env, cport, work / "config.log")
        progress(f"history: config service cold start with snapshot {cold:.2f}s")
        router, rproc = _start("router", env, rport, work / "router.log")
        progress(f"history: router cold start {router:.2f}s")
        _stop(rproc)
        _stop(proc)
        asyncio.run(_drop_snapshot(server.url))  # the next router replays the whole stream
        replay, rproc = _start("router", env, rport, work / "router-replay.log")
        progress(f"history: router cold start without a snapshot {replay:.2f}s")
        _stop(rproc)
    shutil.rmtree(work, ignore_errors=True)  # 1.4 GB for a million events; kept after a failure
    rows.append({
        "name": f"config service cold start, {n} events in the log (to /healthz)",
        "value": round(cold, 2), "unit": "s", "baseline": round(first, 2),
        "baseline_name": "first start, folding the whole log (no snapshot yet)",
        "ratio": round(first / cold, 1), "target": "< 5 s", "met": cold < 5,
        "bound": "process start + snapshot decode + tail fold",
    })
    rows.append({
        "name": f"router cold start, {n} events on the stream (to /healthz)",
        "value": round(router, 2), "unit": "s", "baseline": round(first, 2),
        "baseline_name": "config first start without snapshot", "ratio": round(first / router, 1),
        "target": "< 5 s", "met": router < 5,
        "bound": "process start + snapshot from the object store",
    })
    rows.append({
        "name": f"router cold start without a snapshot, replaying {n} events (to /healthz)",
        "value": round(replay, 2), "unit": "s", "baseline": round(router, 2),
        "baseline_name": "the same router start from the snapshot, same run",
        "ratio": round(replay / router, 1), "target": "< 5 s", "met": replay < 5,
        "bound": "every event read from the stream, its signature checked and folded",
    })
    return rows


async def _drop_snapshot(url: str) -> None:
    nc = await nats.connect(url)
    try:
        store = await nc.jetstream().object_store(subjects.SNAPSHOT_BUCKET)
        await store.delete(subjects.SNAPSHOT_NAME)
    finally:
        await nc.close()
