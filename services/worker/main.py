"""`getoperate worker`: settings from the environment, NATS, signals; the Worker does the rest."""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from services.common import bus
from services.common.log import Logger
from services.common import openapi
from services.common.metrics import metrics_handler, readiness
from services.common.openapi import Op
from services.common.runtime import env, run, serve_http, stop_on_signals
from services.worker.settings import settings_from_env
from services.worker.worker import Worker


async def amain() -> None:
    settings = settings_from_env()
    logger = Logger("worker")
    stop = stop_on_signals()
    nc = await bus.connect(env("NATS_URL", bus.DEFAULT_NATS_URL), "getoperate-worker", logger, role="worker")
    worker = Worker(nc, logger, settings, worker_id=os.environ.get("WORKER_ID") or None)
    runner = None
    if os.environ.get("METRICS_PORT"):  # before start(): probes answer "not ready" while joining
        runner = await serve_http(probe_app(worker), env("HTTP_HOST", "127.0.0.1"),
                                  int(env("METRICS_PORT", "0")), logger)
    await worker.start()
    await stop.wait()
    await worker.stop()
    if runner is not None:
        await runner.cleanup()
    await nc.drain()


def probe_app(worker: Worker) -> web.Application:
    """METRICS_PORT: /metrics for Prometheus, /healthz and /readyz for orchestrators' probes."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "worker": worker.id, "state": worker.state})

    async def ready(request: web.Request) -> web.Response:
        return readiness(worker.readiness())

    app = web.Application()
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", ready)
    app.router.add_get("/metrics", metrics_handler(worker.metrics.registry))
    openapi.serve(app, "getOperate worker (METRICS_PORT)", PROBE_OPS)
    return app


PROBE_OPS = [
    Op(method="GET", path="/healthz", summary="liveness: the process answers", auth=False),
    *openapi.probe_ops("joined, init script ok, NATS connected"),
]


def main() -> int:
    return run(amain)
