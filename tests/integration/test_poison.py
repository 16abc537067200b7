"""Nothing jams a queue (issue 14, point 3): whatever lands on a tag's queue, every worker keeps
taking valid jobs, and every message it cannot process is parked on GO_DEAD with a reason.

Messages are put on the queue with admin credentials and, where they should reach the deeper
checks, with a genuine hold key (the test reads the routers' key from the data dir), as a
router holding a bug, or an attacker holding router credentials and key, would."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import nats

from shared import seals, subjects
from shared.codec import decode
from shared.jobs import DeadLetter
from tests.conftest import eventually
from tests.integration.conftest import Suite
from tests.integration.harness import ready

TAG = "t-poison"


def _job(**fields: Any) -> dict[str, Any]:
    base = {"v": 1, "id": f"p{uuid.uuid4().hex}", "workspace": "main", "language": "bash",
            "code": "echo fine", "args": {}, "tag": TAG, "submitted_at": time.time()}
    return {**base, **fields}


POISON: list[tuple[str, Any]] = [
    ("not json", b"\xff\xfe not json"),
    ("json, not a job", b'{"hello": "world"}'),
    ("a list", b"[1, 2, 3]"),
    ("empty id", _job(id="")),
    ("id with a space", _job(id="a b")),
    ("id of 10,000 characters", _job(id="x" * 10_000)),
    ("bad workspace", _job(workspace="no such/workspace!")),
    ("another tag", _job(tag="bash")),
    ("negative timeout", _job(timeout=-5)),
    ("infinite timeout", _job(timeout=1e309)),
    ("a flow without steps", _job(kind="flow", language="flow", code="")),
    ("unknown language", _job(language="cobol")),
    ("args not an object", _job(args=[1, 2])),
    ("submitted_at a string", _job(submitted_at="yesterday")),
]


async def _flood(s: Suite, key: bytes) -> tuple[list[str], dict[str, str]]:
    """The poison, each followed by a valid job; the valid ids and {poison id: what it is}."""
    nc = await nats.connect(s.nats_url)
    valid: list[str] = []
    poison: dict[str, str] = {}
    try:
        js = nc.jetstream()
        for what, body in POISON:
            if isinstance(body, dict):
                raw = json.dumps(body, allow_nan=True).encode()
                job_id = str(body["id"])
            else:
                raw, job_id = body, ""
            headers = {"Nats-Msg-Id": uuid.uuid4().hex}
            if job_id:
                headers[subjects.HOLD_HEADER] = seals.hold_key(key, job_id)
            ack = await js.publish(subjects.job_subject(TAG), raw, headers=headers)
            poison[f"{TAG}:{ack.seq}"] = what
            good = _job()
            await js.publish(subjects.job_subject(TAG), json.dumps(good).encode(),
                             headers={"Nats-Msg-Id": good["id"],
                                      subjects.HOLD_HEADER: seals.hold_key(key, good["id"])})
            valid.append(good["id"])
    finally:
        await nc.close()
    return valid, poison


async def _parked(s: Suite) -> list[tuple[dict[str, str], bytes]]:
    nc = await nats.connect(s.nats_url)
    found: list[tuple[dict[str, str], bytes]] = []
    try:
        sub = await nc.jetstream().subscribe(subjects.dead_subject(TAG),
                                             stream=subjects.DEAD_STREAM, ordered_consumer=True)
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except Exception:
                break
            found.append((dict(msg.headers or {}), msg.data))
        await sub.unsubscribe()
    finally:
        await nc.close()
    return found


async def test_poison_on_a_queue_is_parked_and_valid_jobs_still_run(extra_workers: Suite) -> None:
    s = extra_workers
    s.api.set_group("poison", tags=[TAG])
    worker = s.worker("poison", WORKER_GROUP="poison")
    s.api.wait_workers(ready("poison"))
    key = (s.root / ".getoperate" / "router.key").read_text().strip().encode()
    valid, poison = await _flood(s, key)

    def ran() -> list[dict[str, Any]] | None:
        from cli.client import CliError

        try:  # no job.queued (not routed): a job exists once its worker wrote of it
            views = [s.api.call("GET", "router", f"/jobs/{j}") for j in valid]
        except CliError:
            return None
        return views if all(v["status"] == "success" for v in views) else None

    views = await eventually(ran, timeout=60, interval=0.5)
    assert [v["result"] for v in views] == ["fine"] * len(valid)

    async def all_parked() -> list[tuple[dict[str, str], bytes]] | None:
        found = await _parked(s)
        return found if len(found) >= len(POISON) - 1 else None  # cobol: ends as a failed job

    parked = await eventually(all_parked, timeout=60, interval=1.0)
    reasons = []
    for headers, data in parked:
        reason = headers.get(subjects.DEAD_REASON_HEADER)
        if reason is None:
            reason = decode(data, DeadLetter).reason
        reasons.append(reason)
    assert all(reasons), reasons
    assert worker.p.poll() is None
    status = next(w for w in s.api.workers() if w["group"] == "poison")
    assert status["state"] == "ready" and status["current_job"] is None
