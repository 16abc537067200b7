"""One delivery of a job: the checks between the pull and the run, the run, its events, the ack.

Before the run: a message that is not a Job is parked on GO_DEAD as it came, with its reason; a
Job that can never run (its id cannot name its events, its timeout is not a positive number, a
flow without steps, it carries no hold key: no router queued it) or must not run here (another tag's, or its tag closed to its workspace:
`admission_problem`) is dead-lettered at once; a redelivery whose result is already stored
is acked; one delivered more than MAX_DELIVER times is dead-lettered. Anything else that fails
there returns the message (nak) to be tried again, so a delivery never hangs; once it has failed
more than MAX_DELIVER times (naks count as deliveries) it is parked as it came, with the error,
so nothing comes back forever. The run: job.started, the job (or its flow)
with in-progress acks and cancellation, job.finished, and the ack only once that is durable.
The task this runs in owns the job's slot (services/worker/slots.py).

A delivery is held on a lease (`Lease`): JetStream hands the job to another worker once
ack_wait passes without an in-progress ack, so when no ack has been confirmed for a little less
(`lease_for`) the run is killed and nothing is recorded for it (`job_lease_lost`):
the redelivered copy runs alone and records the result. An event that cannot be stored because
JetStream refuses it for storage or NATS does not answer is written again with backoff
(`job_result_retry`) while the lease holds the delivery, so a job whose result could not be
stored is neither run again nor left "running" (docs/production.md, When two copies of a job can
overlap).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Awaitable, Callable, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import APIError

from services.common import bus
from services.common.log import Logger
from services.common.metrics import WorkerMetrics
from services.worker.cancels import CancelWatch
from services.worker.executor import Executor
from services.worker.flows import run_flow
from services.worker.results import Results, retry_reason
from services.worker.runner import Outcome
from services.worker.slots import Slot
from shared import subjects, tagaccess
from shared.codec import decode
from shared.errors import InvalidInput
from shared.jobs import Job, JobFinished, StepSummary
from shared.state import ConfigState
from shared.tags import validate_workspace

RETRY_DELAY = 2.0  # seconds before a delivery that could not start is offered again
MAX_ID_CHARS = 256
# What is kept in hand of ack_wait (`lease_for`): the kill, a late event loop, the time a delivery
# took to reach us, and a nats-server restarted from its store, which keeps delivery times in
# whole seconds and so may redeliver up to 1 s before ack_wait has passed (measured: 2.1 s after
# the last in-progress ack with ack_wait 3).
LEASE_MARGIN = 0.2  # of ack_wait
LEASE_SLACK = 1.25  # seconds, at least
RESULT_RETRY_FIRST = 0.5  # seconds before an event that could not be stored is written again
RESULT_RETRY_MAX = 5.0  # the backoff doubles up to this
# A first attempt writes job.started only once the job has run this long (WORKER_STARTED_AFTER):
# most jobs end sooner and then store one event, not two (issue 17). Shown as "running" after it.
STARTED_AFTER = 0.25
T = TypeVar("T")
# Counts while the machine sleeps, as JetStream's clock does on the NATS host (CLOCK_MONOTONIC
# stops: a worker's laptop waking up would believe it still held a job given away meanwhile).
_LEASE_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def lease_clock() -> float:
    return time.clock_gettime(_LEASE_CLOCK)


def lease_for(ack_wait: float) -> float:
    """Seconds a delivery stays ours after a confirmed in-progress ack was sent: 24 of the
    default 30, 1.75 of 3. Below about 2 s of ack_wait no lease covers a NATS restart."""
    return max(ack_wait - max(ack_wait * LEASE_MARGIN, LEASE_SLACK), ack_wait / 4)


class LeaseLost(Exception):
    """Raised when a delivery's lease ran out: JetStream may have handed the job to another
    worker, so this one records nothing more for it."""


class Lease:
    """This worker's hold on one delivery of a job, kept by in-progress acks JetStream confirms.

    Each ack is a request: JetStream answers it once processed, so an ack lost on the way (the
    connection down, a partition the client has not noticed yet) never counts. A confirmed ack
    renews the lease from when it was sent (JetStream restarted its ack_wait later than that),
    unless the answer came after the lease had run out (JetStream also answers an ack of a
    delivery it already gave away). When the lease runs out, `runs` are cancelled (their
    processes killed, like a cancel request's) and `lost` is set.
    """

    def __init__(self, msg: Msg, job_id: str, logger: Logger, since: float) -> None:
        self.msg = msg
        self.job_id = job_id
        self.logger = logger
        self.ack_wait = bus.JOB_ACK_WAIT
        self.length = lease_for(self.ack_wait)
        self.renewed = since  # when the delivery was taken: JetStream's ack_wait started earlier
        self.phase = "running"
        self.lost = asyncio.Event()
        self.runs: set[asyncio.Future[Any]] = set()

    @property
    def expires(self) -> float:
        return self.renewed + self.length

    async def keep(self) -> None:
        """Ack every ack_wait/3 (at most half the lease; a third of that after a failure) from
        when the delivery was taken, until cancelled, or until the lease runs out."""
        interval = min(self.ack_wait / 3, self.length / 2)
        retry = interval / 3
        # The lease counts from when the delivery was taken, so the first in-progress ack can
        # wait an interval: most jobs end before it, and save a request each (issue 17).
        due = self.renewed + interval
        while True:
            now = lease_clock()
            if now >= self.expires:
                self._lose(now)
                return
            if now < due:
                await asyncio.sleep(min(due, self.expires) - now)
                continue
            try:
                # msg.in_progress() is a plain publish: it "succeeds" while disconnected.
                await self.msg._client.request(self.msg.reply or "", b"+WPI",
                                               timeout=min(interval, self.expires - now))
            except Exception as exc:
                self.logger.warning("in_progress_failed", job_id=self.job_id,
                                    error=str(exc) or type(exc).__name__)
                due = lease_clock() + retry
                continue
            if lease_clock() < self.expires:
                self.renewed = now
            due = now + interval

    def _lose(self, now: float) -> None:
        self.lost.set()
        self.logger.error("job_lease_lost", job_id=self.job_id, phase=self.phase,
                          unconfirmed_s=round(now - self.renewed, 3), lease_s=self.length,
                          ack_wait=self.ack_wait,
                          effect="its processes are killed and its outcome is not recorded"
                                 " here; JetStream redelivers it")
        for run in self.runs:
            run.cancel()

    async def unless_lost(self, aw: Awaitable[T]) -> T:
        """`aw`'s result, or LeaseLost (and `aw` cancelled) if the lease runs out first."""
        task = asyncio.ensure_future(aw)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not task.done():
                task.cancel()
        if task in done:  # it ended first (or with the lease): its result or error stands
            return task.result()
        raise LeaseLost(self.job_id)


def job_problem(job: Job) -> str | None:
    """Why a decoded job can never run: its id names its event subject, its events' message ids
    (a NATS header) and its cancel key. None when it can run."""
    if not job.id:
        return "its id is empty"
    if len(job.id) > MAX_ID_CHARS or not job.id.isprintable() or " " in job.id:  # any space
        return (f"its id {job.id[:64]!r} is not a job id (at most {MAX_ID_CHARS} printable"
                " characters, no spaces)")
    if job.timeout is not None and not 0 < job.timeout < math.inf:
        return f"its timeout {job.timeout!r} is not a positive number of seconds"
    if job.kind == "flow" and not job.steps:
        return "it is a flow with no steps"
    return None


def admission_problem(tag: str, job: Job, config: ConfigState) -> str | None:
    """Why a worker that took `job` from the queue of `tag` must not run it, or None.

    The router checked the same before queueing; this is the defence in depth for a job that
    reached the queue another way (router credentials publishing on `go.jobs.q.<tag>`), or that
    a restriction closed since it was queued. It is the router's rule (shared/tagaccess.py), on
    the worker's view of the config: its group (dedicated tags) and the assignable tags.
    """
    if job.tag != tag:
        return f"it names tag {job.tag!r} but was taken from the queue of tag {tag!r}"
    try:
        validate_workspace(job.workspace)
    except InvalidInput as exc:
        return f"its workspace is not valid: {exc.message}"
    reason = tagaccess.closed_reason(config, tag, job.workspace)
    return None if reason is None else f"{reason} (checked by the worker on receipt)"


class Attempts:
    """Runs the deliveries the dispatcher hands over; counts what it finished."""

    def __init__(self, nc: NATS, executor: Executor, results: Results, cancels: CancelWatch,
                 metrics: WorkerMetrics, logger: Logger, on_current: Callable[[], None],
                 stopping: Callable[[], bool], config: Callable[[], ConfigState],
                 started_after: float = STARTED_AFTER) -> None:
        self.nc = nc
        self.executor = executor
        self.results = results
        self.cancels = cancels
        self.metrics = metrics
        self.logger = logger
        self.on_current = on_current  # the set of current jobs changed (heartbeat)
        self.stopping = stopping  # the worker is stopping: a cancelled run is not a job cancel
        self.config = config  # the folded config the worker checks each job against
        self.current: set[str] = set()
        self.jobs_done = 0
        self.started_after = started_after

    async def run(self, tag: str, msg: Msg, slot: Slot) -> None:
        """One delivery, from the pulled message to its ack (or nak, or term)."""
        taken = lease_clock()
        try:
            admitted = await self._admit(tag, msg, slot)
        except Exception as exc:
            attempt = msg.metadata.num_delivered or 1
            self.logger.exception("job_not_started", exc, tag=tag, attempt=attempt)
            if attempt > bus.MAX_DELIVER:  # it failed every time: park it, never loop on it
                try:
                    await self.results.park(tag, msg, reason=(
                        f"it could not be processed in {attempt} deliveries: {exc!r}"))
                    return
                except Exception as park_exc:  # GO_DEAD unavailable too: try again later
                    self.logger.error("job_not_parked", tag=tag, error=repr(park_exc))
            await _quietly(msg.nak(delay=RETRY_DELAY))
            return
        if admitted is not None:
            lease = Lease(msg, admitted[0].id, self.logger, taken)
            await self._attempt(tag, *admitted, msg, slot, lease)

    async def _admit(self, tag: str, msg: Msg, slot: Slot) -> tuple[Job, str, int, int] | None:
        """(job, hold key, attempt, last sequence on its subject) to run, or None when the
        delivery ends here."""
        try:
            job = decode(msg.data, Job)
        except InvalidInput as exc:
            await self.results.park(tag, msg, reason=f"it is not a job: {exc.message}")
            return None
        attempt = msg.metadata.num_delivered or 1
        problem = job_problem(job)
        if problem is not None:
            await self.results.dead_letter(tag, job, msg, attempt, reason=problem)
            return None
        hold = (msg.headers or {}).get(subjects.HOLD_HEADER)
        refused = admission_problem(tag, job, self.config())
        if refused is not None and hold:
            await self.results.refuse(tag, job, hold, msg, attempt, reason=refused)
            return None
        if refused is None and not hold:
            refused = (f"it carries no {subjects.HOLD_HEADER} header: no router queued it"
                       " (shared/seals.py)")
        if refused is not None or not hold:  # without a hold key, no history to record in
            await self.results.dead_letter(tag, job, msg, attempt, reason=refused)
            return None
        if attempt == 1 and self.cancels.asked(job.id):
            # Cancelled while it waited: a router recorded that (it saw it queued, and nobody
            # can have started it before this first delivery). Drop it now, and its mark.
            await msg.ack()
            await _unmark_cancelled(msg, tag, job.id)
            self.logger.info("job_cancelled_before_start_dropped", job_id=job.id, tag=tag)
            return None
        if job.kind == "flow":  # orchestration waits on other jobs: it must not hold a slot
            slot.release()
        last_seq = 0
        if attempt > 1:
            self.metrics.redeliveries.labels(tag).inc()
            # A redelivery: its earlier worker died, or NATS restarted under a running job. If a
            # result is already stored, don't run it again (effectively once).
            try:
                record = await self.results.record_or_none(job.id, hold)
                last_seq = record.subject_seq if record else 0
                last = record.history[-1] if record and record.history else None
            except Exception:
                if attempt <= bus.MAX_DELIVER:
                    raise
                last_seq, last = 0, None  # out of deliveries: it is parked below regardless
            if isinstance(last, JobFinished):
                self.logger.info("job_result_already_stored", job_id=job.id, attempt=attempt)
                await msg.ack()
                if last.status == "cancelled" and last.worker == "router":
                    await _unmark_cancelled(msg, tag, job.id)
                return None
        if attempt > bus.MAX_DELIVER:
            await self.results.dead_letter(tag, job, msg, attempt, hold=hold)
            return None
        return job, hold, attempt, last_seq

    async def _attempt(self, tag: str, job: Job, hold: str, attempt: int, last_seq: int,
                       msg: Msg, slot: Slot, lease: Lease) -> None:
        self.current.add(job.id)
        self.on_current()
        keepalive = asyncio.create_task(lease.keep())
        # On a first attempt the started event is stored while the job runs (awaited before the
        # result, so the history stays in order), and only once the job has run STARTED_AFTER:
        # a job that ends sooner records job.finished alone, conditional on its job.queued
        # (the router put that event's sequence on the job). A redelivered job already lost a
        # worker once: its start is recorded before it runs.
        queued_seq = _queued_seq(msg) if attempt == 1 else None
        begun = time.time()
        started = Start(lambda: self._stored(lease, "job.started", lambda: (
            self.results.started(job, hold, attempt, last_seq or None, at=begun))),
            after=self.started_after if queued_seq is not None else 0.0)
        try:
            if attempt > 1:
                try:
                    await started.settle()
                except APIError as exc:
                    if exc.err_code != bus.WRONG_LAST_SEQUENCE:
                        raise
                    # Someone wrote to this job since we looked (its old worker's result): let
                    # JetStream hand it to us again later, when we will see that result.
                    self.logger.info("job_changed_while_starting", job_id=job.id)
                    await msg.nak(delay=1)
                    return
            self.logger.info("job_started", job_id=job.id, tag=tag, kind=job.kind, attempt=attempt)
            outcome, steps = await self._execute(tag, job, lease)
            slot.release()  # execution is over: the next job may start while this result is stored
            lease.phase = "storing its result"
            started_ack = await started.settle()
            after = started_ack.seq if started_ack is not None else queued_seq
            result = JobFinished(
                job_id=job.id, time=time.time(), status=outcome.status, result=outcome.result,
                error=outcome.error, logs=outcome.logs, worker=self.results.worker_id,
                group=self.results.group, attempt=attempt,
                duration_ms=round(outcome.duration_ms, 3), steps=steps, started_at=begun)
            await self._stored(lease, "job.finished", lambda: (
                self.results.finished(job, hold, result, after)))
            await msg.ack()  # only once the result is durable
            self.jobs_done += 1
            self.metrics.finished.labels(tag, outcome.status).inc()
            self.metrics.duration.labels(tag).observe(outcome.duration_ms / 1000)
            self.logger.info("job_finished", job_id=job.id, tag=tag, status=outcome.status,
                             duration_ms=round(outcome.duration_ms, 1))
        except LeaseLost:
            pass  # logged when it ran out; the redelivered copy records the outcome
        except APIError as exc:
            if exc.err_code != bus.WRONG_LAST_SEQUENCE:
                self.logger.error("job_result_not_recorded", job_id=job.id, error=repr(exc))
            else:  # another attempt (or a cancel) wrote after our start: its outcome stands
                self.logger.warning("job_result_superseded", job_id=job.id, attempt=attempt)
        except Exception as exc:
            self.logger.error("job_result_not_recorded", job_id=job.id, error=repr(exc))
        finally:
            started.drop()
            keepalive.cancel()
            self.current.discard(job.id)
            self.on_current()

    async def _execute(self, tag: str, job: Job, lease: Lease
                       ) -> tuple[Outcome, list[StepSummary]]:
        """The job's outcome; a cancel request kills it, and so does a lost lease (LeaseLost);
        a worker bug still ends it visibly."""
        if self.cancels.asked(job.id, job.parent):
            return Outcome(status="cancelled", error="cancelled before it started"), []
        if lease.lost.is_set():
            raise LeaseLost(job.id)
        began = time.monotonic()
        run = asyncio.ensure_future(self._call(tag, job))
        lease.runs.add(run)
        with self.cancels.running_as(job.id, run, job.parent):
            try:
                return await asyncio.shield(run)
            except asyncio.CancelledError:
                if not run.cancelled() or self.stopping():
                    # The worker is stopping (its grace is over): nobody acks this delivery any
                    # more, so its processes must not outlive it (JetStream redelivers it).
                    run.cancel()
                    raise
                if lease.lost.is_set():
                    raise LeaseLost(job.id) from None
                return Outcome(status="cancelled", error="cancelled by request; its processes"
                               " were killed", duration_ms=(time.monotonic() - began) * 1000), []
            except Exception as exc:  # a bug or NATS trouble must still end the job visibly
                self.logger.exception("job_worker_error", exc, job_id=job.id)
                return Outcome(status="failure", error=f"worker error: {exc!r}",
                               duration_ms=(time.monotonic() - began) * 1000), []

    async def _call(self, tag: str, job: Job) -> tuple[Outcome, list[StepSummary]]:
        if job.kind == "flow":
            return await run_flow(self.nc, job, self.logger)
        return await self.executor.run(tag, job), []

    async def _stored(self, lease: Lease, what: str, write: Callable[[], Awaitable[T]]) -> T:
        """`write()`, tried again with backoff (RESULT_RETRY_FIRST doubling to RESULT_RETRY_MAX)
        while JetStream refuses it for storage or NATS does not answer; the lease keeps the
        delivery meanwhile, so the job is not run again. Any other error (a superseded write)
        is raised; LeaseLost once the lease runs out (the worker stopping cancels it)."""
        delay = RESULT_RETRY_FIRST
        while True:
            try:
                return await lease.unless_lost(write())
            except LeaseLost:
                raise
            except Exception as exc:
                reason = retry_reason(exc)
                if reason is None:
                    raise
                self.logger.warning("job_result_retry", job_id=lease.job_id, write=what,
                                    reason=reason, error=repr(exc)[:500], retry_in_s=delay)
            await lease.unless_lost(asyncio.sleep(delay))
            delay = min(delay * 2, RESULT_RETRY_MAX)


class Start:
    """The job.started write of one attempt, `after` seconds from now (0: at once).

    `settle()` decides: a write already begun is awaited (its ack: the sequence the result is
    conditional on); one still waiting is called off, and None says no job.started exists."""

    def __init__(self, write: Callable[[], Awaitable[Any]], after: float) -> None:
        self._write = write
        self.writing = after <= 0  # at once: awaited even if settled before the task begins
        self.task = asyncio.ensure_future(self._run(after))
        self.task.add_done_callback(_retrieve)

    async def _run(self, after: float) -> Any:
        if after > 0:
            await asyncio.sleep(after)
        self.writing = True  # from here on the event may be stored: it is awaited, not dropped
        return await self._write()

    async def settle(self) -> Any:
        if not self.writing:
            self.task.cancel()
            return None
        return await self.task

    def drop(self) -> None:
        """The attempt ended another way (lease lost, error): a write not begun never is."""
        if not self.writing:
            self.task.cancel()


def _queued_seq(msg: Msg) -> int | None:
    """The sequence of the job's job.queued as its router gave it (QUEUED_SEQ_HEADER), or None
    (a job queued before routers gave it, or whose history could not be stored)."""
    raw = (msg.headers or {}).get(subjects.QUEUED_SEQ_HEADER, "")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 2**63 else None


def _retrieve(future: "asyncio.Future[Any]") -> None:
    """A started event nobody awaited (the worker stopped mid-run) must not log its error."""
    if not future.cancelled():
        future.exception()


async def _quietly(coro: Any) -> None:
    try:
        await coro
    except Exception:
        pass


async def _unmark_cancelled(msg: Msg, tag: str, job_id: str) -> None:
    """Remove the GO_CANCELS mark that kept a cancelled queued job out of waiting counts (its
    message is gone now). Sent on the connection the job came on (`msg._client`, as nats-py's
    own ack does): its rights follow this worker's tags, and cover their marks only. Best
    effort: a mark left behind only keeps a count one lower until the bucket forgets it."""
    key = subjects.cancelled_queued_key(tag, job_id)
    try:
        await msg._client.publish(f"$KV.{subjects.CANCELS_BUCKET}.{key}", b"",
                                  headers={"KV-Operation": "DEL"})
    except Exception:  # NATS away: see above
        pass

