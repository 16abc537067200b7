"""A worker: join a group, replay its config, run the init script, pull jobs of its tags, hot-reload.

One durable pull consumer per tag is shared by every worker listening to that tag (competing
consumers on a WorkQueue stream), so several groups may serve one tag and each job runs once.
A worker pulls only while it has a free slot; a message that arrives when it has none (a pull
already in flight) goes straight back with a NAK for another worker.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common import bus
from services.common.log import Logger
from services.worker.runner import Outcome, run_init_script, run_job
from shared import state as st
from shared import subjects
from shared.codec import decode, encode
from shared.errors import InvalidInput
from shared.events import Recorded
from shared.jobs import Job, JobFinished, JobStarted, WorkerStatus

FETCH_TIMEOUT = 10.0
HEARTBEAT_EVERY = 5.0
INIT_RETRY_MAX = 60.0


class WorkerSettings(msgspec.Struct, kw_only=True):
    """Parsed once from the environment (see docs/configuration.md)."""

    group: str | None = "default"
    env_tags: tuple[str, ...] | None = None
    concurrency: int = 1
    job_timeout: float = 300.0
    init_timeout: float = 300.0
    work_dir: Path = Path("/tmp/getoperate-worker")
    env_allowlist: tuple[str, ...] = ()


class _TagLoop:
    """The pull loop of one tag; `stop` lets the running job finish, then releases the tag."""

    def __init__(self, tag: str):
        self.tag = tag
        self.stopped = False
        self.running = False
        self.task: asyncio.Task[None] | None = None


class Worker:
    """One worker process's job loop and config follower."""

    def __init__(self, nc: NATS, logger: Logger, settings: WorkerSettings,
                 worker_id: str | None = None):
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.settings = settings
        self.group = settings.group
        self.id = worker_id or _default_id(settings.group)
        self.logger = logger.bind(worker=self.id, group=self.group)
        self.config = st.ConfigState()
        self.applied: st.GroupConfig | None = None
        self.config_version = 0
        self.loops: dict[str, _TagLoop] = {}
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
        self._caught_up = asyncio.Event()
        self._init_task: asyncio.Task[None] | None = None
        self._hb_task: asyncio.Task[None] | None = None
        self._hb_kick = asyncio.Event()
        self._kv = None
        self._sub: object = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await bus.ensure_streams(self.js)
        self._kv = await bus.workers_bucket(self.js)
        self._hb_task = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        if self.group is not None:
            self._sub = await bus.follow(self.js, subjects.CONFIG_STREAM,
                                         subjects.group_subject(self.group), self._on_config,
                                         self._caught_up)
            await asyncio.wait_for(self._caught_up.wait(), 60)
        self._apply()
        self.state = "ready"
        self._hb_kick.set()
        self.logger.info("worker_ready", tags=self.tags(), tags_source=self.tags_source(),
                         config_version=self.config_version)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop pulling, let running jobs finish (up to `grace`), then leave the bucket."""
        self.state = "stopping"
        tasks = []
        for loop in self.loops.values():
            loop.stopped = True
            if loop.task is None:
                continue
            if loop.running:
                tasks.append(loop.task)
            else:  # idle in a fetch: a job delivered to it now is redelivered after ack_wait
                loop.task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
            for t in tasks:
                t.cancel()
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()  # type: ignore[attr-defined]
            except Exception:
                pass
        for task in (self._init_task, self._hb_task):
            if task:
                task.cancel()
        if self._kv is not None:
            try:
                await self._kv.delete(subjects.worker_key(self.id))
            except Exception:
                pass
        self.logger.info("worker_stopped", jobs_done=self.jobs_done)

    # --- config and hot reload ---------------------------------------------------------------

    async def _on_config(self, msg: Msg) -> None:
        try:
            rec = decode(msg.data, Recorded)
        except InvalidInput as exc:
            self.logger.warning("config_event_skipped", error=str(exc))
            return
        self.config = st.evolve(self.config, rec)
        if self.state != "starting":  # a live change: apply in place
            self._apply()

    def tags_source(self) -> str:
        if self.settings.env_tags is not None:
            return "env"
        return "group" if self.group is not None else "none"

    def tags(self) -> list[str]:
        if self.settings.env_tags is not None:
            return list(self.settings.env_tags)
        return list(self.applied.tags) if self.applied else []

    def _apply(self) -> None:
        """Make the running worker match the folded config; log what changed."""
        new = self.config.groups.get(self.group) if self.group else None
        old = self.applied
        first = self.state == "starting"
        changes = st.describe_change(old, new) if not first else []
        self.applied = new
        self.config_version = self.config.seq if self.group else 0
        wanted = set(self.tags())
        for tag in sorted(wanted - set(self.loops)):
            self._start_loop(tag)
        for tag in sorted(set(self.loops) - wanted):
            self.loops.pop(tag).stopped = True
        old_script = old.init_script if old else None
        new_script = new.init_script if new else None
        if first or old_script != new_script:
            self._schedule_init(new_script)
        if not first:
            if self.settings.env_tags is not None and any(c.startswith("tags") for c in changes):
                changes.append("tags ignored: WORKER_TAGS takes precedence")
            self.logger.info("hot_reload", config_version=self.config_version, changes=changes,
                             tags=self.tags())
        self._hb_kick.set()

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
            await self._take_all_slots()
            try:
                self.init_status = "running"
                self._hb_kick.set()
                started = time.monotonic()
                ok, logs = await run_init_script(
                    script, work_dir=self.settings.work_dir, timeout=self.settings.init_timeout,
                    env={k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ},
                )
            finally:
                self._release_all_slots()
            if ok:
                self.init_status, self.init_error = "ok", None
                self.logger.info("init_script_ok", duration_ms=round((time.monotonic() - started) * 1000))
                self.init_ok.set()
                self._hb_kick.set()
                return
            self.init_status, self.init_error = "failed", logs[-2000:]
            self.logger.error("init_script_failed", retry_in=delay, output=logs[-500:])
            self._hb_kick.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, INIT_RETRY_MAX)

    # --- slots -----------------------------------------------------------------------------------

    def _try_take_slot(self) -> bool:
        if self.busy >= self.settings.concurrency or not self.init_ok.is_set():
            return False
        self.busy += 1
        if self.busy >= self.settings.concurrency:
            self.free.clear()
        return True

    def _release_slot(self) -> None:
        self.busy -= 1
        self.free.set()

    async def _take_all_slots(self) -> None:
        while self.busy:
            await self.free.wait()
            if self.busy:
                await asyncio.sleep(0.01)
        self.busy = self.settings.concurrency
        self.free.clear()

    def _release_all_slots(self) -> None:
        self.busy = 0
        self.free.set()

    # --- pulling and running jobs ----------------------------------------------------------------

    def _start_loop(self, tag: str) -> None:
        loop = _TagLoop(tag)
        loop.task = asyncio.create_task(self._pull(loop), name=f"pull:{tag}")
        self.loops[tag] = loop

    async def _pull(self, loop: _TagLoop) -> None:
        psub = None
        while not loop.stopped:
            try:
                if psub is None:
                    durable = await bus.ensure_tag_consumer(self.js, loop.tag)
                    psub = await self.js.pull_subscribe_bind(durable, stream=subjects.JOBS_STREAM)
                await self.init_ok.wait()
                await self.free.wait()
                if loop.stopped:
                    break
                try:
                    msgs = await psub.fetch(1, timeout=FETCH_TIMEOUT)
                except (nats.errors.TimeoutError, asyncio.TimeoutError):
                    continue
                for msg in msgs:
                    if loop.stopped or not self._try_take_slot():
                        await msg.nak()
                        continue
                    loop.running = True
                    try:
                        await self._run(loop.tag, msg)
                    finally:
                        loop.running = False
                        self._release_slot()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.logger.warning("pull_error", tag=loop.tag, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)
        if psub is not None:
            try:
                await psub.unsubscribe()
            except Exception:
                pass
        self.logger.info("tag_released", tag=loop.tag)

    async def _run(self, tag: str, msg: Msg) -> None:
        try:
            job = decode(msg.data, Job)
        except InvalidInput as exc:
            self.logger.error("job_malformed_dropped", tag=tag, error=str(exc))
            await msg.term()
            return
        attempt = msg.metadata.num_delivered or 1
        self.current.add(job.id)
        self._hb_kick.set()
        keepalive = asyncio.create_task(self._keepalive(msg))
        try:
            await self._publish_event(
                JobStarted(job_id=job.id, time=time.time(), worker=self.id, group=self.group,
                           attempt=attempt), f"{job.id}:{attempt}:started")
            self.logger.info("job_started", job_id=job.id, tag=tag, attempt=attempt)
            outcome: Outcome = await run_job(
                job, work_root=self.settings.work_dir,
                timeout=job.timeout or self.settings.job_timeout,
                extra_env={"GO_WORKER_ID": self.id, "GO_WORKER_GROUP": self.group or ""},
                allowlist=self.settings.env_allowlist,
            )
            await self._publish_event(
                JobFinished(job_id=job.id, time=time.time(), status=outcome.status,
                            result=outcome.result, error=outcome.error, logs=outcome.logs,
                            worker=self.id, group=self.group, attempt=attempt,
                            duration_ms=round(outcome.duration_ms, 3)),
                f"{job.id}:{attempt}:finished")
            await msg.ack()  # only once the result is durable
            self.jobs_done += 1
            self.logger.info("job_finished", job_id=job.id, tag=tag, status=outcome.status,
                             duration_ms=round(outcome.duration_ms, 1))
        finally:
            keepalive.cancel()
            self.current.discard(job.id)
            self._hb_kick.set()

    async def _keepalive(self, msg: Msg) -> None:
        """Tell JetStream the job is still running so it is not redelivered mid-run."""
        while True:
            await asyncio.sleep(bus.JOB_ACK_WAIT / 3)
            try:
                await msg.in_progress()
            except Exception as exc:
                self.logger.warning("in_progress_failed", error=str(exc))

    async def _publish_event(self, event: object, msg_id: str) -> None:
        job_id = event.job_id  # type: ignore[attr-defined]
        await self.js.publish(subjects.job_events_subject(job_id), encode(event),
                              headers={"Nats-Msg-Id": msg_id})

    # --- heartbeat ---------------------------------------------------------------------------------

    def status(self) -> WorkerStatus:
        return WorkerStatus(
            id=self.id, group=self.group, tags=self.tags(), tags_source=self.tags_source(),  # type: ignore[arg-type]
            config_version=self.config_version,
            current_job=next(iter(self.current), None), init_status=self.init_status,  # type: ignore[arg-type]
            init_error=self.init_error, state=self.state,  # type: ignore[arg-type]
            hostname=socket.gethostname(), pid=os.getpid(), started_at=self.started_at,
            heartbeat_at=time.time(), jobs_done=self.jobs_done,
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._hb_kick.wait(), HEARTBEAT_EVERY)
            except asyncio.TimeoutError:
                pass
            self._hb_kick.clear()
            try:
                assert self._kv is not None
                await self._kv.put(subjects.worker_key(self.id), encode(self.status()))
            except Exception as exc:
                self.logger.warning("heartbeat_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)


def _default_id(group: str | None) -> str:
    host = socket.gethostname().split(".")[0][:32]
    return f"{group or 'tags'}-{host}-{os.getpid()}-{os.urandom(2).hex()}"
