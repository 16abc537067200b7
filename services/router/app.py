"""The router's HTTP API: submit jobs, read or wait for a job, list live workers."""

from __future__ import annotations

from aiohttp import web

from services.common.http import (
    MAX_BODY_BYTES, TokenCheck, error_middleware, json_response, query_float, read_body,
)
from services.router.service import RouterService
from shared.jobs import JobSubmit

SERVICE_KEY = web.AppKey("service", RouterService)
TOKENS_KEY = web.AppKey("tokens", TokenCheck)
MAX_WAIT = 300.0


async def submit_job(request: web.Request) -> web.Response:
    request.app[TOKENS_KEY].actor(request)
    answer = await request.app[SERVICE_KEY].submit(await read_body(request, JobSubmit))
    return json_response(answer, status=201)


async def get_job(request: web.Request) -> web.Response:
    request.app[TOKENS_KEY].actor(request)
    wait = request.query.get("wait", "") in ("1", "true", "yes")
    timeout = min(max(query_float(request, "timeout", 30.0), 0.0), MAX_WAIT)
    wait = wait and timeout > 0  # wait=1&timeout=0 is a plain read
    view = await request.app[SERVICE_KEY].job(
        request.match_info["id"], wait=wait, timeout=timeout if wait else 5.0
    )
    return json_response(view)


async def list_workers(request: web.Request) -> web.Response:
    request.app[TOKENS_KEY].actor(request)
    return json_response(request.app[SERVICE_KEY].workers.all())


async def health(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    return json_response(
        {"ok": True, "config_seq": svc.config.seq, "nats_connected": svc.nc.is_connected}
    )


def create_app(service: RouterService, tokens: TokenCheck) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(service.logger)], client_max_size=MAX_BODY_BYTES
    )
    app[SERVICE_KEY] = service
    app[TOKENS_KEY] = tokens
    app.router.add_get("/healthz", health)
    app.router.add_post("/jobs", submit_job)
    app.router.add_get("/jobs/{id}", get_job)
    app.router.add_get("/workers", list_workers)
    return app
