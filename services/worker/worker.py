"""A worker: join a group, replay its config, run the init script, take jobs of its tags, hot-reload.

This module only puts the parts together and applies config changes; each part holds one job:
follower.py (the group's config), initscript.py, slots.py (execution slots), dispatcher.py and
pulls.py (which job next, pulls), attempt.py (one delivery of a job), results.py (job events,
dead letters), cancels.py (GO_CANCELS), heartbeat.py (GO_WORKERS), executor.py (running code).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common import bus, natsauth
from services.common.log import Logger
from services.common.metrics import WorkerMetrics
from services.worker import languages
from services.worker.attempt import Attempts
from services.worker.cancels import CancelWatch
from services.worker.changes import describe_change
from services.worker.dispatcher import Dispatcher, JobsConnector
from services.worker.executor import Executor
from services.worker.follower import ConfigFollower
from services.worker.heartbeat import Heartbeat, build_status
from services.worker.initscript import InitScript
from services.worker.results import Results
from services.worker.settings import WorkerSettings
from services.worker.slots import Slot, Slots
from shared import state as st
from shared import subjects
from shared.jobs import WorkerStatus


class Worker:
    """One worker process: the parts below, started and stopped together."""

    def __init__(self, nc: NATS, logger: Logger, settings: WorkerSettings,
                 worker_id: str | None = None, connect_jobs: JobsConnector | None = None,
                 ensure_consumers: bool = True):
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.settings = settings
        self.group = settings.group
        self.id = worker_id or default_id(settings.group)
        self.logger = logger.bind(worker=self.id, group=self.group)
        self.metrics = WorkerMetrics()
        self.state = "starting"
        self.started_at = time.time()
        self.applied: st.GroupConfig | None = None
        self.config_version = 0
        self.config_applied_at: float | None = None
        self.priorities: dict[str, int] = {}
        self.dedicated_tags: set[str] = set()
        self.executor = Executor(settings, self.id, self.group, self.logger)
        inbox_token = natsauth.declared(nc.options.get("name") or "").get("inbox")
        nonce = subjects.heartbeat_nonce(inbox_token) if inbox_token else secrets.token_hex(12)
        self.heartbeat = Heartbeat(self.id, settings.nats_user, nonce, self.status, self.logger)
        self.slots = Slots(settings.concurrency)
        self.init = InitScript(self.executor, self.slots, self.metrics, self.logger,
                               on_change=self._init_changed)
        self.follower = ConfigFollower(self.js, self.group, self.logger, self._on_config)
        self.cancels = CancelWatch(self.js, self.logger)
        self.results = Results(nc, self.id, self.group, self.metrics, self.logger)
        self.attempts = Attempts(nc, self.executor, self.results, self.cancels, self.metrics,
                                 self.logger, on_current=self.heartbeat.soon,
                                 stopping=lambda: self.state == "stopping",
                                 config=lambda: self.follower.access,
                                 started_after=settings.started_after)
        self.dispatcher = Dispatcher(nc, self.slots, self.init.ok, self._on_job, self.logger,
                                     connect_jobs, ensure_consumers)
        self.metrics.config_version.set_function(lambda: self.config_version)
        self.metrics.busy.set_function(lambda: self.slots.running)
        self._apply_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> st.ConfigState:
        return self.follower.state

    @property
    def jobs_done(self) -> int:
        return self.attempts.jobs_done

    def readiness(self) -> dict[str, bool]:
        """What /readyz reports: joined, init script done, NATS connected."""
        return {"joined": self.state == "ready", "init_script_ok": self.init.ok.is_set(),
                "nats_connected": self.nc.is_connected}

    def tags_source(self) -> str:
        if self.settings.env_tags is not None:
            return "env"
        return "group" if self.group is not None else "none"

    def tags(self) -> list[str]:
        """Tags listened to: WORKER_TAGS, or the group's tags; plus dedicated tags."""
        base = list(self.settings.env_tags) if self.settings.env_tags is not None else (
            list(self.applied.tags) if self.applied else [])
        return base + sorted(t for t in self.dedicated_tags if t not in base)

    def status(self) -> WorkerStatus:
        return build_status(
            worker_id=self.id, group=self.group, tags=self.tags(), tags_source=self.tags_source(),
            config_version=self.config_version, current=self.attempts.current,
            init_status=self.init.status, init_error=self.init.error,
            init_output=self.init.output, state=self.state,
            started_at=self.started_at, jobs_done=self.jobs_done, priorities=self.priorities,
            dedicated=self.dedicated_tags, config_applied_at=self.config_applied_at,
            isolation=self.executor.isolation())

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        found = languages.registry()
        self.logger.info("worker_languages", runtimes=found.found, missing=sorted(found.missing),
                         concurrency=self.settings.concurrency)
        for error in found.errors:  # a broken plugin costs its language, not the worker
            self.logger.warning("language_plugin_failed", error=error)
        await bus.wait_streams(self.nc, self.logger)  # workers may not create streams
        self.heartbeat.start(await bus.workers_bucket(self.js))
        await self.cancels.start()
        await self.follower.start()
        async with self._apply_lock:  # a change arriving meanwhile is applied right after
            self.follower.live = True
            await self._apply(first=True)
        self.state = "ready"
        self.heartbeat.now()
        self.dispatcher.start()
        self.logger.info("worker_ready", tags=self.tags(), tags_source=self.tags_source(),
                         config_version=self.config_version)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking jobs, let running ones finish (up to `grace`), then leave the bucket."""
        self.state = "stopping"
        await self.dispatcher.stop()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
            for t in self._tasks:
                t.cancel()
        await self.follower.stop()
        self.init.stop()
        self.cancels.stop()
        self.executor.stop()
        await self.dispatcher.close_links()
        await self.heartbeat.stop()
        self.logger.info("worker_stopped", jobs_done=self.jobs_done)

    def _on_job(self, tag: str, msg: Msg, slot: Slot) -> None:
        """A pulled job: its own task, which owns the slot from here on."""
        task = asyncio.ensure_future(self.attempts.run(tag, msg, slot))
        slot.hand_to(task)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self.dispatcher.holding(msg))  # its connection stays till then

    def _init_changed(self) -> None:
        self.dispatcher.wake.set()
        self.heartbeat.now()

    # --- config and hot reload ---------------------------------------------------------------

    async def _on_config(self) -> None:
        async with self._apply_lock:
            if self.state != "stopping":
                await self._apply()

    async def _apply(self, first: bool = False) -> None:
        """Make the running worker match the folded config; log what changed."""
        new = self.follower.group_config
        old = self.applied
        changes = describe_change(old, new) if not first else []
        self.applied = new
        self.config_version = self.follower.version
        self.priorities = dict(new.priorities) if new else {}
        isolation_changed = self.executor.apply(new)
        self.dedicated_tags = set(self.executor.dedicated_tags)
        await self.dispatcher.set_tags(self.tags(), self.priorities, self.config_version)
        old_script = old.init_script if old else None
        new_script = new.init_script if new else None
        # A new sandbox, network or limits: the script's daemons must not stay in the old one.
        if first or old_script != new_script or (isolation_changed and new_script):
            self.init.schedule(new_script)
        self.config_applied_at = time.time()  # listening to the new tags from here on
        if first and self.group is not None and new is None:
            self.logger.warning(
                "group_not_configured", group=self.group,
                warning=f"group {self.group!r} does not exist in the config: this worker listens"
                        f" to {'WORKER_TAGS only' if self.settings.env_tags is not None else 'no tag'}"
                        f" until it is created (`getoperate group set {self.group} --tags ...`),"
                        " then takes it up without a restart")
        if not first:
            if self.settings.env_tags is not None and any(c.startswith("tags") for c in changes):
                changes.append("tags ignored: WORKER_TAGS takes precedence")
            self.metrics.hot_reloads.inc()
            self.logger.info("hot_reload", config_version=self.config_version, changes=changes,
                             tags=self.tags())
        self.dispatcher.wake.set()
        self.heartbeat.now()


def default_id(group: str | None) -> str:
    host = socket.gethostname().split(".")[0][:32]
    return f"{group or 'tags'}-{host}-{os.getpid()}-{os.urandom(2).hex()}"
