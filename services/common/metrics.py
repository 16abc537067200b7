"""Prometheus metrics of each service (names prefixed `getoperate_`), and the `/metrics` handler.

Each service instance owns its registry (not the process-global one), so tests can run several
services in one process and a scrape shows only that service. Gauges that describe NATS state
(waiting jobs per tag, live workers) are refreshed when scraped, not polled in the background.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest,
)
from prometheus_client.metrics_core import Metric

from shared.jobs import WorkerStatus

INIT_STATES = ["none", "running", "ok", "failed"]
# Job durations: from a warm no-op (sub-millisecond) to the default 300 s timeout.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, float("inf"))


class ConfigMetrics:
    def __init__(self, seq: Callable[[], int], published_seq: Callable[[], int]):
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("getoperate_config_seq", "Sequence of the last config event in the log",
              registry=r).set_function(seq)
        Gauge("getoperate_config_published_seq", "Sequence of the last config event on the stream",
              registry=r).set_function(published_seq)
        Gauge("getoperate_config_unpublished", "Config events stored but not yet on the stream "
              "(NATS away)", registry=r).set_function(lambda: max(seq() - published_seq(), 0))
        self.events = Counter("getoperate_config_events", "Config events appended, by type",
                              ["type"], registry=r)
        self.writing = Gauge("getoperate_config_writes_waiting", "Config changes waiting for "
                             "their append to the SQLite log (a slow or locked disk)", registry=r)


class RouterMetrics:
    def __init__(self, config_seq: Callable[[], int]):
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("getoperate_router_config_seq", "Config sequence the router has folded",
              registry=r).set_function(config_seq)
        self.routed = Counter("getoperate_jobs_routed", "Jobs routed and durably queued, by tag",
                              ["tag"], registry=r)
        self.refused = Counter("getoperate_jobs_refused", "Submissions refused, by error code",
                               ["code"], registry=r)
        self.waiting = Gauge("getoperate_jobs_waiting", "Jobs queued on a tag that no worker has "
                             "taken yet (JetStream consumer info)", ["tag"], registry=r)
        self.running = Gauge("getoperate_jobs_running", "Jobs taken by a worker and not yet "
                             "acknowledged, by tag (JetStream consumer info)", ["tag"], registry=r)
        self.unserved = Gauge("getoperate_jobs_unserved", "Jobs waiting on a tag that no group "
                              "is configured with and no live worker listens to: they wait "
                              "until one does (move them: getoperate jobs requeue)", ["tag"],
                              registry=r)
        self.workers = Gauge("getoperate_workers_live", "Live workers, by group",
                             ["group"], registry=r)
        self.worker_config = Gauge("getoperate_worker_config_version", "Config version each live "
                                   "worker has applied (from its heartbeat)",
                                   ["worker", "group"], registry=r)
        self.worker_init = Gauge("getoperate_worker_init_script_failed", "1 when a live worker's "
                                 "init script failed (from its heartbeat)", ["worker", "group"],
                                 registry=r)
        self.replayed = Counter("getoperate_jobs_replayed", "Submissions that repeated an "
                                "idempotency key and were answered with the job it first queued",
                                registry=r)
        self.storage_full = Gauge("getoperate_storage_full", "1 while JetStream refuses this "
                                  "router's writes to a stream for want of storage",
                                  ["stream"], registry=r)

    def observe_storage(self, full: dict[str, str]) -> None:
        self.storage_full.clear()
        for stream in full:
            self.storage_full.labels(stream).set(1)

    def observe_queues(self, queues: dict[str, dict[str, int]],
                       served: set[str] | None = None) -> None:
        """`served`: the tags some group is configured with or a live worker listens to."""
        self.waiting.clear()
        self.running.clear()
        self.unserved.clear()
        for tag, counts in queues.items():
            self.waiting.labels(tag).set(counts["waiting"])
            self.running.labels(tag).set(counts["running"])
            if served is not None and tag not in served and counts["waiting"]:
                self.unserved.labels(tag).set(counts["waiting"])

    def observe_workers(self, workers: list[WorkerStatus]) -> None:
        """Replace the per-worker series with the live set, so a gone worker's series ends."""
        for gauge in (self.workers, self.worker_config, self.worker_init):
            gauge.clear()
        per_group: dict[str, int] = {}
        for w in workers:
            group = w.group or ""
            per_group[group] = per_group.get(group, 0) + 1
            self.worker_config.labels(w.id, group).set(w.config_version)
            self.worker_init.labels(w.id, group).set(1 if w.init_status == "failed" else 0)
        for group, n in per_group.items():
            self.workers.labels(group).set(n)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.finished = Counter("getoperate_jobs_finished", "Jobs this worker finished, by tag and "
                                "status (success, failure, cancelled)", ["tag", "status"],
                                registry=r)
        self.duration = Histogram("getoperate_job_duration_seconds", "Time running a job, by tag",
                                  ["tag"], buckets=DURATION_BUCKETS, registry=r)
        self.redeliveries = Counter("getoperate_job_redeliveries", "Jobs received again after an "
                                    "earlier attempt lost its worker, by tag", ["tag"], registry=r)
        self.dead_letters = Counter("getoperate_jobs_dead_lettered", "Jobs parked on GO_DEAD, by "
                                    "tag", ["tag"], registry=r)
        self.hot_reloads = Counter("getoperate_hot_reloads", "Config changes applied without a "
                                   "restart", registry=r)
        self.config_version = Gauge("getoperate_worker_config_version", "Config version this "
                                    "worker applied", registry=r)
        self.init_status = Enum("getoperate_init_script_status", "State of this worker's init "
                                "script", states=INIT_STATES, registry=r)
        self.busy = Gauge("getoperate_worker_busy_slots", "Job slots in use", registry=r)


SeriesFilter = Callable[[dict[str, str]], bool]


class _Filtered:
    """A registry's metrics with only the series `keep` accepts (a family left empty is still
    listed, so a dashboard sees the metric exists)."""

    def __init__(self, registry: CollectorRegistry, keep: SeriesFilter) -> None:
        self.registry = registry
        self.keep = keep

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            out.samples = [s for s in family.samples if self.keep(s.labels)]
            yield out


def metrics_handler(registry: CollectorRegistry,
                    refresh: Callable[[], Awaitable[None]] | None = None,
                    series: Callable[[web.Request], SeriesFilter | None] | None = None,
                    ) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /metrics: refresh the NATS-derived gauges (bounded), then the text exposition.
    `series` picks what the request may read (None: everything); it may refuse the request."""

    async def handler(request: web.Request) -> web.Response:
        keep = series(request) if series is not None else None  # before any work: it may refuse
        if refresh is not None:
            try:
                await asyncio.wait_for(refresh(), 5.0)
            except Exception:  # NATS away: serve what we have, a scrape must not fail
                pass
        body = generate_latest(registry if keep is None else _Filtered(registry, keep))  # type: ignore[arg-type]
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler


def readiness(checks: dict[str, bool], info: dict[str, object] | None = None) -> web.Response:
    """GET /readyz: 200 when every check holds, else 503 naming the failing ones. `info` is
    reported but never makes the service unready."""
    failing = sorted(name for name, ok in checks.items() if not ok)
    body: dict[str, object] = {"ready": not failing, "checks": checks, **(info or {})}
    if failing:
        body["message"] = "not ready: " + ", ".join(failing)
    return web.json_response(body, status=503 if failing else 200)
