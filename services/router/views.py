"""What the router's answers show a workspace token: its own work and the tags open to it.

An admin token sees everything. A workspace token is shown the tags it may see
(shared/tagaccess.visible_to: the system tags, the assignable tags open to it, its own dedicated
and deployed tags), never another workspace's name, restricted or dedicated tags, job ids or
init script output. `GET /workers`: the workers serving such a tag, with only those tags, the
current job only when it is the workspace's own, no init error. `/metrics`: the series of those
tags, none naming a worker or a group. A scrape without a token is the operator's
(docs/security.md).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Callable

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared import subjects
from shared.errors import InvalidInput
from shared.identity import Identity
from services.router.history import Genuine
from shared.jobs import JobQueued, WorkerStatus
from shared.state import ConfigState
from shared.tagaccess import visible_to

Labels = dict[str, str]
# Labels that name the operator's machines and groups, not any workspace's work.
_OPERATOR_LABELS = frozenset({"worker", "group"})


class JobWorkspaces:
    """job id -> workspace, from the job's first event (the router's job.queued, written before
    the job is queued). Kept for the last `size` ids: `GET /workers` asks for the same running
    jobs again and again."""

    def __init__(self, js: JetStreamContext, genuine: Genuine, size: int = 4096) -> None:
        self.js = js
        self.genuine = genuine
        self.size = size
        self._known: OrderedDict[str, str] = OrderedDict()

    async def of(self, job_id: str) -> str | None:
        """The job's workspace; None (not kept: it may be written a moment later) when unknown."""
        if job_id in self._known:
            return self._known[job_id]
        workspace = await self._read(job_id)
        if workspace is not None:
            self._known[job_id] = workspace
            while len(self._known) > self.size:
                self._known.popitem(last=False)
        return workspace

    async def _read(self, job_id: str) -> str | None:
        try:
            raw = await self.js.get_msg(subjects.JOB_EVENTS_STREAM, seq=1, next=True,
                                        subject=subjects.job_events_subject(job_id))
        except (NotFoundError, InvalidInput):
            return None
        first = self.genuine.event(job_id, raw.data or b"", raw.headers)
        return first.workspace if isinstance(first, JobQueued) else None


def worker_view(w: WorkerStatus, visible: Callable[[str], bool], own_job: bool) -> WorkerStatus:
    """`w` as a workspace token sees it (the caller has checked it serves a visible tag)."""
    return msgspec.structs.replace(
        w, tags=[t for t in w.tags if visible(t)], dedicated=[t for t in w.dedicated if visible(t)],
        priorities={t: p for t, p in w.priorities.items() if visible(t)},
        current_job=w.current_job if own_job else None, init_error=None, init_output=None)


async def workers_for(who: Identity, workers: list[WorkerStatus], config: ConfigState,
                      jobs: JobWorkspaces) -> list[WorkerStatus]:
    """The live workers `who` may see, as it may see them."""
    if who.admin:
        return workers
    assert who.workspace is not None
    visible = visible_to(config, who.workspace)
    shown = [w for w in workers if any(visible(t) for t in w.tags)]
    owners = await asyncio.gather(*(jobs.of(w.current_job) for w in shown if w.current_job))
    own = {job for job, ws in zip((w.current_job for w in shown if w.current_job), owners)
           if ws == who.workspace}
    return [worker_view(w, visible, w.current_job in own) for w in shown]


def series_filter(who: Identity | None, config: ConfigState) -> Callable[[Labels], bool] | None:
    """Which /metrics series `who` may read: all (None) for an admin or a scrape without a
    token; for a workspace token, those whose `tag` it may see and that name no worker or group."""
    if who is None or who.admin:
        return None
    assert who.workspace is not None
    visible = visible_to(config, who.workspace)

    def keep(labels: Labels) -> bool:
        if _OPERATOR_LABELS & labels.keys():
            return False
        tag = labels.get("tag")
        return tag is None or visible(tag)

    return keep
