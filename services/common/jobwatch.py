"""Read a job's lifecycle events from JetStream, optionally waiting until it ends (router, worker)."""

from __future__ import annotations

import asyncio
import time

from nats import errors as nats_errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from services.common import bus
from services.common.log import Logger
from shared import subjects
from shared.codec import decode
from shared.errors import InvalidInput, NotFound
from shared.jobs import TERMINAL, JobEvent, JobView, evolve_job


async def read_job(
    js: JetStreamContext, job_id: str, *, wait: bool, timeout: float, logger: Logger
) -> JobView:
    """The job's view from its events; with `wait`, keep following until it ends or `timeout`."""
    try:
        subject = subjects.job_events_subject(job_id)
    except InvalidInput as exc:
        raise NotFound(f"job {job_id!r} does not exist", field="id") from exc
    last = await bus.last_sequence(js, subjects.JOB_EVENTS_STREAM, subject)
    if last == 0:
        raise NotFound(f"job {job_id!r} does not exist (or its history expired)", field="id")
    view = JobView(id=job_id)
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await queue.put(msg)

    psub = await js.subscribe(
        subject, stream=subjects.JOB_EVENTS_STREAM, cb=on_msg, ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.ALL,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                msg = await asyncio.wait_for(queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            try:
                view = evolve_job(view, decode(msg.data, JobEvent))
            except InvalidInput as exc:
                logger.warning("job_event_skipped", job_id=job_id, error=str(exc))
            if view.status in TERMINAL:
                break
            if not wait and msg.metadata.sequence.stream >= last:
                break
    finally:
        await psub.unsubscribe()
    return view


async def recent_jobs(
    js: JetStreamContext, *, scan: int = 20_000, tag: str | None = None, group: str | None = None,
    workspace: str | None = None, status: str | None = None, limit: int = 100,
) -> list[JobView]:
    """Jobs from the newest `scan` lifecycle events, folded, filtered, newest first."""
    info = await js.stream_info(subjects.JOB_EVENTS_STREAM)
    if info.state.messages == 0:
        return []
    start = max(int(info.state.first_seq), int(info.state.last_seq) - scan + 1)
    sub = await js.pull_subscribe(
        subjects.JOB_EVENTS_SUBJECTS, durable=None, stream=subjects.JOB_EVENTS_STREAM,
        config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, max_ack_pending=-1,
                                  deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                  opt_start_seq=start, inactive_threshold=30.0),
    )
    views: dict[str, JobView] = {}
    try:
        done = False
        while not done:
            try:
                batch = await sub.fetch(1000, timeout=1.0)
            except (asyncio.TimeoutError, nats_errors.TimeoutError):
                break
            for msg in batch:
                try:
                    event = decode(msg.data, JobEvent)
                except InvalidInput:
                    continue
                view = views.get(event.job_id) or JobView(id=event.job_id)
                views[event.job_id] = evolve_job(view, event)
                done = msg.metadata.sequence.stream >= info.state.last_seq
    finally:
        await sub.unsubscribe()
    out = [v for v in views.values()
           if (tag is None or v.tag == tag) and (group is None or v.group == group)
           and (workspace is None or v.workspace == workspace)
           and (status is None or v.status == status)]
    out.sort(key=lambda v: v.queued_at or v.started_at or 0.0, reverse=True)
    return out[:limit]


async def job_history(js: JetStreamContext, job_id: str) -> list[JobEvent]:
    """Every lifecycle event of one job, in order (for dead letters and audits)."""
    subject = subjects.job_events_subject(job_id)
    last = await bus.last_sequence(js, subjects.JOB_EVENTS_STREAM, subject)
    if last == 0:
        return []
    sub = await js.pull_subscribe(
        subject, durable=None, stream=subjects.JOB_EVENTS_STREAM,
        config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL,
                                  inactive_threshold=30.0),
    )
    events: list[JobEvent] = []
    try:
        while True:
            for msg in await sub.fetch(100, timeout=5.0):
                try:
                    events.append(decode(msg.data, JobEvent))
                except InvalidInput:
                    pass
                if msg.metadata.sequence.stream >= last:
                    return events
    finally:
        await sub.unsubscribe()
