"""A worker: join a group, replay its config, run the init script, take jobs of its tags, hot-reload.

Jobs of a tag sit on one durable pull consumer shared by every worker listening to that tag
(competing consumers on a WorkQueue stream), so several groups may serve one tag and each job
runs once. A worker asks for a job only when it has a free slot, one message at a time with a
`no_wait` pull, so it never holds a job it cannot run. It learns that a tag has work without
polling: it also subscribes (plain NATS) to the tags' subjects, and each published job wakes it.
A slow sweep of every tag catches what no wake-up announced (redeliveries, a missed signal).
Tags are tried by priority (group config), then those known to have work, then round-robin.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
import socket
import time
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from services.common import bus
from services.common.jobwatch import job_history
from services.common.log import Logger
from services.common.metrics import WorkerMetrics
from services.worker.flows import run_flow
from services.worker.executor import Executor
from services.worker.runner import Outcome
from services.worker.settings import WorkerSettings
from shared import state as st
from shared import subjects
from shared.codec import decode, encode
from shared.errors import InvalidInput
from shared.events import decode_known
from shared.jobs import (
    DeadLetter, Job, JobEvent, JobFinished, JobQueued, JobStarted, StepSummary, WorkerStatus,
)

WRONG_LAST_SEQUENCE = 10071
HEARTBEAT_EVERY = 5.0
JOB_BEAT_GAP = 0.5
SWEEP_EVERY = 5.0
INIT_RETRY_MAX = 60.0
PULL_NOW = b'{"batch":1,"no_wait":true}'
# After a wake-up the message may not be stored yet (core delivery can beat the stream's write):
# wait for it briefly instead of answering "no messages".
PULL_SOON = b'{"batch":1,"expires":300000000}'


class Worker:
    """One worker process: config follower, job dispatcher, runner of jobs and init scripts."""

    def __init__(self, nc: NATS, logger: Logger, settings: WorkerSettings,
                 worker_id: str | None = None):
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.settings = settings
        self.group = settings.group
        self.id = worker_id or _default_id(settings.group)
        self.logger = logger.bind(worker=self.id, group=self.group)
        self.metrics = WorkerMetrics()
        self.metrics.config_version.set_function(lambda: self.config_version)
        self.metrics.busy.set_function(lambda: self.busy)
        self.config = st.ConfigState()
        self.applied: st.GroupConfig | None = None
        self.config_version = 0
        self.config_applied_at: float | None = None
        self.priorities: dict[str, int] = {}
        self.dedicated_tags: set[str] = set()
        self.wake_subs: dict[str, object] = {}
        self.consumers: set[str] = set()
        self.hinted: set[str] = set()  # tags whose subject signalled a new job
        self.recent: set[str] = set()  # tags that delivered a job on the last pull
        self.wake = asyncio.Event()
        self._rotation = 0
        self._next_sweep = 0.0
        self.busy = 0
        self.free = asyncio.Event()
        self.free.set()
        self.init_ok = asyncio.Event()
        self.init_status = "none"
        self.init_error: str | None = None
        self.current: set[str] = set()
        self.jobs_done = 0
        self.state = "starting"
        self.started_at = time.time()
        self.executor = Executor(settings, self.id, self.group, self.logger)
        self._caught_up = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._init_task: asyncio.Task[None] | None = None
        self._hb_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self._cancel_task: asyncio.Task[None] | None = None
        self._hb_kick = asyncio.Event()
        self._hb_urgent = False
        self._last_beat = 0.0
        self._inbox: Any = None
        self._inbox_name = ""
        self.cancel_requested: set[str] = set()
        self.running: dict[str, asyncio.Task[tuple[Outcome, list[StepSummary]]]] = {}
        self._kv = None
        self._sub: object = None

    @property
    def init_status(self) -> str:
        return self._init_status

    @init_status.setter
    def init_status(self, value: str) -> None:
        self._init_status = value
        self.metrics.init_status.state(value)

    def readiness(self) -> dict[str, bool]:
        """What /readyz reports: joined, init script done, NATS connected."""
        return {"joined": self.state == "ready", "init_script_ok": self.init_ok.is_set(),
                "nats_connected": self.nc.is_connected}

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await bus.wait_streams(self.js, self.logger)  # workers may not create streams
        self._kv = await bus.workers_bucket(self.js)
        self._hb_task = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        cancels = await bus.cancels_bucket(self.js)
        self._cancel_watch = await cancels.watchall()
        self._cancel_task = asyncio.create_task(self._watch_cancels(), name="cancels")
        if self.group is not None:
            self._sub = await bus.follow(self.js, subjects.CONFIG_STREAM,
                                         subjects.group_subject(self.group), self._on_config,
                                         self._caught_up)
            await asyncio.wait_for(self._caught_up.wait(), 60)
        await self._apply()
        self.state = "ready"
        self._beat_now()
        self._dispatch_task = asyncio.create_task(self._dispatch(), name="dispatch")
        self.logger.info("worker_ready", tags=self.tags(), tags_source=self.tags_source(),
                         config_version=self.config_version)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking jobs, let running ones finish (up to `grace`), then leave the bucket."""
        self.state = "stopping"
        if self._dispatch_task:
            self._dispatch_task.cancel()
        for sub in list(self.wake_subs.values()):
            await _unsubscribe(sub)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
            for t in self._tasks:
                t.cancel()
        await _unsubscribe(self._sub)
        for task in (self._init_task, self._hb_task, self._cancel_task):
            if task:
                task.cancel()
        self.executor.stop()
        if self._kv is not None:
            try:
                await self._kv.delete(subjects.worker_key(self.id))
            except Exception:
                pass
        self.logger.info("worker_stopped", jobs_done=self.jobs_done)

    async def _watch_cancels(self) -> None:
        """Cancellation requests (GO_CANCELS): kill the job if it runs here, skip it if it comes."""
        async for entry in self._cancel_watch:
            if entry is None or entry.operation in ("DEL", "PURGE"):
                continue
            job_id = entry.key
            self.cancel_requested.add(job_id)
            task = self.running.get(job_id)
            if task is not None and not task.done():
                self.logger.info("job_cancel_requested", job_id=job_id)
                task.cancel()

    # --- config and hot reload ---------------------------------------------------------------

    async def _on_config(self, msg: Msg) -> None:
        try:
            rec = decode_known(msg.data)
        except InvalidInput as exc:
            self.logger.warning("config_event_skipped", error=str(exc))
            return
        if rec is None:
            self.logger.warning("config_event_unknown_type_skipped", seq=msg.metadata.sequence.stream)
            return
        self.config = st.evolve(self.config, rec)
        if self.state != "starting":  # a live change: apply in place
            await self._apply()

    def tags_source(self) -> str:
        if self.settings.env_tags is not None:
            return "env"
        return "group" if self.group is not None else "none"

    def tags(self) -> list[str]:
        """Tags listened to: WORKER_TAGS, or the group's tags; plus dedicated tags."""
        base = list(self.settings.env_tags) if self.settings.env_tags is not None else (
            list(self.applied.tags) if self.applied else [])
        return base + sorted(t for t in self.dedicated_tags if t not in base)

    async def _apply(self) -> None:
        """Make the running worker match the folded config; log what changed."""
        new = self.config.groups.get(self.group) if self.group else None
        old = self.applied
        first = self.state == "starting"
        changes = st.describe_change(old, new) if not first else []
        self.applied = new
        self.config_version = self.config.seq if self.group else 0
        self.priorities = dict(new.priorities) if new else {}
        self.executor.apply(new)
        self.dedicated_tags = set(self.executor.dedicated_tags)
        wanted = set(self.tags())
        for tag in sorted(wanted - set(self.wake_subs)):
            await self._listen(tag)
        for tag in sorted(set(self.wake_subs) - wanted):
            await _unsubscribe(self.wake_subs.pop(tag))
            self.hinted.discard(tag)
            self.recent.discard(tag)
        old_script = old.init_script if old else None
        new_script = new.init_script if new else None
        if first or old_script != new_script:
            self._schedule_init(new_script)
        self.config_applied_at = time.time()  # listening to the new tags from here on
        if not first:
            if self.settings.env_tags is not None and any(c.startswith("tags") for c in changes):
                changes.append("tags ignored: WORKER_TAGS takes precedence")
            self.metrics.hot_reloads.inc()
            self.logger.info("hot_reload", config_version=self.config_version, changes=changes,
                             tags=self.tags())
        self.wake.set()
        self._beat_now()

    async def _listen(self, tag: str) -> None:
        """Wake-ups for a tag: a plain subscription to its job subject (no queue group)."""

        async def on_job_published(msg: Msg) -> None:
            self.hinted.add(tag)
            self.wake.set()

        self.wake_subs[tag] = await self.nc.subscribe(subjects.job_subject(tag), cb=on_job_published)
        self._next_sweep = 0.0  # it may already hold a backlog: sweep every tag next

    def _schedule_init(self, script: str | None) -> None:
        if self._init_task:
            self._init_task.cancel()
        self.init_ok.clear()
        if script is None:
            self.init_status = "none"
            self.init_error = None
            self.init_ok.set()
            return
        self._init_task = asyncio.create_task(self._run_init(script), name="init-script")

    async def _run_init(self, script: str) -> None:
        """Run the init script while no job runs; retry with backoff on failure, never exit."""
        delay = 1.0
        while True:
            while self.busy:
                self.free.clear()
                await self.free.wait()
            self.init_status = "running"
            self._beat_now()
            started = time.monotonic()
            ok, logs = await self.executor.run_init(script)
            if ok:
                self.init_status, self.init_error = "ok", None
                self.logger.info("init_script_ok",
                                 duration_ms=round((time.monotonic() - started) * 1000))
                self.init_ok.set()
                self.wake.set()
                self._beat_now()
                return
            self.init_status, self.init_error = "failed", logs[-2000:]
            self.logger.error("init_script_failed", retry_in=delay, output=logs[-500:])
            self._beat_now()
            await asyncio.sleep(delay)
            delay = min(delay * 2, INIT_RETRY_MAX)

    # --- dispatching ---------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Take one job whenever a slot is free; sleep on wake-ups when no tag has work."""
        while True:
            try:
                await self.init_ok.wait()
                while self.busy >= self.settings.concurrency:
                    self.free.clear()
                    await self.free.wait()
                if not self.init_ok.is_set():
                    continue
                self.wake.clear()
                got = await self._take_next()
                if got is None:
                    try:
                        await asyncio.wait_for(self.wake.wait(), SWEEP_EVERY)
                    except asyncio.TimeoutError:
                        pass
                    continue
                tag, msg = got
                self._start_job(tag, msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.logger.warning("dispatch_error", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)

    def _candidates(self) -> list[str]:
        """Tags to try: by priority, then those known to have work, then round-robin. Between
        sweeps only tags that signalled a job or just delivered one are tried."""
        now = time.monotonic()
        tags = list(self.wake_subs)
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + SWEEP_EVERY
        self._rotation += 1
        n = max(len(tags), 1)
        order = {t: (i - self._rotation) % n for i, t in enumerate(tags)}
        hot = self.hinted | self.recent
        pool = [t for t in tags if sweep or t in hot]
        return sorted(pool, key=lambda t: (-self.priorities.get(t, 0), t not in hot, order[t]))

    async def _take_next(self) -> tuple[str, Msg] | None:
        for tag in self._candidates():
            # A signalled job may not be stored yet: wait briefly for it. Otherwise, ask once.
            request = PULL_SOON if tag in self.hinted else PULL_NOW
            self.hinted.discard(tag)
            self.recent.discard(tag)
            msg = await self._pull(tag, request)
            if msg is None:
                continue
            self.recent.add(tag)  # it may hold more: try it again first next time
            try:
                return subjects.tag_of_subject(msg.subject), msg
            except InvalidInput:
                return tag, msg
        return None

    async def _pull(self, tag: str, request: bytes) -> Msg | None:
        """One pull of one message on the tag's consumer; None when it has none for us."""
        if tag not in self.consumers:
            await bus.ensure_tag_consumer(self.js, tag)
            self.consumers.add(tag)
        api = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.JOBS_STREAM}.{subjects.tag_consumer(tag)}"
        if self._inbox is None:
            # One inbox for all pulls: the dispatcher has one pull outstanding at a time, and a
            # delivered job names its own subject, so even a late answer is handled right.
            self._inbox_name = self.nc.new_inbox()
            self._inbox = await self.nc.subscribe(self._inbox_name)
        try:
            await self.nc.publish(api, request, reply=self._inbox_name)
            msg = await self._inbox.next_msg(timeout=5.0)
        except Exception as exc:
            self.consumers.discard(tag)  # consumer gone or NATS away: re-ensure next time
            self.logger.warning("pull_failed", tag=tag, error=str(exc) or type(exc).__name__)
            return None
        if msg.headers and msg.headers.get("Status"):
            return None  # 404 no messages, 408 expired, 409 limits, 503 no consumer
        return msg

    def _start_job(self, tag: str, msg: Msg) -> None:
        try:
            job = decode(msg.data, Job)
        except InvalidInput as exc:
            self.logger.error("job_malformed_dropped", tag=tag, error=str(exc))
            self._spawn(msg.term())
            return
        if tag not in self.wake_subs:  # released by a hot reload since the pull
            self._spawn(msg.nak())
            return
        uses_slot = job.kind != "flow"  # orchestration waits on other jobs: it must not hold a slot
        if uses_slot:
            self.busy += 1
            if self.busy >= self.settings.concurrency:
                self.free.clear()
        self._spawn(self._execute(tag, job, msg, uses_slot))

    def _release_slot(self) -> None:
        self.busy -= 1
        self.free.set()
        self.wake.set()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dead_letter(self, tag: str, job: Job, msg: Msg, deliveries: int) -> None:
        """Too many deliveries (each attempt lost its worker): park the job with its history."""
        history = [msgspec.structs.replace(e, logs="", result=None) if isinstance(e, JobFinished)
                   else e for e in await job_history(self.js, job.id)]  # keep it one message
        dead = DeadLetter(job=job, deliveries=deliveries, time=time.time(), history=history)
        try:
            await self.js.publish(subjects.dead_subject(tag), encode(dead),
                                  headers={"Nats-Msg-Id": job.id})
        except Exception as exc:  # still end the job below: never retry it forever
            self.logger.error("dead_letter_not_parked", job_id=job.id, error=repr(exc))
        await self._publish_event(JobFinished(
            job_id=job.id, time=time.time(), status="failure", worker=self.id, group=self.group,
            attempt=deliveries, dead_letter=True,
            error=f"dead-lettered after {deliveries - 1} deliveries that never finished"
                  f" (the job kept losing its worker); parked on {subjects.DEAD_STREAM}"),
            f"{job.id}:{deliveries}:finished")
        await msg.term()
        self.metrics.dead_letters.labels(tag).inc()
        self.logger.error("job_dead_lettered", job_id=job.id, tag=tag, deliveries=deliveries - 1)

    async def _last_event(self, job: Job) -> tuple[int, object]:
        """(stream sequence, event) of the newest lifecycle event of a job; (0, None) if none."""
        try:
            raw = await self.js.get_last_msg(subjects.JOB_EVENTS_STREAM,
                                             subjects.job_events_subject(job.id))
        except NotFoundError:
            return 0, None
        try:
            return int(raw.seq or 0), decode(raw.data or b"", JobEvent)
        except InvalidInput:
            return int(raw.seq or 0), None

    async def _execute(self, tag: str, job: Job, msg: Msg, uses_slot: bool) -> None:
        attempt = msg.metadata.num_delivered or 1
        last_seq = 0
        if attempt > 1:
            self.metrics.redeliveries.labels(tag).inc()
            # A redelivery: its earlier worker died, or NATS restarted under a running job. If a
            # result is already stored, don't run it again (effectively once).
            last_seq, last = await self._last_event(job)
            if isinstance(last, JobFinished):
                self.logger.info("job_result_already_stored", job_id=job.id, attempt=attempt)
                await msg.ack()
                if uses_slot:
                    self._release_slot()
                return
        if attempt > bus.MAX_DELIVER:
            try:
                await self._dead_letter(tag, job, msg, attempt)
            except Exception as exc:
                self.logger.error("dead_letter_failed", job_id=job.id, error=repr(exc))
            finally:
                if uses_slot:
                    self._release_slot()
            return
        self.current.add(job.id)
        self._job_changed()
        keepalive = asyncio.create_task(self._keepalive(msg))
        try:
            # On a first attempt the started event is stored while the job runs (awaited before
            # the result, so the history stays in order) to keep it off the critical path. A
            # redelivered job already lost a worker once: its start is recorded before it runs.
            started = asyncio.ensure_future(self._publish_event(
                JobStarted(job_id=job.id, time=time.time(), worker=self.id, group=self.group,
                           attempt=attempt), f"{job.id}:{attempt}:started",
                expect_last=last_seq or None))
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
                    if uses_slot:
                        uses_slot = False
                        self._release_slot()
                    return
            self.logger.info("job_started", job_id=job.id, tag=tag, kind=job.kind, attempt=attempt)
            steps: list[StepSummary] = []
            if job.id in self.cancel_requested:
                outcome = Outcome(status="cancelled", error="cancelled before it started")
            else:
                run = asyncio.ensure_future(self._run(tag, job))
                self.running[job.id] = run
                try:
                    outcome, steps = await asyncio.shield(run)
                except asyncio.CancelledError:
                    if not run.cancelled() or self.state == "stopping":
                        raise  # the worker itself is stopping
                    outcome = Outcome(status="cancelled", error="cancelled by request; its"
                                      " processes were killed")
                except Exception as exc:  # a bug or NATS trouble must still end the job visibly
                    outcome = Outcome(status="failure", error=f"worker error: {exc!r}")
                finally:
                    self.running.pop(job.id, None)
            if uses_slot:  # execution is over: the next job may start while this result is stored
                uses_slot = False
                self._release_slot()
            started_ack = await started
            await self._publish_result(job, JobFinished(
                job_id=job.id, time=time.time(), status=outcome.status, result=outcome.result,
                error=outcome.error, logs=outcome.logs, worker=self.id, group=self.group,
                attempt=attempt, duration_ms=round(outcome.duration_ms, 3), steps=steps),
                started_ack.seq)
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
            if uses_slot:
                self._release_slot()
            self._job_changed()

    async def _run(self, tag: str, job: Job) -> tuple[Outcome, list[StepSummary]]:
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

    async def _publish_result(self, job: Job, event: JobFinished, after: int) -> None:
        """Store the result only if nothing but a (late) job.queued was written to the job since
        our job.started: another attempt's start or result, or a cancel, supersedes ours."""
        msg_id = f"{job.id}:{event.attempt}:finished"
        while True:
            try:
                await self._publish_event(event, msg_id, expect_last=after)
                return
            except APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
                seq, last = await self._last_event(job)
                if not isinstance(last, JobQueued) or seq <= after:
                    raise
                after = seq

    async def _publish_event(self, event: JobStarted | JobFinished, msg_id: str,
                             expect_last: int | None = None) -> Any:
        """Store a lifecycle event. `expect_last` makes it conditional on the job's subject not
        having changed since that sequence, so two attempts can never both record a result."""
        return await bus.publish(self.js, subjects.job_events_subject(event.job_id),
                                 encode(fit(event)), msg_id, within=60.0, expect_last=expect_last)

    # --- heartbeat ---------------------------------------------------------------------------------

    def status(self) -> WorkerStatus:
        sandbox, network, note = self.executor.isolation()
        return WorkerStatus(
            id=self.id, group=self.group, tags=self.tags(), tags_source=self.tags_source(),  # type: ignore[arg-type]
            config_version=self.config_version,
            current_job=next(iter(self.current), None), init_status=self.init_status,  # type: ignore[arg-type]
            init_error=self.init_error, state=self.state,  # type: ignore[arg-type]
            hostname=socket.gethostname(), pid=os.getpid(), started_at=self.started_at,
            heartbeat_at=time.time(), jobs_done=self.jobs_done,
            priorities=self.priorities, dedicated=sorted(self.dedicated_tags),
            config_applied_at=self.config_applied_at,
            sandbox=sandbox, network=network, sandbox_note=note,
        )

    def _beat_now(self) -> None:
        """Config, init or state changed: beat at once."""
        self._hb_urgent = True
        self._hb_kick.set()

    def _job_changed(self) -> None:
        """The current job changed: beat soon, at most every JOB_BEAT_GAP s (not per job)."""
        self._hb_kick.set()

    async def _heartbeat_loop(self) -> None:
        """Beat every HEARTBEAT_EVERY s, at once on config/init changes, and within JOB_BEAT_GAP s
        of a job starting or ending."""
        while True:
            try:
                await asyncio.wait_for(self._hb_kick.wait(), HEARTBEAT_EVERY)
            except asyncio.TimeoutError:
                pass
            if not self._hb_urgent:
                gap = self._last_beat + JOB_BEAT_GAP - time.monotonic()
                if gap > 0:
                    await asyncio.sleep(gap)
            self._hb_kick.clear()
            self._hb_urgent = False
            self._last_beat = time.monotonic()
            try:
                assert self._kv is not None
                await self._kv.put(subjects.worker_key(self.id), encode(self.status()))
            except Exception as exc:
                self.logger.warning("heartbeat_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)


MAX_EVENT_BYTES = 900 * 1024  # under the 1 MB max_payload, with room for headers
MAX_ERROR_CHARS = 16 * 1024


def fit(event: JobStarted | JobFinished) -> JobStarted | JobFinished:
    """Make a result event fit one NATS message: cut logs first, then refuse an oversized result."""
    if not isinstance(event, JobFinished):
        return event
    replace = msgspec.structs.replace
    if event.error and len(event.error) > MAX_ERROR_CHARS:
        event = replace(event, error=event.error[:MAX_ERROR_CHARS] + " [...]")
    size = len(encode(event))
    if size <= MAX_EVENT_BYTES:
        return event
    excess = size - MAX_EVENT_BYTES
    logs = event.logs
    keep = max(0, len(logs) - excess * 7)  # escaped characters take up to ~6 bytes each
    event = replace(event, logs="[... log truncated ...]\n" + logs[len(logs) - keep:])
    if len(encode(event)) <= MAX_EVENT_BYTES:
        return event
    return replace(event, status="failure", result=None, logs=event.logs[-64 * 1024:],
                   error=f"the result is too large to record ({size} bytes of JSON)")


async def _unsubscribe(sub: object) -> None:
    if sub is None:
        return
    try:
        await sub.unsubscribe()  # type: ignore[attr-defined]
    except Exception:
        pass


def _default_id(group: str | None) -> str:
    host = socket.gethostname().split(".")[0][:32]
    return f"{group or 'tags'}-{host}-{os.getpid()}-{os.urandom(2).hex()}"
