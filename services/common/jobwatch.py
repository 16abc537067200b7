"""Read a job's lifecycle events from JetStream, optionally waiting until it ends (router, worker)."""

from __future__ import annotations

import asyncio
import time

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
