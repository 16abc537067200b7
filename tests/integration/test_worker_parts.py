"""The worker's parts against a real nats-server: pulls (what goes on the wire, nothing left
behind or lost), the dispatcher (no spinning, late jobs returned), an attempt that cannot start."""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.common import bus
from services.common.log import Logger
from services.common.metrics import WorkerMetrics
from services.worker import dispatcher as dispatcher_module
from services.worker.attempt import Attempts
from services.worker.dispatcher import Dispatcher
from services.worker.pulls import NOW, SOON, TagPull
from services.worker.slots import Slot, Slots
from shared import seals, subjects
from shared.codec import encode
from shared.jobs import Job
from shared.state import ConfigState
from tests.conftest import eventually

TAG = "t-parts"


def job(job_id: str = "01a22593f8861a6aa49c992a90db7daf") -> bytes:
    return encode(Job(id=job_id, workspace="main", language="bash", code="true", tag=TAG,
                      submitted_at=time.time()))


async def consumer_info(nc: NATS) -> Any:
    return await nc.jetstream().consumer_info(subjects.JOBS_STREAM, subjects.tag_consumer(TAG))


@pytest.fixture
async def js_ready(nc: NATS) -> NATS:
    await bus.ensure_streams(nc.jetstream())
    return nc


async def test_a_pull_sends_one_request_for_one_job_and_leaves_none_waiting(
        js_ready: NATS) -> None:
    nc = js_ready
    doc = json.loads((Path(__file__).parents[2] / "docs" / "asyncapi.json").read_text())
    from tests.asyncapi_check import validator

    requests: list[bytes] = []

    async def on_request(msg: Msg) -> None:
        requests.append(msg.data)

    await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{subjects.JOBS_STREAM}.>", cb=on_request)
    pull = TagPull(nc, nc.jetstream(), TAG)
    for wait in (NOW, SOON, NOW):
        assert await pull.pull(wait) is None
        assert (await consumer_info(nc)).num_waiting == 0  # answered: no request left open
    await nc.jetstream().publish(subjects.job_subject(TAG), job())
    msg = await pull.pull(NOW)
    assert msg is not None and msg.metadata.num_delivered == 1
    await msg.ack()
    await nc.flush()
    assert len(requests) == 4
    for body in requests:
        request = json.loads(body)
        assert request["batch"] == 1 and request["expires"] in (
            int(NOW * 1e9) - 100_000, int(SOON * 1e9) - 100_000)
        validator(doc, "PullRequest").validate(request)
    await pull.close()


async def test_jobs_published_while_pulls_come_and_go_are_each_taken_once(js_ready: NATS) -> None:
    """A job the server sends just after the client stopped waiting is still taken."""
    nc = js_ready
    js = nc.jetstream()
    pull = TagPull(nc, js, TAG)
    assert await pull.pull(NOW) is None  # the consumer exists from here on
    rng = random.Random(5)
    published = 0
    done = asyncio.Event()

    async def publisher() -> None:
        nonlocal published
        while not done.is_set():
            await asyncio.sleep(rng.uniform(0, 0.004))
            await js.publish(subjects.job_subject(TAG), job(f"{published:032x}"))
            published += 1

    task = asyncio.create_task(publisher())
    seen: list[str] = []
    for _ in range(600):
        msg = await pull.pull(NOW)
        if msg is None:
            assert pull.pending == 0  # nothing stranded in the inbox
            continue
        seen.append(json.loads(msg.data)["id"])
        await msg.ack()
    done.set()
    await task
    while (msg := await pull.pull(SOON)) is not None:
        seen.append(json.loads(msg.data)["id"])
        await msg.ack()
    assert sorted(seen) == [f"{i:032x}" for i in range(published)]
    assert (await consumer_info(nc)).num_ack_pending == 0
    await pull.close()


def quiet() -> Logger:
    return Logger("test", stream=io.StringIO(), json_lines=True)


def events(logger: Logger) -> list[dict[str, Any]]:
    lines = logger.stream.getvalue().splitlines()  # type: ignore[attr-defined]
    return [json.loads(line) for line in lines]


async def test_an_idle_dispatcher_sweeps_once_and_sleeps(js_ready: NATS,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    nc = js_ready
    pulls: list[str] = []
    real_pull = TagPull.pull

    async def counting(self: TagPull, wait: float) -> Msg | None:
        pulls.append(self.tag)
        return await real_pull(self, wait)

    monkeypatch.setattr(TagPull, "pull", counting)
    ready = asyncio.Event()
    ready.set()
    d = Dispatcher(nc, Slots(1), ready, lambda *a: None, quiet())
    await d.set_tags(["x1", "x2", "x3"], {})
    d.start()
    await asyncio.sleep(1.5)
    assert sorted(pulls) == ["x1", "x2", "x3"]  # one sweep, then asleep until a wake-up
    await d.stop()


def _count_pulls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Tags whose pull has returned, in order (the dispatcher's own pulls)."""
    done: list[str] = []
    real_pull = TagPull.pull

    async def counting(self: TagPull, wait: float) -> Msg | None:
        try:
            return await real_pull(self, wait)
        finally:
            done.append(self.tag)

    monkeypatch.setattr(TagPull, "pull", counting)
    return done


async def test_a_job_arriving_late_while_no_slot_is_free_is_returned(
        js_ready: NATS, monkeypatch: pytest.MonkeyPatch) -> None:
    nc = js_ready
    js = nc.jetstream()
    monkeypatch.setattr(dispatcher_module, "STRAY_CHECK", 0.2)
    taken: list[Msg] = []

    def on_job(tag: str, msg: Msg, slot: Slot) -> None:
        taken.append(msg)
        slot.hand_to(asyncio.ensure_future(msg.ack()))

    pulled = _count_pulls(monkeypatch)
    ready = asyncio.Event()
    ready.set()
    slots = Slots(1)
    logger = quiet()
    d = Dispatcher(nc, slots, ready, on_job, logger)
    await d.set_tags([TAG], {})
    d.start()
    await eventually(lambda: pulled and not d.pulls.active[TAG].unsettled)  # first sweep done
    async with slots.hold():  # a job runs: no slot is free
        # A request whose answer did not come within SETTLE (a NATS hiccup), and comes now.
        d.pulls.active[TAG]._due_until = time.monotonic() + 30
        inbox = d.pulls.active[TAG]._sub.subject  # type: ignore[union-attr]
        await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{subjects.JOBS_STREAM}."
                         f"{subjects.tag_consumer(TAG)}", b'{"batch":1}', reply=inbox)
        await js.publish(subjects.job_subject(TAG), job())
        await eventually(lambda: any(e["event"] == "late_job_returned" for e in events(logger)))
        assert taken == []
    msg = await eventually(lambda: taken[0] if taken else None)
    assert msg.metadata.num_delivered == 2  # returned (nak), then taken with a free slot
    await d.stop()


async def test_a_job_arriving_late_for_a_tag_let_go_is_returned(
        js_ready: NATS, monkeypatch: pytest.MonkeyPatch) -> None:
    nc = js_ready
    js = nc.jetstream()
    monkeypatch.setattr(dispatcher_module, "STRAY_CHECK", 0.2)
    pulled = _count_pulls(monkeypatch)
    ready = asyncio.Event()
    ready.set()
    logger = quiet()
    d = Dispatcher(nc, Slots(1), ready, lambda *a: None, logger)
    await d.set_tags([TAG], {})
    d.start()
    # The dispatcher's first sweep pulls the tag: let that pull return and its request settle
    # first, or its end (which clears what is due) would race the answer this test stages.
    await eventually(lambda: pulled and not d.pulls.active[TAG].unsettled)
    pull = d.pulls.active[TAG]
    pull._due_until = time.monotonic() + 30  # its last answer has not come yet...
    await d.set_tags([], {})  # ...when a hot reload lets the tag go
    assert d.pulls.retired == {TAG: pull}
    inbox = pull._sub.subject  # type: ignore[union-attr]
    await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{subjects.JOBS_STREAM}."
                     f"{subjects.tag_consumer(TAG)}", b'{"batch":1}', reply=inbox)
    await js.publish(subjects.job_subject(TAG), job())
    await eventually(lambda: any(e["event"] == "late_job_returned" for e in events(logger)))
    await eventually(lambda: not d.pulls.retired)  # answered: the inbox is closed
    other = TagPull(nc, js, TAG)
    msg = await other.pull(SOON)
    assert msg is not None and msg.metadata.num_delivered == 2
    await msg.ack()
    await other.close()
    await d.stop()


class BrokenResults:
    """Reading a job's record from a router fails (not a "not found")."""

    worker_id, group = "w", None

    async def record(self, job_id: str, hold: str) -> object:
        raise RuntimeError("stream unavailable")

    async def record_or_none(self, job_id: str, hold: str) -> object:
        return await self.record(job_id, hold)


async def test_an_error_before_the_run_frees_the_slot_and_returns_the_job(
        js_ready: NATS) -> None:
    nc = js_ready
    js = nc.jetstream()
    pull = TagPull(nc, js, TAG)
    await pull.pull(NOW)
    await js.publish(subjects.job_subject(TAG), job(),  # as a router queues it: with a hold key
                     headers={subjects.HOLD_HEADER: seals.hold_key(b"k" * 32, "j")})
    first = await pull.pull(SOON)
    assert first is not None
    await first.nak()
    again = await pull.pull(SOON)
    assert again is not None and again.metadata.num_delivered == 2  # a redelivery: checked
    logger = quiet()
    attempts = Attempts(nc, None, BrokenResults(), None,  # type: ignore[arg-type]
                        WorkerMetrics(), logger, on_current=lambda: None, stopping=lambda: False,
                        config=ConfigState)
    slots = Slots(1)
    async with slots.hold() as slot:
        task = asyncio.ensure_future(attempts.run(TAG, again, slot))
        slot.hand_to(task)
    await asyncio.wait_for(task, 5)
    await asyncio.sleep(0)
    assert slots.taken == 0
    assert [e["error"] for e in events(logger) if e["event"] == "job_not_started"] == [
        "RuntimeError('stream unavailable')"]
    back = await pull.pull(4.0)  # returned (nak with a delay), not lost
    assert back is not None and back.metadata.num_delivered == 3
    await back.ack()
    await pull.close()


class ParkingResults(BrokenResults):
    """Reading a job's record keeps failing; parking works (on the real GO_DEAD)."""

    def __init__(self, js: Any) -> None:
        self.parked: list[str] = []
        self.js = js

    async def park(self, tag: str, msg: Any, *, reason: str) -> None:
        self.parked.append(reason)
        await msg.term()


async def test_a_job_that_fails_before_every_run_is_parked_not_retried_forever(
        js_ready: NATS) -> None:
    """Issue 14: an error before the run, every time (here: its history cannot be read), must
    not make the job come back forever: past GETOPERATE_MAX_DELIVER deliveries it is parked."""
    from services.common import bus

    nc = js_ready
    js = nc.jetstream()
    pull = TagPull(nc, js, TAG)
    await pull.pull(NOW)
    await js.publish(subjects.job_subject(TAG), job(),
                     headers={subjects.HOLD_HEADER: seals.hold_key(b"k" * 32, "j")})
    msg = await pull.pull(SOON)
    for _ in range(bus.MAX_DELIVER):  # earlier deliveries that failed the same way
        assert msg is not None
        await msg.nak()
        msg = await pull.pull(SOON)
    assert msg is not None and msg.metadata.num_delivered == bus.MAX_DELIVER + 1
    results = ParkingResults(js)
    attempts = Attempts(nc, None, results, None,  # type: ignore[arg-type]
                        WorkerMetrics(), quiet(), on_current=lambda: None,
                        stopping=lambda: False, config=ConfigState)
    slots = Slots(1)
    async with slots.hold() as slot:
        task = asyncio.ensure_future(attempts.run(TAG, msg, slot))
        slot.hand_to(task)
    await asyncio.wait_for(task, 5)
    assert slots.taken == 0
    assert len(results.parked) == 1
    assert f"could not be processed in {bus.MAX_DELIVER + 1} deliveries" in results.parked[0]
    assert await pull.pull(1.0) is None  # terminated: it does not come back
    await pull.close()
