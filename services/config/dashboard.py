"""The "Workers" page served by the config service at `/`, and the one JSON call it makes.

`GET /` is a single self-contained HTML document (inline CSS and vanilla JS, no build step, no
external resource) holding no data: it asks for an admin token (kept in the tab's
sessionStorage), then polls `GET /ui/overview` every 2 s. That endpoint needs the same token as
`GET /groups` and answers in one call: worker groups, live workers (from the GO_WORKERS bucket,
each marked `stale` while it has not applied its group's latest version), waiting jobs per tag,
and the newest config events. Groups carry their limits (set and effective), sandbox and
network; workers their sandbox, network and `sandbox_note`, and the page warns in a banner while
any live worker runs jobs without a sandbox. It also carries the assignable tags and the tag
presets of the reset buttons, so the page can say what a reset removes before it asks. Every
change the page makes is a plain call of the config API (`PUT /groups/{name}`,
`POST /groups/{name}/reset`, `DELETE /groups/{name}`, `POST /tags`, `DELETE /tags/{tag}`), read
back with `GET /events` and `GET /diff`: the page has no write path of its own.

Every piece of data is put in the page with `textContent`/text nodes, never parsed as HTML, and the
document is served with a Content-Security-Policy allowing only its own inline style and script
(by SHA-256 hash) and requests to its own origin.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
from aiohttp import web
from nats import errors as nats_errors

from services.common.openapi import Op
from services.common.http import json_response
from services.common.liveworkers import LiveWorkers
from services.common.queues import waiting_per_tag
from services.config.keys import SERVICE_KEY, TOKENS_KEY
from services.config.service import ConfigService
from services.config.workers_page import CSP, HTML
from shared import state as st
from shared.events import event_type
from shared.history import summarize
from shared.isolation import GroupView, group_view
from shared.jobs import WorkerStatus
from shared.tags import PRESETS, format_tag_spec

RECENT_EVENTS = 20
QUEUE_READ_TIMEOUT = 2.0
WORKERS_FIRST_LOAD = 2.0


class WorkerView(msgspec.Struct, kw_only=True):
    """A live worker as the page shows it; `stale` while `config_version < group_version`."""

    id: str
    group: str | None
    tags: list[str]
    tags_source: str
    config_version: int
    group_version: int | None
    stale: bool
    state: str
    init_status: str
    init_error: str | None
    init_output: str | None = None  # the end of a successful init script's output
    current_job: str | None
    jobs_done: int
    hostname: str
    pid: int
    started_at: float
    heartbeat_at: float
    dedicated: list[str]
    # How its jobs are isolated ("bwrap" or "none") and why not, when it says (shown as text).
    sandbox: str
    network: bool
    sandbox_note: str | None
    runtimes: list[str] = msgspec.field(default_factory=list)  # the languages it can run


class QueueView(msgspec.Struct, kw_only=True):
    """One tag's queue: jobs nobody took yet, jobs taken, who is configured and live to serve it."""

    tag: str
    waiting: int
    running: int
    groups: list[str]
    live_workers: int  # ready, and not held back by a failed init script
    assignable: bool = False  # made assignable (`POST /tags`): users may pick it for scripts
    init_failed: int = 0  # live workers listening to it whose init script failed (they take nothing)


class AssignableView(msgspec.Struct, kw_only=True):
    """An assignable tag as `GET /tags` answers an admin: `spec` in the `POST /tags` syntax."""

    tag: str
    only: list[str]
    exclude: list[str]
    spec: str
    restricted: bool


class EventView(msgspec.Struct, kw_only=True):
    seq: int
    time: str
    actor: str
    reason: str | None
    type: str
    summary: str


class Overview(msgspec.Struct, kw_only=True):
    """`GET /ui/overview`: everything the Workers page shows, in one answer."""

    now: float
    config_seq: int
    published_seq: int
    groups: list[GroupView]
    workers: list[WorkerView]
    queues: list[QueueView]
    events: list[EventView]
    problems: list[str]
    assignable: list[AssignableView] = msgspec.field(default_factory=list)
    # the tags each reset button sets: "default" (all minus native), "native", "all"
    presets: dict[str, list[str]] = msgspec.field(default_factory=dict)


class _Live:
    """The config service's own LiveWorkers, started on the first page load, stopped on cleanup."""

    def __init__(self) -> None:
        self.workers: LiveWorkers | None = None
        self.lock = asyncio.Lock()


LIVE_KEY = web.AppKey("dashboard_live", _Live)


async def _live_workers(app: web.Application, svc: ConfigService) -> LiveWorkers:
    holder = app[LIVE_KEY]
    async with holder.lock:
        if holder.workers is None:
            live = LiveWorkers(svc.js, svc.logger, lambda: svc.state)
            await live.start()
            holder.workers = live
    try:  # the first answer waits (briefly) for the bucket's current entries
        await asyncio.wait_for(holder.workers.ready.wait(), WORKERS_FIRST_LOAD)
    except TimeoutError:
        pass
    return holder.workers


def _worker_view(w: WorkerStatus, groups: dict[str, st.GroupConfig]) -> WorkerView:
    group = groups.get(w.group) if w.group else None
    expected = group.version if group is not None else None
    return WorkerView(
        id=w.id, group=w.group, tags=list(w.tags), tags_source=w.tags_source,
        config_version=w.config_version, group_version=expected,
        stale=expected is not None and w.config_version < expected,
        state=w.state, init_status=w.init_status, init_error=w.init_error,
        init_output=w.init_output,
        current_job=w.current_job, jobs_done=w.jobs_done, hostname=w.hostname, pid=w.pid,
        started_at=w.started_at, heartbeat_at=w.heartbeat_at, dedicated=list(w.dedicated),
        sandbox=w.sandbox, network=w.network, sandbox_note=w.sandbox_note,
        runtimes=list(w.runtimes),
    )


async def overview(request: web.Request) -> web.Response:
    request.app[TOKENS_KEY].admin_actor(request)  # same rule as GET /groups: an admin token
    svc = request.app[SERVICE_KEY]
    state = svc.state
    problems: list[str] = []

    workers: list[WorkerView] = []
    live: LiveWorkers | None = None
    try:
        live = await _live_workers(request.app, svc)
        workers = [_worker_view(w, state.groups) for w in live.all()]
    except (TimeoutError, nats_errors.Error) as exc:
        problems.append(f"live workers unavailable: {str(exc) or type(exc).__name__}")

    counts: dict[str, dict[str, int]] = {}
    try:
        counts = await asyncio.wait_for(waiting_per_tag(svc.js), QUEUE_READ_TIMEOUT)
    except (TimeoutError, nats_errors.Error) as exc:
        problems.append(f"queue counts unavailable: {str(exc) or type(exc).__name__}")
    by_tag = st.groups_by_tag(state)
    # Every tag someone may wait on: with jobs, configured in a group, assignable, or served by a
    # live worker (WORKER_TAGS workers have tags no group names).
    served = {t for w in workers for t in w.tags}
    # A template (`normal-$workspace`, `$args[x]`) is resolved per job: nobody waits on it as such.
    assignable = {t for t in state.assignable if "$" not in t}
    queues = []
    for tag in set(counts) | set(by_tag) | assignable | served:
        listening = live.serving(tag) if live else []
        failed = sum(1 for w in listening if w.init_status == "failed")
        queues.append(QueueView(
            tag=tag, waiting=counts.get(tag, {}).get("waiting", 0),
            running=counts.get(tag, {}).get("running", 0), groups=list(by_tag.get(tag, ())),
            live_workers=len(listening) - failed, assignable=tag in state.assignable,
            init_failed=failed))
    queues.sort(key=lambda q: (q.waiting == 0 and q.running == 0, q.tag))

    records = await svc.log.call(svc.log.query, since_seq=max(0, state.seq - RECENT_EVENTS),
                                 limit=RECENT_EVENTS)
    events = [EventView(seq=r.seq, time=r.time, actor=r.actor, reason=r.reason,
                        type=event_type(r.event), summary=summarize(r.event))
              for r in reversed(records)]

    return json_response(Overview(
        now=time.time(), config_seq=state.seq, published_seq=svc.outbox.published_seq,
        groups=[group_view(g) for g in sorted(state.groups.values(), key=lambda g: g.name)],
        workers=workers,
        queues=queues, events=events, problems=problems,
        assignable=[_assignable_view(t) for _, t in sorted(state.assignable.items())],
        presets={name: list(tags) for name, tags in PRESETS.items()},
    ))


def _assignable_view(t: st.AssignableTag) -> AssignableView:
    return AssignableView(tag=t.tag, only=list(t.only), exclude=list(t.exclude),
                          spec=format_tag_spec(t.tag, t.only, t.exclude),
                          restricted=bool(t.only or t.exclude))


async def _stop_live(app: web.Application) -> None:
    holder = app[LIVE_KEY]
    if holder.workers is not None:
        await holder.workers.stop()
        holder.workers = None


_PAGE = HTML.encode()
_PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def page(request: web.Request) -> web.Response:
    return web.Response(body=_PAGE, content_type="text/html", charset="utf-8",
                        headers=_PAGE_HEADERS)


DASHBOARD_OPS = [
    Op(method="GET", path="/", summary="the Workers page (HTML; no token: it holds no data)",
       auth=False, handler=page),
    Op(method="GET", path="/ui/overview", summary="the Workers page's data (admin token)",
       response=Overview, handler=overview),
]


def add_dashboard(app: web.Application) -> None:
    """What the page's operations (DASHBOARD_OPS) share: the live-workers view, stopped with
    the app."""
    app[LIVE_KEY] = _Live()
    app.on_cleanup.append(_stop_live)
