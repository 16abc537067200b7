"""A whole suite started with `getoperate up` once per module, plus extra workers per test."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.harness import Api, Proc, free_port_base


class Suite:
    def __init__(self, root: Path, base: int, up: Proc):
        self.root = root
        self.base = base
        self.up = up
        self.api = Api(root / ".getoperate")
        self.plain_nats_url = f"nats://127.0.0.1:{base}"
        self.extra: list[Proc] = []

    @property
    def nats_url(self) -> str:
        """For the tests' own connections: the admin user of `up`'s credentials file."""
        creds = self.root / ".getoperate" / "nats-credentials.json"
        if not creds.exists():
            return self.plain_nats_url
        password = json.loads(creds.read_text())["admin"]
        return f"nats://admin:{password}@127.0.0.1:{self.base}"

    @property
    def admin_token(self) -> str:
        return (self.root / ".getoperate" / "admin.token").read_text().strip()

    def auth(self, token: str | None = None) -> dict[str, str]:
        """NATS headers of a `go.router.submit` request with `token` (default: the admin's)."""
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    def worker(self, name: str, **env: str) -> Proc:
        """Start one more `getoperate worker` against this suite's NATS."""
        # No credentials in the URL: the worker finds its own in ./.getoperate, as a user's would.
        proc = Proc(["worker"], cwd=self.root, env={"NATS_URL": self.plain_nats_url, **env},
                    name=f"worker-{name}-{len(self.extra)}")
        self.extra.append(proc)
        return proc


@contextlib.contextmanager
def running_suite(root: Path, env: dict[str, str] | None = None,
                  kill_extra: bool = False, ready: tuple[str, ...] = ()) -> Iterator[Suite]:
    """`getoperate up` in `root` (with `env` for every child), stopped with Ctrl-C afterwards;
    yielded once a worker of each group in `ready` is ready."""
    base = free_port_base()
    up = Proc(["up", "--port-base", str(base)], cwd=root, env=dict(env or {}), name="up")
    s = Suite(root, base, up)
    try:
        up.wait_for("Ctrl-C stops everything", timeout=60)
        if ready:
            s.api.wait_workers(lambda ws: {w["group"] for w in ws if w["state"] == "ready"}
                               >= set(ready))
        yield s
    finally:
        for proc in s.extra:
            proc.stop(signal.SIGKILL if kill_extra else signal.SIGTERM)
        up.stop(signal.SIGINT, timeout=60)
    assert not permission_violations(root / ".getoperate"), permission_violations(root / ".getoperate")


# Connections that break the rules on purpose (tests/integration/test_permissions.py, the stolen
# credentials of test_sandbox.py) name themselves so; any other violation is a missing permission.
ATTACKERS = ("probe", "stolen")


def permission_violations(data_dir: Path) -> list[str]:
    """nats-server's log lines of publish or subscribe violations by the suite's own clients."""
    log = data_dir / "nats" / "nats-server.log"
    if not log.exists():
        return []
    return [line for line in log.read_text(errors="replace").splitlines()
            if "Violation - Subject" in line
            and not any(f":{name} inbox=" in line for name in ATTACKERS)]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("suite"), ready=("default", "native")) as s:
        yield s


@pytest.fixture
def extra_workers(suite: Suite) -> Iterator[Suite]:
    """Workers started by a test stop when it ends."""
    before = len(suite.extra)
    yield suite
    for proc in suite.extra[before:]:
        proc.stop()
    del suite.extra[before:]
