"""Read jobs from their lifecycle events on GO_JOB_EVENTS (no consumer per read), believing only
sealed events.

Only routers read job events: they hold the router key that checks each event's seal
(shared/seals.py). Everyone else asks a router: HTTP `GET /jobs/{id}`, or `go.router.job`.
An event whose seal does not match (a forgery written with worker credentials, junk) is
skipped and logged, never folded.
"""

from __future__ import annotations

import asyncio
import time
from typing import Mapping

import msgspec
from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError, ServiceUnavailableError

from services.common.log import Logger
from services.common.streamreads import client_of, read_all
from shared import seals, subjects
from shared.codec import decode
from shared.errors import InvalidInput, NotFound
from shared.jobs import TERMINAL, JobEvent, JobFinished, JobRecord, JobView, evolve_job


class Genuine:
    """Which job events to believe: those sealed with their job's hold key."""

    def __init__(self, router_key: bytes, logger: Logger) -> None:
        self.router_key = router_key
        self.logger = logger

    def event(self, subject_job: str, data: bytes, headers: Mapping[str, str] | None,
              quiet: bool = False) -> JobEvent | None:
        """The event, if it is sealed for the job its subject names and says it is about it.
        `quiet`: skip a forgery without a log line (the job board hears every message; a read
        of the job logs it)."""
        given = (headers or {}).get(subjects.SEAL_HEADER)
        if not seals.sealed(seals.hold_key(self.router_key, subject_job), data, given):
            if not quiet:
                self.logger.warning("job_event_unsealed_skipped", job_id=subject_job[:128],
                                    sealed=given is not None)
            return None
        try:
            event: JobEvent = decode(data, JobEvent)
        except InvalidInput as exc:
            self.logger.warning("job_event_skipped", job_id=subject_job, error=str(exc))
            return None
        return event if event.job_id == subject_job else None


_TRANSIENT = (asyncio.TimeoutError, nats_errors.TimeoutError, nats_errors.NoRespondersError,
              ServiceUnavailableError)
READ_RETRY = 10.0  # seconds a read keeps asking while its stream has no leader (an election)


async def _get_next(js: JetStreamContext, subject: str, seq: int) -> RawStreamMsg:
    """The job's next message from `seq` on; retried while the stream has no leader or NATS
    reconnects, as writes are (services/common/bus.py: publish)."""
    delay, deadline = 0.05, time.monotonic() + READ_RETRY
    while True:
        try:
            return await js.get_msg(subjects.JOB_EVENTS_STREAM, seq=seq, next=True,
                                    subject=subject)
        except _TRANSIENT:
            if time.monotonic() + delay > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def without_output(event: JobEvent) -> JobEvent:
    if isinstance(event, JobFinished):
        return msgspec.structs.replace(event, logs="", result=None)
    return event


FIRST_POLL = 0.02  # seconds: a waiting read looks again this soon after a message or start
LAST_POLL = 2.0  # ... and at least this often while nothing is heard
NOT_FOUND = "job {id!r} does not exist (or its history expired)"  # one message: see _read_for


def not_found(job_id: str) -> NotFound:
    """The same answer for a job that does not exist and for one the caller may not see."""
    return NotFound(NOT_FOUND.format(id=job_id), field="id")


async def read_job(
    nc: NATS, job_id: str, genuine: Genuine, *, wait: bool, timeout: float,
    history: bool = False,
) -> JobRecord:
    """The job's record from its genuine events; with `wait`, keep following until it ends or
    `timeout`; with `history`, its events too (and no logs or results anywhere).

    No JetStream consumer: the events are read one `STREAM.MSG.GET` (next by subject) at a time,
    and a waiting read listens on the job's subject with a plain subscription; each message it
    hears only says "read again". A consumer per read would let a caller with many waiting
    reads exhaust the server's consumers. Subscribers may hear a message before the stream has
    stored it (or before the subscription took, or while a cluster elects a leader), so the
    read also looks again after FIRST_POLL, then at doubling intervals up to LAST_POLL."""
    try:
        subject = subjects.job_events_subject(job_id)
    except InvalidInput as exc:
        raise not_found(job_id) from exc
    record = JobRecord(view=JobView(id=job_id), history=[] if history else None)
    js = nc.jetstream()
    sub = await nc.subscribe(subject) if wait else None
    deadline = time.monotonic() + timeout
    try:
        next_seq = await _catch_up(js, job_id, subject, genuine, record, 1)
        if record.subject_seq == 0:
            raise not_found(job_id)
        poll = FIRST_POLL
        while sub is not None and record.view.status not in TERMINAL:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                await sub.next_msg(timeout=min(remaining, poll))
                while sub.pending_msgs:  # all of them are read below, from the stream
                    await sub.next_msg(timeout=0.001)
                poll = FIRST_POLL
            except (asyncio.TimeoutError, nats_errors.TimeoutError):
                poll = min(poll * 2, LAST_POLL)
            next_seq = await _catch_up(js, job_id, subject, genuine, record, next_seq)
    finally:
        if sub is not None:
            await sub.unsubscribe()
    if record.last_seq == 0:  # nothing genuine: a forger's subject is not a job
        raise not_found(job_id)
    if history:
        record.view = msgspec.structs.replace(record.view, logs="", result=None)
    return record


async def _catch_up(js: JetStreamContext, job_id: str, subject: str, genuine: Genuine,
                    record: JobRecord, seq: int) -> int:
    """Fold the job's messages from stream sequence `seq` on into `record`; the next sequence."""
    while record.view.status not in TERMINAL:
        try:
            raw = await _get_next(js, subject, seq)
        except NotFoundError:
            break
        found = int(raw.seq or seq)
        record.subject_seq = max(record.subject_seq, found)
        event = genuine.event(job_id, raw.data or b"", raw.headers)
        if event is not None:
            record.view = evolve_job(record.view, event)
            record.last_seq = found
            if record.history is not None:
                record.history.append(without_output(event))
        seq = found + 1
    return seq


SCAN_BYTES = 64 * 1024 * 1024  # the most of the newest job events one listing reads


async def recent_jobs(
    js: JetStreamContext, genuine: Genuine, *, scan: int = 20_000, tag: str | None = None,
    group: str | None = None, workspace: str | None = None, status: str | None = None,
    limit: int = 100,
) -> list[JobView]:
    """Jobs from the newest `scan` lifecycle events, folded, filtered, newest first."""
    info = await js.stream_info(subjects.JOB_EVENTS_STREAM)
    if info.state.messages == 0:
        return []
    last = int(info.state.last_seq)
    start = max(int(info.state.first_seq), last - scan + 1)
    # Our own pulls (services/common/streamreads.py): an event's headers are its writer's, and
    # nats-py's fetch raises on one dressed as a server status, which would fail every listing.
    # The window is the newest `scan` events, and no more than SCAN_BYTES of them: a worker
    # writing 1 MB junk events made each listing read gigabytes (sizes first, headers only).
    nc = client_of(js)
    sizes = await read_all(nc, subjects.JOB_EVENTS_STREAM, subjects.JOB_EVENTS_SUBJECTS,
                           start_seq=start, until_seq=last, headers_only=True, timeout=30.0)
    total = 0
    for msg in reversed(sizes):
        total += int((msg.headers or {}).get("Nats-Msg-Size") or 0)
        if total > SCAN_BYTES:
            start = msg.metadata.sequence.stream + 1
            break
    found = await read_all(nc, subjects.JOB_EVENTS_STREAM, subjects.JOB_EVENTS_SUBJECTS,
                           start_seq=start, until_seq=last, timeout=30.0) if start <= last else []
    views: dict[str, JobView] = {}
    prefix = subjects.JOB_EVENTS_PREFIX + "."
    for msg in found:
        try:
            job_id = subjects.decode_token(msg.subject[len(prefix):])
        except InvalidInput:
            continue
        event = genuine.event(job_id, msg.data, msg.headers)
        if event is None:
            continue
        view = views.get(job_id) or JobView(id=job_id)
        views[job_id] = evolve_job(view, event)
    out = [v for v in views.values()
           if (tag is None or v.tag == tag) and (group is None or v.group == group)
           and (workspace is None or v.workspace == workspace)
           and (status is None or v.status == status)]
    out.sort(key=lambda v: v.queued_at or v.started_at or 0.0, reverse=True)
    return out[:limit]
