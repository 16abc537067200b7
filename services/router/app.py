"""The router's HTTP API: submit jobs, read or wait for a job, list live workers."""

from __future__ import annotations

from aiohttp import web

from services.common.http import (
    MAX_BODY_BYTES, TokenCheck, error_middleware, json_response, query_float, query_range, read_body,
)
from services.router.history import not_found, recent_jobs
from services.common.metrics import SeriesFilter, metrics_handler, readiness
from services.router import views
from services.router.service import MAX_WAIT, RouterService, read_batch
from shared import idempotency
from shared.codec import decode
from shared.identity import authorize_submit
from services.common import openapi
from services.common.openapi import Op
from shared.jobs import BatchAnswer, JobBatch, JobSubmit, JobView, SubmitAnswer, WorkerStatus

SERVICE_KEY = web.AppKey("service", RouterService)
TOKENS_KEY = web.AppKey("tokens", TokenCheck)
JOBS_KEY = web.AppKey("job_workspaces", views.JobWorkspaces)


async def submit_job(request: web.Request) -> web.Response:
    who = request.app[TOKENS_KEY].identity(request)
    sub = await read_body(request, JobSubmit)
    given = who.admin or "workspace" in decode(await request.read(), dict)
    sub = authorize_submit(who, sub, workspace_given=given)
    answer = await request.app[SERVICE_KEY].submit(
        sub, who, key=request.headers.get(idempotency.HEADER))
    response = json_response(answer, status=201)
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def submit_batch(request: web.Request) -> web.Response:
    """Many submissions in one request, each answered on its own (shared/jobs.py: JobBatch)."""
    who = request.app[TOKENS_KEY].identity(request)
    items = read_batch(await request.read())
    answer = await request.app[SERVICE_KEY].submit_batch(
        items, who, request.headers.get(idempotency.HEADER))
    return json_response(answer)


async def get_job(request: web.Request) -> web.Response:
    who = request.app[TOKENS_KEY].identity(request)
    wait = request.query.get("wait", "") in ("1", "true", "yes")
    timeout = min(max(query_float(request, "timeout", 30.0), 0.0), MAX_WAIT)
    wait = wait and timeout > 0  # wait=1&timeout=0 is a plain read
    job_id = request.match_info["id"]
    record = await request.app[SERVICE_KEY].read(  # never waits on another workspace's job
        job_id, reader=who.name, workspace=None if who.admin else who.workspace, wait=wait,
        timeout=timeout)
    return json_response(record.view)


async def cancel_job(request: web.Request) -> web.Response:
    who = request.app[TOKENS_KEY].identity(request)
    job_id = request.match_info["id"]
    svc = request.app[SERVICE_KEY]
    if not who.admin and (await svc.job(job_id)).workspace != who.workspace:
        raise not_found(job_id)
    return json_response(await svc.cancel(job_id, by=who.name))


async def list_jobs(request: web.Request) -> web.Response:
    """Recent jobs from the job history stream, filtered by tag, group, workspace or status."""
    who = request.app[TOKENS_KEY].identity(request)
    workspace = request.query.get("workspace") if who.admin else who.workspace
    limit = query_range(request, "limit", 100, 1, 1000)
    svc = request.app[SERVICE_KEY]
    jobs = await recent_jobs(
        svc.js, svc.genuine, tag=request.query.get("tag"), group=request.query.get("group"),
        workspace=workspace, status=request.query.get("status"), limit=limit,
    )
    return json_response(jobs)


async def list_workers(request: web.Request) -> web.Response:
    """Live workers; a workspace token sees those serving its tags, as services/router/views.py
    says."""
    who = request.app[TOKENS_KEY].identity(request)
    svc = request.app[SERVICE_KEY]
    if not svc.nc.is_connected:  # heartbeats come through NATS: an empty list would be a lie
        return json_response({"error": "unavailable", "message": "the router is not connected"
                              " to NATS, so it cannot know which workers are live; retry shortly"},
                             status=503)
    return json_response(await views.workers_for(who, svc.workers.all(), svc.config,
                                                 request.app[JOBS_KEY]))


def _series(request: web.Request) -> SeriesFilter | None:
    """/metrics: a scrape with no token reads everything (the operator's, docs/security.md); a
    token must be valid, and a workspace token reads only its tags' series."""
    header = request.headers.get("Authorization")
    who = request.app[TOKENS_KEY].identify(header) if header is not None else None
    return views.series_filter(who, request.app[SERVICE_KEY].config)


async def health(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    return json_response(
        {"ok": True, "config_seq": svc.config.seq, "nats_connected": svc.nc.is_connected}
    )


async def ready(request: web.Request) -> web.Response:
    """Ready: config followed, NATS connected, and JetStream taking this router's jobs (a
    refusal for storage makes it unready until there is room again: services/common/storage.py)."""
    svc = request.app[SERVICE_KEY]
    full = await svc.storage.full(svc.js) if svc.nc.is_connected else {}
    return readiness({"config_followed": svc.config_ready.is_set(),
                      "nats_connected": svc.nc.is_connected, "storage_ok": not full},
                     {"storage_full": full} if full else None)


OPS = [
    Op(method="GET", path="/healthz", summary="liveness and config position", auth=False,
       handler=health),
    *openapi.probe_ops("config followed, NATS connected", ready),
    Op(method="POST", path="/jobs", summary="submit a job", body=JobSubmit, response=SubmitAnswer,
       status=201, headers={idempotency.HEADER: "1..255 printable ASCII characters: a repeat"
                            " within the job history's retention returns the first job"},
       errors={429: "too many submissions at once", 503: "NATS unavailable (nothing queued),"
               " or outcome_unknown: the body names the job id to look up",
               507: "storage_full: JetStream has no room; nothing queued"}, handler=submit_job),
    Op(method="POST", path="/jobs/batch", summary="submit many jobs, each answered on its own",
       body=JobBatch, response=BatchAnswer,
       headers={idempotency.HEADER: "K: job i is submitted under key K:i"}, handler=submit_batch),
    Op(method="GET", path="/jobs", summary="recent jobs", response=list[JobView],
       query={"tag": "", "group": "", "workspace": "", "status": "", "limit": "1..1000"},
       handler=list_jobs),
    Op(method="GET", path="/jobs/{id}", summary="a job, optionally waiting for it to end",
       response=JobView, query={"wait": "1 to wait", "timeout": "seconds to wait (0..300)"},
       handler=get_job),
    Op(method="POST", path="/jobs/{id}/cancel", summary="cancel a job", response=JobView,
       handler=cancel_job),
    Op(method="GET", path="/workers", summary="live workers", response=list[WorkerStatus],
       handler=list_workers),
]


def create_app(service: RouterService, tokens: TokenCheck) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(service.logger)], client_max_size=MAX_BODY_BYTES
    )
    app[SERVICE_KEY] = service
    app[TOKENS_KEY] = tokens
    app[JOBS_KEY] = views.JobWorkspaces(service.js, service.genuine)
    openapi.mount(app, "getOperate router", OPS, {("GET", "/metrics"): metrics_handler(
        service.metrics.registry, service.refresh_metrics, _series)})
    return app
