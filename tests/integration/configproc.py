"""`getoperate config` as a subprocess (ConfigProc) and, around it, a signed-config deployment
with its own router and workers (SignedDeployment): what test_config_service, test_signed_config,
test_config_stream_recovery, test_history and test_faults share."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from services.common.natsserver import free_port
from tests.integration.harness import Proc, http_json

TOKEN = "test-admin-token"


class ConfigProc:
    """`getoperate config` as a subprocess on its own port and data dir."""

    def __init__(self, root: Path, nats_url: str):
        self.root, self.nats_url = root, nats_url
        self.port = free_port()
        self.proc: Proc | None = None
        self.extra_env: dict[str, str] = {}

    def start(self) -> "ConfigProc":
        self.proc = Proc(["config"], cwd=self.root, name="config", env={
            "NATS_URL": self.nats_url, "CONFIG_PORT": str(self.port),
            "GETOPERATE_DATA_DIR": str(self.root / "data"), "GETOPERATE_ADMIN_TOKEN": TOKEN,
            **self.extra_env})
        self.proc.wait_for('"http_listening"')
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.stop(sig)

    def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN,
             raw: bytes | None = None) -> tuple[int, Any]:
        return http_json(method, f"http://127.0.0.1:{self.port}{path}", token, body, raw,
                         timeout=10)


def get(url: str, token: str = TOKEN) -> tuple[int, Any]:
    return http_json("GET", url, token, timeout=10)


class SignedDeployment:
    """A config service with its own router and workers (one data dir, one nats-server)."""

    def __init__(self, root: Path, nats_url: str) -> None:
        self.root, self.nats_url = root, nats_url
        self.config = ConfigProc(root, nats_url)
        self.config.extra_env["GETOPERATE_SNAPSHOT_EVERY"] = "4"
        self.router_port = free_port()
        self.procs: list[Proc] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {"NATS_URL": self.nats_url, "GETOPERATE_DATA_DIR": str(self.root / "data"),
                "GETOPERATE_ADMIN_TOKEN": TOKEN, "ROUTER_PORT": str(self.router_port), **extra}

    def router(self) -> Proc:
        proc = Proc(["router"], cwd=self.root, env=self.env(), name="router")
        proc.wait_for('"http_listening"')
        self.procs.append(proc)
        return proc

    def worker(self, group: str) -> Proc:
        proc = Proc(["worker"], cwd=self.root, env=self.env(WORKER_GROUP=group, JOB_SANDBOX="none"),
                    name=f"worker-{group}")
        self.procs.append(proc)
        return proc

    def router_get(self, path: str, token: str = TOKEN) -> tuple[int, Any]:
        return get(f"http://127.0.0.1:{self.router_port}{path}", token)

    def verify(self) -> dict[str, Any]:
        status, report = self.config.call("GET", "/verify")
        assert status == 200, report
        return report  # type: ignore[no-any-return]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        if self.config.proc is not None and self.config.proc.p.poll() is None:
            self.config.stop()
