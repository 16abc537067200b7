"""The router's core: follow config, resolve each job's tag, enqueue it durably, read job history."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from services.common import bus
from services.common.liveworkers import LiveWorkers
from services.common.log import Logger
from shared import state as st
from shared import subjects
from shared.codec import decode, encode
from shared.errors import GetOperateError, InvalidInput, NotFound
from shared.events import Recorded
from shared.jobs import (
    TERMINAL, Job, JobEvent, JobQueued, JobSubmit, JobView, SubmitAnswer, evolve_job,
    validate_submit,
)
from shared.tags import resolve_tag


def new_job_id() -> str:
    """Time-ordered id (ms timestamp + randomness) so ids sort by submission."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


class RouterService:
    """Turns submissions into durable queue messages on their tag's subject."""

    def __init__(self, nc: NATS, logger: Logger):
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.logger = logger
        self.config = st.ConfigState()
        self.config_ready = asyncio.Event()
        self.workers = LiveWorkers(self.js, logger)
        self._subs: list[object] = []

    async def start(self) -> None:
        await bus.ensure_streams(self.js)
        self._subs.append(
            await bus.follow(self.js, subjects.CONFIG_STREAM, subjects.CONFIG_SUBJECTS,
                             self._on_config, self.config_ready)
        )
        await self.workers.start()
        await asyncio.wait_for(self.config_ready.wait(), 30)
        self._subs.append(
            await self.nc.subscribe(subjects.SUBMIT_SUBJECT, queue=subjects.ROUTER_QUEUE_GROUP,
                                    cb=self._on_submit_request)
        )
        self.logger.info("router_ready", config_seq=self.config.seq)

    async def stop(self) -> None:
        await self.workers.stop()
        for sub in self._subs:
            try:
                await sub.unsubscribe()  # type: ignore[attr-defined]
            except Exception:
                pass

    async def _on_config(self, msg: Msg) -> None:
        try:
            rec = decode(msg.data, Recorded)
        except InvalidInput as exc:
            self.logger.warning("config_event_skipped", seq=msg.metadata.sequence.stream, error=str(exc))
            return
        self.config = st.evolve(self.config, rec)

    async def submit(self, sub: JobSubmit) -> SubmitAnswer:
        validate_submit(sub)
        tag = resolve_tag(language=sub.language, workspace=sub.workspace, args=sub.args,
                          override=sub.tag)
        job = Job(id=new_job_id(), workspace=sub.workspace, language=sub.language, code=sub.code,
                  args=sub.args, tag=tag, timeout=sub.timeout, submitted_at=time.time())
        await self.js.publish(subjects.job_subject(tag), encode(job),
                              headers={"Nats-Msg-Id": job.id})
        queued = JobQueued(job_id=job.id, time=job.submitted_at, tag=tag, workspace=job.workspace,
                           language=job.language)
        await self.js.publish(subjects.job_events_subject(job.id), encode(queued),
                              headers={"Nats-Msg-Id": f"{job.id}:queued"})
        groups = list(st.groups_by_tag(self.config).get(tag, ()))
        live = self.workers.serving(tag)
        warning = None
        if not live:
            where = (f"groups configured with it: {', '.join(groups)}" if groups
                     else "no worker group is configured with it")
            warning = (f"no live worker listens to tag {tag!r} ({where}); "
                       "the job waits in the queue until one does")
        self.logger.info("job_routed", job_id=job.id, tag=tag, workspace=job.workspace,
                         language=job.language, live_workers=len(live))
        return SubmitAnswer(id=job.id, tag=tag, groups=groups, live_workers=len(live),
                            warning=warning)

    async def _on_submit_request(self, msg: Msg) -> None:
        try:
            answer: object = await self.submit(decode(msg.data, JobSubmit))
        except GetOperateError as exc:
            answer = exc.to_dict()
        except Exception as exc:
            self.logger.error("submit_failed", error=repr(exc))
            answer = {"error": "internal", "message": str(exc)}
        if msg.reply:
            await msg.respond(encode(answer))

    async def job(self, job_id: str, *, wait: bool = False, timeout: float = 30.0) -> JobView:
        """The job's view from its lifecycle events; with `wait`, until it ends or `timeout`."""
        try:
            subject = subjects.job_events_subject(job_id)
        except InvalidInput as exc:
            raise NotFound(f"job {job_id!r} does not exist", field="id") from exc
        last = await bus.last_sequence(self.js, subjects.JOB_EVENTS_STREAM, subject)
        if last == 0:
            raise NotFound(f"job {job_id!r} does not exist (or its history expired)", field="id")
        view = JobView(id=job_id)
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            await queue.put(msg)

        psub = await self.js.subscribe(
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
                    self.logger.warning("job_event_skipped", job_id=job_id, error=str(exc))
                if view.status in TERMINAL:
                    break
                if not wait and msg.metadata.sequence.stream >= last:
                    break
        finally:
            await psub.unsubscribe()
        return view
