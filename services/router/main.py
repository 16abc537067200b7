"""`getoperate router`: wiring of the router service (settings, NATS, HTTP, signals)."""

from __future__ import annotations

from services.common import bus
from services.common.log import Logger
from services.common.runtime import (
    admin_token,
    data_dir,
    env,
    nats_url,
    run,
    serve_http,
    stop_on_signals,
)
from services.common.signingkeys import load_verifier
from services.router.app import create_app
from services.router.keys import router_key
from services.router.service import RouterService


async def amain() -> None:
    logger = Logger("router")
    token = admin_token(data_dir(), create=True)
    assert token is not None
    verifier = load_verifier()  # before anything else: no public key, no start
    key = router_key(data_dir())  # a bad GETOPERATE_ROUTER_KEY stops us before NATS
    stop = stop_on_signals()
    nc = await bus.connect(nats_url(), "getoperate-router", logger, role="router")
    service = RouterService(nc, logger, admin_token=token, key=key,
                            require_worker=env("ROUTER_REQUIRE_WORKER", "0") in ("1", "true", "yes"))
    await service.start(verifier)
    runner = await serve_http(
        create_app(service, service.tokens), env("HTTP_HOST", "127.0.0.1"),
        int(env("ROUTER_PORT", "8002")), logger,
    )
    await stop.wait()
    logger.info("stopping")
    await runner.cleanup()
    await service.stop()
    await nc.drain()


def main() -> int:
    return run(amain)
