"""Helpers to drive the real CLI and services as subprocesses in tests."""

from __future__ import annotations

import json
import os
import shutil
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from collections import Counter
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common.natsserver import port_open

ROOT = Path(__file__).resolve().parents[2]


def free_port_base() -> int:
    """Three consecutive free loopback ports (up's --port-base)."""
    for _ in range(200):
        base = random.randint(20000, 32000)  # below the ephemeral range (32768+)
        if not any(port_open(base + i) for i in range(3)):
            return base
    raise RuntimeError("no three consecutive free ports found")


HAS_SANDBOX = shutil.which("bwrap") is not None
# .ci/run installs bubblewrap and sets GETOPERATE_REQUIRE_SANDBOX: there these never skip.
needs_sandbox = pytest.mark.skipif(
    not HAS_SANDBOX and not os.environ.get("GETOPERATE_REQUIRE_SANDBOX"),
    reason="bubblewrap is not installed (apt-get install bubblewrap); .ci/run installs it")


def live_pids(needle: str) -> list[int]:
    """Live (not zombie) processes of this machine whose command line contains `needle`
    (arguments joined by spaces): how a test sees what a job left behind, from the host."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and needle.encode() in \
                    (d / "cmdline").read_bytes().replace(b"\0", b" ") and \
                    (d / "stat").read_text().split()[2] != "Z":
                out.append(int(d.name))
        except OSError:
            continue
    return out


def wait_until(predicate: Any, what: str = "condition", timeout: float = 60.0,
               interval: float = 0.05) -> Any:
    """Poll `predicate` until it is truthy (returned); fail naming `what` past the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(interval)


def wait_router_seq(s: Any, seq: int) -> None:
    """Until the router of suite `s` has folded config event `seq` (a token revoked, a tag
    restricted, a script redeployed): what runs next sees it."""
    deadline = time.monotonic() + 20
    while s.api.call("GET", "router", "/healthz")["config_seq"] < seq:
        assert time.monotonic() < deadline, f"the router never folded seq {seq}"
        time.sleep(0.05)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "GETOPERATE_"))}
    env["PYTHONPATH"] = str(ROOT)
    if not HAS_SANDBOX:  # a fresh machine: workers run unsandboxed, as `up` would
        env.setdefault("JOB_SANDBOX", "none")
    env.update(extra or {})
    return env


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60,
        check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `getoperate ARGS` (as `python -m cli.main`) and capture its output."""
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, env=cli_env(env),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"getoperate {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def run_view(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
             ) -> dict[str, Any]:
    """`getoperate run ARGS --wait --json`: the finished job's view, whatever its status (a
    failed job exits 1 and still prints its view)."""
    proc = cli("run", *args, "--wait", "--json", cwd=cwd, env=env, timeout=timeout)
    assert proc.returncode in (0, 1) and proc.stdout.strip(), (proc.returncode, proc.stderr)
    view: dict[str, Any] = json.loads(proc.stdout)
    return view


def ready(group: str, n: int = 1, tags: set[str] | None = None, version: int | None = None):  # type: ignore[no-untyped-def]
    """Predicate: at least n ready workers of `group` (with these tags / at least this version)."""

    def check(ws: list[dict]) -> bool:  # type: ignore[type-arg]
        ok = [w for w in ws if w["group"] == group and w["state"] == "ready"
              and (tags is None or set(w["tags"]) == tags)
              and (version is None or w["config_version"] >= version)]
        return len(ok) >= n

    return check


def cli_json(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    proc = cli(*args, "--json", cwd=cwd, env=env, timeout=timeout, check=True)
    return json.loads(proc.stdout)


class Proc:
    """A long-running service subprocess with its output in a log file."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], name: str):
        self.log_path = cwd / f"{name}.log"
        self.log = open(self.log_path, "ab")
        self.offset = self.log.tell()  # a restarted service appends: read only this run's lines
        self.p = subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=cwd,
                                  env=cli_env(env), stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)

    def output(self) -> str:
        with open(self.log_path, "rb") as fh:
            fh.seek(self.offset)
            return fh.read().decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.p.poll() is not None:
                raise AssertionError(f"process exited {self.p.returncode}:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not seen within {timeout}s:\n{self.output()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode

    def log_events(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("event") == event:
                    out.append(rec)
        return out


class Api:
    """Direct HTTP calls to a running suite (faster than the CLI for heavy tests)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir

    def call(self, method: str, service: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        from cli.client import Endpoints, call

        ep = Endpoints(self.data_dir)  # read each time: endpoints.json appears once `up` is ready
        base = ep.config_url if service == "config" else ep.router_url
        return call(method, base + path, ep.token(), body, timeout=timeout)

    def set_group(self, name: str, **body: Any) -> Any:
        return self.call("PUT", "config", f"/groups/{name}", body)

    def submit(self, code: str, language: str = "bash", **body: Any) -> Any:
        return self.call("POST", "router", "/jobs", {"language": language, "code": code, **body})

    def job(self, job_id: str, wait: bool = True, timeout: float = 30) -> Any:
        q = f"?wait=1&timeout={timeout}" if wait else ""
        return self.call("GET", "router", f"/jobs/{job_id}{q}", timeout=timeout + 30)

    def workers(self) -> list[dict[str, Any]]:
        return self.call("GET", "router", "/workers")  # type: ignore[no-any-return]

    def wait_workers(self, predicate: Any, timeout: float = 30) -> list[dict[str, Any]]:
        """Poll live workers until `predicate(workers)` holds; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            ws = self.workers()
            if predicate(ws):
                return ws
            if time.monotonic() > deadline:
                raise AssertionError(f"workers never matched; last seen: {ws}")
            time.sleep(0.05)


class FakeWorkers:
    """Heartbeats of workers that do not run, written to GO_WORKERS once a second until `stop`
    (then deleted): a page or a command can be shown a worker in any state, e.g. one without a
    sandbox, whatever the real workers of the suite do. Use as a context manager."""

    def __init__(self, nats_url: str, *statuses: Any):
        import threading

        self.nats_url = nats_url
        self.statuses = list(statuses)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fake-workers", daemon=True)

    def __enter__(self) -> "FakeWorkers":
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise AssertionError(f"fake heartbeats not written: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        import asyncio

        try:
            asyncio.run(self._beat())
        except BaseException as exc:  # reported by __enter__ (or lost after it: then harmless)
            self._error = exc
            self._ready.set()

    async def _beat(self) -> None:
        import asyncio

        import msgspec
        import nats

        from shared.codec import encode
        from services.common.natsauth import worker_user
        from shared.subjects import WORKERS_BUCKET, heartbeat_key

        def worker_key(worker_id: str) -> str:
            status = next(s for s in self.statuses if s.id == worker_id)
            return heartbeat_key(worker_user(status.group, status.tags
                                             if status.tags_source == "env" else None),
                                 worker_id, "fake")

        nc = await nats.connect(self.nats_url)
        try:
            kv = await nc.jetstream().key_value(WORKERS_BUCKET)
            while not self._stop.is_set():
                for status in self.statuses:
                    now = time.time()
                    await kv.put(worker_key(status.id), encode(msgspec.structs.replace(
                        status, heartbeat_at=now)))
                self._ready.set()
                await asyncio.sleep(1.0)
            for status in self.statuses:
                await kv.delete(worker_key(status.id))
        finally:
            await nc.close()


def fake_status(worker_id: str, **fields: Any) -> Any:
    """A ready WorkerStatus of a worker that does not exist (group `fake`, tag `t-fake`). Its
    tags come from WORKER_TAGS (`tags_source="env"`): it beats as a `worker-tags:` user, whose
    tags are its credentials' own, so the services believe it without a group configured."""
    from shared.jobs import WorkerStatus

    base: dict[str, Any] = dict(id=worker_id, group="fake", tags=["t-fake"], tags_source="env",
                                config_version=0, state="ready", hostname="nowhere", pid=1,
                                started_at=time.time(), heartbeat_at=time.time())
    return WorkerStatus(**{**base, **fields})


TOKEN = "deployment-token"


class Deployment:
    """A deployment without `up`: its own nats-server (a test may stop, pause or restart it,
    or give it a small store), the config service, `routers` routers and, with `start(group=)`,
    one worker of that group. Every process a real subprocess; `env` goes to each of them."""

    def __init__(self, root: Path, routers: int = 2, env: dict[str, str] | None = None) -> None:
        from services.common.natsserver import NatsServer, free_port

        self.root = root
        self.extra_env = dict(env or {})
        self.nats = NatsServer(root / "nats").start()
        self.config_port = free_port()
        self.router_ports = [free_port() for _ in range(routers)]
        self.routers: list[Proc] = []
        self.procs: list[Proc] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {"NATS_URL": self.nats.url, "GETOPERATE_DATA_DIR": str(self.root / "data"),
                "GETOPERATE_ADMIN_TOKEN": TOKEN, "CONFIG_PORT": str(self.config_port),
                **self.extra_env, **extra}

    def start_router(self, i: int) -> Proc:
        proc = Proc(["router"], cwd=self.root, env=self.env(ROUTER_PORT=str(self.router_ports[i])),
                    name=f"router{i}")
        proc.wait_for('"router_ready"', timeout=60)
        proc.wait_for('"http_listening"', timeout=60)
        self.procs.append(proc)
        return proc

    def start_worker(self, group: str, **env: str) -> Proc:
        worker = Proc(["worker"], cwd=self.root, env=self.env(WORKER_GROUP=group, **env),
                      name=f"worker-{group}-{len(self.procs)}")
        self.procs.append(worker)
        worker.wait_for('"worker_ready"', timeout=60)
        return worker

    def start(self, group: str | None = None) -> None:
        config = Proc(["config"], cwd=self.root, env=self.env(), name="config")
        self.procs.append(config)
        config.wait_for('"http_listening"', timeout=60)
        if group is not None:
            status, body, _ = request(self.config_port, "PUT", f"/groups/{group}",
                                      {"tags": [group]})
            assert status in (200, 201), body
        self.routers = [self.start_router(i) for i in range(len(self.router_ports))]
        if group is not None:
            self.start_worker(group)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(signal.SIGKILL)
        self.nats.stop()


def http_json(method: str, url: str, token: str | None, body: Any = None,
              raw: bytes | None = None, timeout: float = 30) -> tuple[int, Any]:
    """(status, JSON body) of one request, 4xx and 5xx included: what a test compares."""
    import urllib.error
    import urllib.request

    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def request(port: int, method: str, path: str, body: Any = None, key: str | bytes | None = None,
            timeout: float = 30) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One HTTP call to a Deployment's service as its admin: (status, JSON body, headers)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else b""
        conn.putrequest(method, path)
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(data)))
        if key is not None:
            conn.putheader("Idempotency-Key", key)
        conn.endheaders(data)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            parsed = json.loads(raw or b"{}")
        except ValueError:
            parsed = {"text": raw.decode(errors="replace")}
        return resp.status, parsed, dict(resp.getheaders())
    finally:
        conn.close()


async def job_events(url: str) -> list[dict[str, Any]]:
    """Every event stored on GO_JOB_EVENTS, read with a throwaway consumer; read again while a
    cluster that lost a node elects leaders (no answer, or 503)."""
    import asyncio

    import nats
    from nats.js import api
    from nats.js.errors import ServiceUnavailableError

    from shared import subjects

    deadline = time.monotonic() + 60
    while True:
        nc = await nats.connect(url.split(","))  # a cluster's URLs, comma-separated
        try:
            js = nc.jetstream()
            info = await js.stream_info(subjects.JOB_EVENTS_STREAM)
            sub = await js.pull_subscribe(
                subjects.JOB_EVENTS_SUBJECTS, durable=None, stream=subjects.JOB_EVENTS_STREAM,
                config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE))
            out: list[dict[str, Any]] = []
            while len(out) < info.state.messages:
                out += [json.loads(m.data) for m in await sub.fetch(500, timeout=5)]
            return out
        except (nats.errors.TimeoutError, asyncio.TimeoutError, ServiceUnavailableError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await nc.close()


async def finished_events(nats_url: str) -> Counter[str]:
    """How many job.finished events each job id has in the job-events stream."""
    return Counter(e["job_id"] for e in await job_events(nats_url) if e["type"] == "job.finished")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, parsed with prometheus-client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def counts(d: Deployment, workspace: str) -> tuple[Counter[str], Counter[str]]:
    """(job.queued per job id, job.finished per job id) of the jobs of `workspace`."""
    import asyncio

    events = asyncio.run(job_events(d.nats.url))
    mine = {e["job_id"] for e in events if e["type"] == "job.queued" and e["workspace"] == workspace}
    queued = Counter(e["job_id"] for e in events if e["type"] == "job.queued" and e["job_id"] in mine)
    finished = Counter(e["job_id"] for e in events if e["type"] == "job.finished" and e["job_id"] in mine)
    return queued, finished
