"""NATS clients the integration tests share: the credentials `up` wrote, a connection as one of
its users, a CONNECT written by hand, and a job read as its holder reads it."""

from __future__ import annotations

import json
import socket
from typing import Any

import nats

from services.common import natsauth
from shared import seals, subjects
from tests.integration.conftest import Suite


def creds(s: Suite) -> dict[str, str]:
    return json.loads((s.root / ".getoperate" / "nats-credentials.json").read_text())  # type: ignore[no-any-return]


async def connect_as(s: Suite, role: str) -> Any:
    """A connection with the credentials `up` wrote for `role` (`worker`: a `default` group
    worker's control connection), declaring its inbox as the authority asks."""
    user, declare = role, {}
    if role == "worker":
        user = natsauth.worker_user("default")
        declare = {"worker": "probe-identity", "part": "control"}
    return await nats.connect(s.plain_nats_url, user=user, password=creds(s)[user],
                              allow_reconnect=False, max_reconnect_attempts=0,
                              **natsauth.connection_options("probe", user, **declare))


def raw_connect(s: Suite, **fields: str) -> tuple[dict[str, Any], str]:
    """CONNECT by hand (a refused nats-py client leaves a transport to the garbage collector):
    the server's INFO and its answer to CONNECT `fields` then PING."""
    with socket.create_connection(("127.0.0.1", s.base), timeout=5) as sock:
        info = sock.recv(4096).decode()
        assert info.startswith("INFO ")
        connect = {"verbose": False, **fields}
        sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        return json.loads(info[5:]), sock.recv(4096).decode()


def hold_read(s: Suite, job_id: str) -> dict[str, Any]:
    """The job as its holder reads it over `go.router.job`: always from the stream."""
    key = (s.root / ".getoperate" / "router.key").read_text().strip().encode()

    async def read() -> dict[str, Any]:
        nc = await nats.connect(s.nats_url)
        try:
            reply = await nc.request(
                subjects.JOB_SUBJECT, json.dumps({"id": job_id, "history": True}).encode(),
                timeout=10, headers={subjects.HOLD_HEADER: seals.hold_key(key, job_id)})
            return json.loads(reply.data)  # type: ignore[no-any-return]
        finally:
            await nc.close()

    import asyncio
    return asyncio.run(read())
