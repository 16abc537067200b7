"""`getoperate worker`: settings from the environment, NATS, signals; the Worker does the rest."""

from __future__ import annotations

import asyncio
import ctypes
import os

from aiohttp import web
from nats.aio.client import Client as NATS

from services.common import bus, natsauth, openapi
from services.common.log import Logger
from services.common.metrics import metrics_handler, readiness
from services.common.openapi import Op
from services.common.runtime import env, nats_url, run, serve_http, stop_on_signals, until_stopped
from services.worker import sandbox
from services.worker.settings import settings_from_env
from services.worker.worker import Worker, default_id
from shared.errors import InvalidInput


async def amain() -> None:
    settings = settings_from_env()
    if settings.sandbox == "bwrap" and (why := sandbox.probe()):
        said = "JOB_SANDBOX=bwrap" if os.environ.get("JOB_SANDBOX") else \
            "JOB_SANDBOX=bwrap (the default)"
        raise InvalidInput(f"{said} but {why}. Install bubblewrap, or give the container what"
                           " it needs (docs/production.md, Sandboxed workers in containers), or"
                           " set JOB_SANDBOX=none to run jobs without isolation (docs/security.md"
                           " says what that gives up)", field="JOB_SANDBOX")
    guard_secrets()
    logger = Logger("worker")
    stop = stop_on_signals()
    url = nats_url()
    worker_id = os.environ.get("WORKER_ID") or default_id(settings.group)
    credentials = natsauth.credentials_for(settings.nats_user)  # read once: dropped below
    opened: list[NATS] = []

    async def connect_jobs(seq: int) -> NATS:
        """The connection that pulls and acks jobs, with the rights of the tags of config
        sequence `seq` (services/worker/dispatcher.py opens one per change of tags)."""
        return await bus.connect(url, "getoperate-worker-jobs", logger, role=settings.nats_user,
                                 credentials=credentials, attempts=20,
                                 declare={"worker": worker_id, "part": "jobs", "seq": str(seq)})

    async def starting() -> tuple[Worker, web.AppRunner | None]:
        nc = await bus.connect(url, "getoperate-worker", logger, role=settings.nats_user,
                               credentials=credentials,
                               declare={"worker": worker_id, "part": "control"})
        opened.append(nc)
        drop_secrets()
        # Without credentials NATS has no auth (and no authority to create the tag consumers).
        worker = Worker(nc, logger, settings, worker_id=worker_id, connect_jobs=connect_jobs,
                        ensure_consumers=credentials[0] is None)
        runner = None
        if os.environ.get("METRICS_PORT"):  # before start(): probes say "not ready" meanwhile
            runner = await serve_http(probe_app(worker), env("HTTP_HOST", "127.0.0.1"),
                                      int(env("METRICS_PORT", "0")), logger)
        try:
            await worker.start()
        except BaseException:
            worker.executor.stop()  # no init daemon or warm process may outlive a cut start
            raise
        return worker, runner

    logger.info("worker_starting", nats=url, group=settings.group, worker=worker_id)
    started = await until_stopped(stop, starting())
    if started is None:  # a signal while NATS was unreachable, or while joining
        logger.info("stopped_before_ready", nats=url)
        for nc in opened:
            await _closed(nc)
        return
    worker, runner = started
    await stop.wait()
    await worker.stop()
    if runner is not None:
        await runner.cleanup()
    await _closed(opened[0], drain=True)


async def _closed(nc: NATS, drain: bool = False) -> None:
    """Close a connection without waiting long for a NATS that may be gone."""
    try:
        await asyncio.wait_for(nc.drain() if drain else nc.close(), 5)
    except Exception:  # a timeout, or gone already: nothing left to flush
        pass


# Read once at start; no job may find them in the worker's environment afterwards.
SECRET_VARS = ("NATS_PASSWORD", "NATS_TOKEN", "NATS_USER", "GETOPERATE_ADMIN_TOKEN",
               "GETOPERATE_TOKEN")


def guard_secrets() -> None:
    """Make this process non-dumpable: other users' processes (every job runs as one) cannot
    read its /proc environ, memory or file descriptors, nor attach a debugger to it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


PR_SET_DUMPABLE = 4


def drop_secrets() -> None:
    """The NATS connection holds what it needs: drop credentials from the environment, so no
    child process inherits them by accident."""
    for name in SECRET_VARS:
        os.environ.pop(name, None)


def probe_app(worker: Worker) -> web.Application:
    """METRICS_PORT: /metrics for Prometheus, /healthz and /readyz for orchestrators' probes."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "worker": worker.id, "state": worker.state})

    async def ready(request: web.Request) -> web.Response:
        return readiness(worker.readiness())

    app = web.Application()
    openapi.mount(app, "getOperate worker (METRICS_PORT)", PROBE_OPS, {
        ("GET", "/healthz"): health, ("GET", "/readyz"): ready,
        ("GET", "/metrics"): metrics_handler(worker.metrics.registry)})
    return app


PROBE_OPS = [  # their handlers close over the worker: probe_app gives them to mount
    Op(method="GET", path="/healthz", summary="liveness: the process answers", auth=False),
    *openapi.probe_ops("joined, init script ok, NATS connected"),
]


def main() -> int:
    return run(amain)
