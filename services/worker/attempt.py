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
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import APIError

from services.common import bus
from services.common.log import Logger
from services.common.metrics import WorkerMetrics
from services.worker.cancels import CancelWatch
from services.worker.executor import Executor
from services.worker.flows import run_flow
from services.worker.results import WRONG_LAST_SEQUENCE, Results
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
                 stopping: Callable[[], bool], config: Callable[[], ConfigState]) -> None:
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

    async def run(self, tag: str, msg: Msg, slot: Slot) -> None:
        """One delivery, from the pulled message to its ack (or nak, or term)."""
        try:
            admitted = await self._admit(tag, msg, slot)
        except Exception as exc:
            attempt = msg.metadata.num_delivered or 1
            self.logger.error("job_not_started", tag=tag, error=repr(exc), attempt=attempt)
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
            await self._attempt(tag, *admitted, msg, slot)

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
        if job.kind == "flow":  # orchestration waits on other jobs: it must not hold a slot
            slot.release()
        last_seq = 0
        if attempt > 1:
            self.metrics.redeliveries.labels(tag).inc()
            # A redelivery: its earlier worker died, or NATS restarted under a running job. If a
            # result is already stored, don't run it again (effectively once).
            try:
                record = await self.results.record(job.id, hold)
                last_seq = record.subject_seq
                last = record.history[-1] if record.history else None
            except Exception:
                if attempt <= bus.MAX_DELIVER:
                    raise
                last_seq, last = 0, None  # out of deliveries: it is parked below regardless
            if isinstance(last, JobFinished):
                self.logger.info("job_result_already_stored", job_id=job.id, attempt=attempt)
                await msg.ack()
                return None
        if attempt > bus.MAX_DELIVER:
            await self.results.dead_letter(tag, job, msg, attempt, hold=hold)
            return None
        return job, hold, attempt, last_seq

    async def _attempt(self, tag: str, job: Job, hold: str, attempt: int, last_seq: int,
                       msg: Msg, slot: Slot) -> None:
        self.current.add(job.id)
        self.on_current()
        keepalive = asyncio.create_task(self._keepalive(msg))
        # On a first attempt the started event is stored while the job runs (awaited before the
        # result, so the history stays in order) to keep it off the critical path. A redelivered
        # job already lost a worker once: its start is recorded before it runs.
        started = asyncio.ensure_future(self.results.started(job, hold, attempt, last_seq or None))
        started.add_done_callback(_retrieve)
        try:
            if attempt > 1:
                try:
                    await started
                except APIError as exc:
                    if exc.err_code != WRONG_LAST_SEQUENCE:
                        raise
                    # Someone wrote to this job since we looked (its old worker's result): let
                    # JetStream hand it to us again later, when we will see that result.
                    self.logger.info("job_changed_while_starting", job_id=job.id)
                    await msg.nak(delay=1)
                    return
            self.logger.info("job_started", job_id=job.id, tag=tag, kind=job.kind, attempt=attempt)
            outcome, steps = await self._execute(tag, job)
            slot.release()  # execution is over: the next job may start while this result is stored
            started_ack = await started
            await self.results.finished(job, hold, JobFinished(
                job_id=job.id, time=time.time(), status=outcome.status, result=outcome.result,
                error=outcome.error, logs=outcome.logs, worker=self.results.worker_id,
                group=self.results.group, attempt=attempt,
                duration_ms=round(outcome.duration_ms, 3), steps=steps), started_ack.seq)
            await msg.ack()  # only once the result is durable
            self.jobs_done += 1
            self.metrics.finished.labels(tag, outcome.status).inc()
            self.metrics.duration.labels(tag).observe(outcome.duration_ms / 1000)
            self.logger.info("job_finished", job_id=job.id, tag=tag, status=outcome.status,
                             duration_ms=round(outcome.duration_ms, 1))
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                self.logger.error("job_result_not_recorded", job_id=job.id, error=repr(exc))
            else:  # another attempt (or a cancel) wrote after our start: its outcome stands
                self.logger.warning("job_result_superseded", job_id=job.id, attempt=attempt)
        except Exception as exc:
            self.logger.error("job_result_not_recorded", job_id=job.id, error=repr(exc))
        finally:
            keepalive.cancel()
            self.current.discard(job.id)
            self.on_current()

    async def _execute(self, tag: str, job: Job) -> tuple[Outcome, list[StepSummary]]:
        """The job's outcome; a cancel request kills it; a worker bug still ends it visibly."""
        if self.cancels.asked(job.id, job.parent):
            return Outcome(status="cancelled", error="cancelled before it started"), []
        run = asyncio.ensure_future(self._call(tag, job))
        with self.cancels.running_as(job.id, run, job.parent):
            try:
                return await asyncio.shield(run)
            except asyncio.CancelledError:
                if not run.cancelled() or self.stopping():
                    raise  # the worker itself is stopping
                return Outcome(status="cancelled", error="cancelled by request; its processes"
                               " were killed"), []
            except Exception as exc:  # a bug or NATS trouble must still end the job visibly
                return Outcome(status="failure", error=f"worker error: {exc!r}"), []

    async def _call(self, tag: str, job: Job) -> tuple[Outcome, list[StepSummary]]:
        if job.kind == "flow":
            return await run_flow(self.nc, job, self.logger)
        return await self.executor.run(tag, job), []

    async def _keepalive(self, msg: Msg) -> None:
        """Tell JetStream the job is still running so it is not redelivered mid-run."""
        while True:
            await asyncio.sleep(bus.JOB_ACK_WAIT / 3)
            try:
                await msg.in_progress()
            except Exception as exc:
                self.logger.warning("in_progress_failed", error=str(exc))


def _retrieve(future: "asyncio.Future[Any]") -> None:
    """A started event nobody awaited (the worker stopped mid-run) must not log its error."""
    if not future.cancelled():
        future.exception()


async def _quietly(coro: Any) -> None:
    try:
        await coro
    except Exception:
        pass
