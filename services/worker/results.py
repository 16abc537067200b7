"""What a worker writes about a job: lifecycle events on GO_JOB_EVENTS, dead letters on GO_DEAD.

Events are stored conditionally on the job's subject (`Nats-Expected-Last-Subject-Sequence`), so
two attempts can never both record a result, and made to fit one NATS message (`fit`). Each is
sealed with the job's hold key, which only its holder has (shared/seals.py): routers believe
nothing else. What was written before is read from a router (services/worker/jobreads.py).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from services.common import bus
from services.common.log import Logger
from services.common.metrics import WorkerMetrics
from services.worker import jobreads
from shared import seals, subjects
from shared.codec import encode
from shared.jobs import MAX_MESSAGE_BYTES, DeadLetter, Job, JobFinished, JobQueued, JobRecord, JobStarted

MAX_EVENT_BYTES = MAX_MESSAGE_BYTES  # a job.finished fits one message
MAX_ERROR_CHARS = 16 * 1024
MAX_REASON_CHARS = 2048  # a NATS header: one line, kept short
MAX_RESULT_TRIES = 5  # junk written onto a job's subject makes a conditional write retry
TRUNCATED = "[... log truncated ...]\n"


def fit(event: JobStarted | JobFinished) -> JobStarted | JobFinished:
    """Make a result event fit one NATS message: keep as much of the end of the logs as fits,
    and if even no logs do not make it fit, refuse the (oversized) result."""
    if not isinstance(event, JobFinished):
        return event
    replace = msgspec.structs.replace
    if event.error and len(event.error) > MAX_ERROR_CHARS:
        event = replace(event, error=event.error[:MAX_ERROR_CHARS] + " [...]")
    size = len(encode(event))
    if size <= MAX_EVENT_BYTES:
        return event
    room = MAX_EVENT_BYTES - len(encode(replace(event, logs=TRUNCATED)))
    if room >= 0:  # JSON escapes character by character: the kept tail adds its own size
        return replace(event, logs=TRUNCATED + tail_within(event.logs, room))
    return replace(event, status="failure", result=None, logs=event.logs[-64 * 1024:],
                   error=f"the result is too large to record ({size} bytes of JSON)")


def tail_within(text: str, room: int) -> str:
    """The longest end of `text` whose JSON string encoding (quotes excluded) is at most `room`
    bytes. JSON escapes character by character, so sizes add up: whole blocks are taken from
    the end while they fit, then the cut inside the next block is found by bisection."""
    start = max(0, len(text) - room)  # every character takes at least one byte
    used, end = 0, len(text)
    while end > start:
        lo = max(start, end - _BLOCK)
        cost = len(encode(text[lo:end])) - 2
        if used + cost > room:
            break
        used, end = used + cost, lo
    else:
        return text[end:]
    a, b = lo, end  # the cut is in (lo, end]: the smallest index whose tail still fits
    while a < b:
        mid = (a + b) // 2
        if used + len(encode(text[mid:end])) - 2 <= room:
            b = mid
        else:
            a = mid + 1
    return text[a:]


_BLOCK = 4096

# NATS did not answer, or answered that JetStream cannot take writes right now: the write may
# work later (a write that was in fact stored is repeated harmlessly: same Nats-Msg-Id).
_NO_ANSWER = (TimeoutError, nats_errors.NoRespondersError, nats_errors.ConnectionClosedError,
              nats_errors.ConnectionReconnectingError, nats_errors.StaleConnectionError,
              NoStreamResponseError, ServiceUnavailableError)


def retry_reason(exc: BaseException) -> str | None:
    """Why a failed event write is worth repeating (`storage_full`: JetStream refused it for
    want of space; `no_answer`: NATS did not answer), or None when it is an answer that a
    repeat would not change (a superseded write, a refused seal)."""
    if bus.storage_full(exc):
        return "storage_full"
    if isinstance(exc, _NO_ANSWER):
        return "no_answer"
    return None


class Results:
    """Job events and dead letters, written as one worker of one group."""

    def __init__(self, nc: NATS, worker_id: str, group: str | None,
                 metrics: WorkerMetrics, logger: Logger) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.worker_id = worker_id
        self.group = group
        self.metrics = metrics
        self.logger = logger

    async def publish(self, event: JobStarted | JobFinished, hold: str, msg_id: str,
                      expect_last: int | None = None) -> Any:
        """Store a lifecycle event, sealed with the job's hold key, under a message id only a
        holder can compute (`seals.msg_id`). `expect_last` makes it
        conditional on the job's subject not having changed since that sequence, so two
        attempts can never both record a result."""
        body = encode(fit(event))
        return await bus.publish(self.js, subjects.job_events_subject(event.job_id), body,
                                 seals.msg_id(hold, msg_id),
                                 within=60.0, expect_last=expect_last,
                                 headers={subjects.SEAL_HEADER: seals.seal(hold, body)})

    async def started(self, job: Job, hold: str, attempt: int, expect_last: int | None,
                      at: float | None = None) -> Any:
        """`at`: when the run began (a deferred job.started is written later than that)."""
        return await self.publish(
            JobStarted(job_id=job.id, time=time.time() if at is None else at,
                       worker=self.worker_id, group=self.group,
                       attempt=attempt), hold, f"{job.id}:{attempt}:started",
            expect_last=expect_last)

    async def finished(self, job: Job, hold: str, event: JobFinished, after: int) -> None:
        """Store the result only if nothing genuine but a (late) job.queued was written to the
        job since our job.started: another attempt's start or result, or a cancel, supersedes
        ours. Unsealed junk on the subject (a forger's) does not: we write after it."""
        msg_id = f"{job.id}:{event.attempt}:finished"
        for _ in range(MAX_RESULT_TRIES):
            try:
                await self.publish(event, hold, msg_id, expect_last=after)
                return
            except APIError as exc:
                if exc.err_code != bus.WRONG_LAST_SEQUENCE:
                    raise
                record = await self.record_or_none(job.id, hold)
                if record is None:  # its history was dropped for room: write on the empty subject
                    after = 0
                    continue
                last = record.history[-1] if record.history else None
                if record.last_seq > after and not isinstance(last, JobQueued):
                    raise
                after = record.subject_seq
        raise APIError(code=409, err_code=bus.WRONG_LAST_SEQUENCE,
                       description=f"the subject of job {job.id} kept changing")

    async def record(self, job_id: str, hold: str) -> JobRecord:
        """The job's record (a router's reading of its genuine events, no logs or results)."""
        return await jobreads.held(self.nc, job_id, hold)

    async def record_or_none(self, job_id: str, hold: str) -> JobRecord | None:
        """The job's record; None when it has no history left: GO_JOB_EVENTS, full, dropped its
        oldest events (docs/production.md, "When the disk fills") while the job waited or ran.
        The job still runs and its result is still stored, on the subject emptied."""
        try:
            return await self.record(job_id, hold)
        except jobreads.JobReadRefused as exc:
            if getattr(exc, "code", None) != "not_found":
                raise
            self.logger.warning("job_history_gone", job_id=job_id)
            return None

    async def refuse(self, tag: str, job: Job, hold: str, msg: Msg, deliveries: int, *,
                     reason: str) -> None:
        """Dead-letter a job this worker must not run, as it came, with `reason`. Its end is
        recorded only when the router queued it as it is (its genuine history is just that
        job.queued, same workspace and tag: a restriction closed since): a forged job may
        carry another job's id, whose history must not change."""
        await self.dead_letter(tag, job, msg, deliveries, reason=reason)
        try:
            record = await self.record(job.id, hold)
            history = record.history or []
            routed = len(history) == 1 and isinstance(history[0], JobQueued) and (
                history[0].workspace, history[0].tag) == (job.workspace, job.tag)
            if routed:
                await self.publish(JobFinished(
                    job_id=job.id, time=time.time(), status="failure", worker=self.worker_id,
                    group=self.group, attempt=deliveries, dead_letter=True,
                    error=f"refused: {reason}; parked on {subjects.DEAD_STREAM}"),
                    hold, f"{job.id}:refused:finished", expect_last=record.subject_seq)
        except Exception as exc:  # parked already; only its history stays "queued"
            self.logger.warning("job_refusal_not_recorded", job_id=job.id, error=repr(exc))

    async def park(self, tag: str, msg: Msg, *, reason: str) -> None:
        """Park a message this worker cannot process as it came (it may not even be a Job) on
        GO_DEAD, with the reason in a header, and terminate it: it never comes back to jam
        the queue. Raises (and leaves the message) when GO_DEAD cannot take it."""
        seq = msg.metadata.sequence.stream
        reason = " ".join(reason.split())  # a header value is one line
        await self.js.publish(subjects.dead_subject(tag), msg.data or b"", headers={
            "Nats-Msg-Id": f"{tag}:{seq}", subjects.DEAD_REASON_HEADER: reason[:MAX_REASON_CHARS]})
        await msg.term()
        self.metrics.dead_letters.labels(tag).inc()
        self.logger.error("job_parked", tag=tag, stream_seq=seq, reason=reason[:512])

    async def dead_letter(self, tag: str, job: Job, msg: Msg, deliveries: int,
                          reason: str | None = None, hold: str | None = None) -> None:
        """Park the job on GO_DEAD with its history, record its end, terminate its message. If
        reading the history or recording the end fails, the message is not terminated: it comes
        back and this is tried again. A job refused for its own fields (`reason`: its id cannot
        name a subject or a message id, it has no hold key) is parked as it came and terminated
        at once."""
        if reason is None:  # a router's reading: no logs or results, one message
            assert hold is not None
            history = list((await self.record(job.id, hold)).history or [])
            msg_id = job.id
        else:
            history, msg_id = [], f"{tag}:{msg.metadata.sequence.stream}"
        dead = DeadLetter(job=job, deliveries=deliveries, time=time.time(), history=history,
                          reason=reason)
        try:
            await self.js.publish(subjects.dead_subject(tag), encode(dead),
                                  headers={"Nats-Msg-Id": msg_id})
        except Exception as exc:  # still end the job below: never retry it forever
            self.logger.error("dead_letter_not_parked", job_id=job.id, error=repr(exc))
        if reason is None:
            assert hold is not None
            await self.publish(JobFinished(
                job_id=job.id, time=time.time(), status="failure", worker=self.worker_id,
                group=self.group, attempt=deliveries, dead_letter=True,
                error=f"dead-lettered after {deliveries - 1} deliveries that never finished"
                      f" (the job kept losing its worker); parked on {subjects.DEAD_STREAM}"),
                hold, f"{job.id}:{deliveries}:finished")
        await msg.term()
        self.metrics.dead_letters.labels(tag).inc()
        if reason is None:
            self.logger.error("job_dead_lettered", job_id=job.id, tag=tag,
                              deliveries=deliveries - 1)
        else:
            self.logger.error("job_dead_lettered", job_id=job.id, tag=tag, reason=reason)
