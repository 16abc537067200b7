"""What authorization costs: jobs routed per second with NATS authorization on, against the same
services on a nats-server without any, in the same run.

Both start the same processes the same way (a nats-server, the config service, one router, their
logs to files; no workers), differing only in authorization. "on" is as shipped: nats-server's
config has the `config` user and the auth callout, the authority authorizes each connection, the
router and the clients (the `client` user) have their own inboxes and allow lists, which
nats-server checks on every publish and subscription. "off" has no authorization block at all
(every connection may do anything). Submissions carry the admin token in both, so the router's
own checks are the same work. Clients and load as bench/router.py.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


from bench.router import CLIENTS, routed
from bench.suite import ROOT, progress
from services.common import natsauth
from services.common.natsserver import NatsServer, free_port

TAG = "bench-authz"


def _client_connections(url: str, user: str | None, password: str | None) -> list[dict[str, Any]]:
    out = []
    for _ in range(CLIENTS):
        kw: dict[str, Any] = {"servers": [url], **natsauth.connection_options("bench", user)}
        if user:
            kw.update(user=user, password=password)
        out.append(kw)
    return out


class Services:
    """The config service and a router on their own nats-server, with or without authorization."""

    def __init__(self, auth: bool) -> None:
        self.auth = auth
        self.dir = Path(tempfile.mkdtemp(prefix="getoperate-bench-authz-"))
        self.token = secrets.token_hex(16)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.creds: dict[str, str] = {}

    def __enter__(self) -> "Services":
        data = self.dir / "data"
        block = None
        if self.auth:
            self.creds = natsauth.load_or_create(data)
            secret = natsauth.load_secret(data)
            assert secret is not None
            block = natsauth.config_block(natsauth.password_hashes(data, self.creds),
                                          natsauth.issuer(secret).public)
        self.nats = NatsServer(self.dir / "nats", auth=block).start()
        cport, rport = free_port(), free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("WORKER_", "GETOPERATE_", "NATS_USER", "NATS_PASSWORD"))}
        env.update({"PYTHONPATH": str(ROOT), "NATS_URL": self.nats.url,
                    "GETOPERATE_DATA_DIR": str(data), "CONFIG_PORT": str(cport),
                    "ROUTER_PORT": str(rport), "GETOPERATE_ADMIN_TOKEN": self.token,
                    "HTTP_HOST": "127.0.0.1"})
        if os.environ.get("GETOPERATE_NATS_SYNC"):
            env["GETOPERATE_NATS_SYNC"] = os.environ["GETOPERATE_NATS_SYNC"]
        for name, wait_for in (("config", "config_ready"), ("router", "router_ready")):
            log = open(self.dir / f"{name}.log", "wb")
            self.procs.append(subprocess.Popen([sys.executable, "-m", "cli.main", name],
                                               cwd=self.dir, env=env, stdout=log,
                                               stderr=subprocess.STDOUT))
            deadline = time.monotonic() + 60
            while wait_for.encode() not in (self.dir / f"{name}.log").read_bytes():
                if time.monotonic() > deadline or self.procs[-1].poll() is not None:
                    raise RuntimeError((self.dir / f"{name}.log").read_text()[-2000:])
                time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.nats.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 4000 if quick else 20000
    rounds = 2 if quick else 3  # alternate, best of each: the two share the machine's noise
    on: list[float] = []
    off: list[float] = []
    for r in range(rounds):
        with Services(auth=True) as on_suite:
            progress(f"authz round {r + 1}: {n} submissions, NATS authorization on")
            on.append(asyncio.run(routed(_client_connections(
                on_suite.nats.url, "client", on_suite.creds["client"]), on_suite.token, n, TAG)))
        with Services(auth=False) as off_suite:
            progress(f"authz round {r + 1}: {n} submissions, no NATS authorization")
            off.append(asyncio.run(routed(
                _client_connections(off_suite.nats.url, None, None), off_suite.token, n, TAG)))
    ratio = max(on) / max(off)
    return [{
        "name": f"authorization: jobs routed per second with NATS authorization on ({CLIENTS}"
                " `client` connections, per-connection inboxes, permissions checked by"
                " nats-server, tokens by the router)",
        "value": round(max(on)), "unit": "jobs/s",
        "baseline": round(max(off)),
        "baseline_name": "the same config service and router on a nats-server without"
                         " authorization, same run (best of each)",
        "ratio": round(ratio, 3), "target": ">= 0.95", "met": ratio >= 0.95,
        "bound": "the router's CPU per submission in both; authorization adds nats-server's"
                 " permission checks (cached per subject) and nothing per job in the services",
    }]
