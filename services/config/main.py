"""`getoperate config`: wiring of the config service (settings, NATS, HTTP, signals)."""

from __future__ import annotations

from services.common import bus, natsauth
from services.common.http import TokenCheck
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
from services.config.app import create_app
from services.config.authority import Authority
from services.config.locks import Locker
from services.config.service import ConfigService


async def amain() -> None:
    logger = Logger("config")
    directory = data_dir()
    token = admin_token(directory, create=True)
    assert token is not None
    stop = stop_on_signals()
    nc = await bus.connect(nats_url(), "getoperate-config", logger, role="config")
    service = ConfigService(directory, nc, logger)
    await service.start()
    secret = natsauth.load_secret(directory)
    authority = Authority(nc, secret, lambda: service.state, logger) if secret else None
    if authority is not None:
        await authority.start()  # from here on, the other services can connect
    else:
        logger.warning("nats_authority_off", reason=f"no {natsauth.SECRET_ENV} and no"
                       f" {natsauth.SECRET_FILE} in the data dir: only a nats-server without"
                       " auth_callout will take the other services' connections")
    locker = Locker(service, nc, token, logger)
    service.listeners.append(locker.notice)
    locker.start()
    runner = await serve_http(
        create_app(service, TokenCheck(token, lambda: service.state)), env("HTTP_HOST", "127.0.0.1"),
        int(env("CONFIG_PORT", "8001")), logger,
    )
    await stop.wait()
    logger.info("stopping")
    await runner.cleanup()
    await locker.stop()
    if authority is not None:
        await authority.stop()
    await service.stop()
    await nc.drain()


def main() -> int:
    return run(amain)
