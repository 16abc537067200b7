"""Peer job queues measured in the same run as our platform: Celery + Redis and Dramatiq + Redis.

Each measurement starts its own private `redis-server` on a free loopback port (127.0.0.1,
20000-32000, no persistence), the peer's worker as a subprocess in its own session, warms the
worker up with a few untimed tasks, measures, and tears everything down (worker process group,
then Redis) even on error. The task is `noop(x) -> x`; its result is always stored in Redis and
read back by the client, so every job costs enqueue + execute + store result + fetch result.

Peer configuration (defaults everywhere unless stated; nothing that changes semantics):

- Celery: broker and result backend both the private Redis (`redis://`), JSON serializer.
  Worker: `celery -A <module> worker --pool=prefork --concurrency=<workers> --loglevel=WARNING`,
  i.e. `workers` processes running one task at a time each; default prefetch
  (worker_prefetch_multiplier=4), acks early (default), results kept (ignore_result=False).
  Throughput client: `group(noop.s(i) for i in range(n)).apply_async()` then `.get()`, Celery's
  documented way to run many tasks and collect their results (the Redis backend joins them
  natively over pub/sub). Round trip: `noop.delay(i).get()`.
- Dramatiq: `RedisBroker` + `Results` middleware with `RedisBackend` (the same Redis), actor with
  `store_results=True`. Worker: `dramatiq <module> --processes <workers> --threads 8`, i.e.
  Dramatiq's default 8 threads per process; default prefetch (2 x threads per process) and
  default idle polling of the Redis queue. Throughput client:
  `group(noop.message(i) for i in range(n)).run()` then `.get_results(block=True)`, the way
  Dramatiq documents collecting many results (it fetches them one by one). Round trip:
  `noop.send(i).get_result(block=True)`.

Both clients are a single synchronous thread, as the libraries are meant to be driven: enqueueing
is one Redis round trip per task in both, and results are collected after all are enqueued.

What bounds them (measured on 2 CPUs): Celery's throughput by per-task Python overhead on both
ends, neither CPU saturated: the client spends ~0.8 ms CPU per task (message build, LPUSH,
result SUBSCRIBE and read), the worker's main process fetches one message per BRPOP and tracks
it in Redis until acked, then hands it to a pool child over a pipe. Its round trip is low as
everything blocks on Redis (BRPOP, pub/sub). Dramatiq's consumer instead polls Redis, sleeping
a growing backoff (5 ms, doubling, to 1 s) when its queue is empty or it holds its prefetch
(2 x threads) of unfinished messages: round trips pay that sleep, and throughput grows with
threads (~530 jobs/s at 1, ~1050 at 2, 2000-3700 at 8, where the 2 CPUs are near
saturation; 16 or 32 add little).

`python -m bench.peers` runs both peers (2000 jobs throughput, 200 round trips) and prints JSON.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import machine_cpu_seconds, percentile

PEERS = ("celery", "dramatiq")
ROOT = Path(__file__).resolve().parents[1]
URL_ENV = "BENCH_PEER_REDIS_URL"
DRAMATIQ_THREADS = 8  # Dramatiq's own default; see the module docstring
WARMUP = 20
RESULT_TIMEOUT = 120.0  # seconds; generous, only there so a wedged worker fails the run

# Entry modules the worker subprocesses import (`celery -A` / `dramatiq`); they build the same
# app/actor as the client, from the factories below, on the Redis URL passed in the environment.
WORKER_MODULES = {
    "celery": "import os\n\nfrom bench.peers import celery_app\n\n"
              f"app, noop = celery_app(os.environ[{URL_ENV!r}])\n",
    "dramatiq": "import os\n\nfrom bench.peers import dramatiq_actor\n\n"
                f"broker, noop = dramatiq_actor(os.environ[{URL_ENV!r}])\n",
}


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def unavailable() -> str | None:
    """None if the peers can run, else a one-line reason (checked without importing them)."""
    if shutil.which("redis-server") is None:
        return "redis-server not on PATH"
    for module in ("redis", "celery", "dramatiq"):
        if importlib.util.find_spec(module) is None:
            return f"{module} not importable"
    return None


def celery_app(url: str) -> tuple[Any, Any]:
    """The Celery app and its `noop` task; a factory so importing bench.peers needs no Celery."""
    from celery import Celery

    app = Celery("bench_peer_celery", broker=url, backend=url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True  # silences a startup deprecation warning

    @app.task(name="noop")
    def noop(x: Any) -> Any:
        return x

    return app, noop


def dramatiq_actor(url: str) -> tuple[Any, Any]:
    """The Dramatiq broker and its `noop` actor; set as the global broker, which the CLI and
    `Message.get_result` look up."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    broker = RedisBroker(url=url)
    broker.add_middleware(Results(backend=RedisBackend(url=url)))
    dramatiq.set_broker(broker)

    def noop(x: Any) -> Any:
        return x

    return broker, dramatiq.actor(noop, actor_name="noop", broker=broker, store_results=True)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    for _ in range(200):
        port = random.randint(20000, 32000)  # below the ephemeral range (32768+)
        if _port_free(port):
            return port
    raise RuntimeError("no free loopback port in 20000-32000")


def _start(argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """In its own session, so teardown can kill the whole process group (prefork children)."""
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **kwargs)


def _stop(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM the leader for a clean shutdown (it stops its own children: signalling them too
    makes Dramatiq's kill them hard), then SIGKILL whatever is left of the group."""
    proc.terminate()
    with suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def _answers_ping(proc: subprocess.Popen[bytes], port: int, timeout: float = 10) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            with suppress(redis.ConnectionError):
                if client.ping():
                    return True
            time.sleep(0.02)
        return False
    finally:
        client.close()


@contextmanager
def _redis(tmp: Path, fsync: str | None = None) -> Iterator[str]:
    """A private redis-server on a free loopback port; yields its URL. Not persistent (`fsync`
    None), as the peers are usually run; `fsync` `always` turns on the append-only file fsynced
    on every write, the durability our suite gives every acknowledged job as shipped;
    `everysec` fsyncs it once a second (ours with GETOPERATE_NATS_SYNC=1s)."""
    log = tmp / "redis.log"
    persistence = (["--appendonly", "yes", "--appendfsync", fsync] if fsync else
                   ["--appendonly", "no"])
    for _ in range(3):  # the port can be taken between our check and redis binding it
        port = _free_port()
        proc = _start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                       *persistence, "--dir", str(tmp)], log)
        try:
            if _answers_ping(proc, port):
                yield f"redis://127.0.0.1:{port}/0"
                return
        finally:
            _stop(proc, grace=5)
    raise RuntimeError(f"redis-server did not start: {_tail(log)}")


@dataclass
class _Client:
    batch: Callable[[int], list[Any]]  # enqueue noop(0..n-1), then collect every result
    one: Callable[[int, float], Any]  # enqueue noop(i), wait up to timeout seconds for its result
    timeout_error: type[Exception]  # what `one` raises on timeout


def _celery_client(url: str) -> tuple[_Client, Callable[[], None]]:
    from celery import group
    from celery.exceptions import TimeoutError

    app, noop = celery_app(url)

    def batch(n: int) -> list[Any]:
        return group(noop.s(i) for i in range(n)).apply_async().get(timeout=RESULT_TIMEOUT)

    def one(i: int, timeout: float = RESULT_TIMEOUT) -> Any:
        result = noop.delay(i)
        try:
            return result.get(timeout=timeout)
        except TimeoutError:
            # The backend keeps waiting on it otherwise, and unsubscribes at exit: after Redis
            # is gone, with a noisy "Retry limit exceeded" traceback.
            result.backend.remove_pending_result(result)
            raise

    return _Client(batch, one, TimeoutError), app.close


def _dramatiq_client(url: str) -> tuple[_Client, Callable[[], None]]:
    from dramatiq import group
    from dramatiq.results import ResultTimeout

    broker, noop = dramatiq_actor(url)
    timeout_ms = int(RESULT_TIMEOUT * 1000)

    def batch(n: int) -> list[Any]:
        g = group((noop.message(i) for i in range(n)), broker=broker).run()
        return list(g.get_results(block=True, timeout=timeout_ms))

    def one(i: int, timeout: float = RESULT_TIMEOUT) -> Any:
        return noop.send(i).get_result(block=True, timeout=int(timeout * 1000))

    return _Client(batch, one, ResultTimeout), broker.close


def _worker_argv(peer: str, module: str, workers: int) -> list[str]:
    if peer == "celery":
        return [sys.executable, "-m", "celery", "-A", module, "worker", "--pool=prefork",
                f"--concurrency={workers}", "--loglevel=WARNING"]
    return [sys.executable, "-m", "dramatiq", f"{module}:broker", "--processes", str(workers),
            "--threads", str(DRAMATIQ_THREADS)]


def _wait_ready(client: _Client, worker: subprocess.Popen[bytes], log: Path) -> None:
    """Round trips with a short timeout until one succeeds, so a worker that dies while starting
    fails the run at once instead of after RESULT_TIMEOUT."""
    deadline = time.monotonic() + 60
    while True:
        try:
            client.one(0, 1.0)
            return
        except client.timeout_error:
            pass
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited ({worker.returncode}): {_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker not ready after 60s: {_tail(log)}")


@contextmanager
def _peer(peer: str, workers: int, fsync: str | None = None) -> Iterator[_Client]:
    """A private Redis and a warmed-up worker for `peer`, torn down on exit."""
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}; expected one of {PEERS}")
    if reason := unavailable():
        raise RuntimeError(f"peers unavailable: {reason}")
    with tempfile.TemporaryDirectory(prefix=f"bench-{peer}-") as tmpdir, \
            _redis(Path(tmpdir), fsync) as url:
        tmp = Path(tmpdir)
        module = f"bench_peer_{peer}"
        (tmp / f"{module}.py").write_text(WORKER_MODULES[peer])
        path = [str(tmp), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, URL_ENV: url, "PYTHONPATH": os.pathsep.join(path)}
        log = tmp / "worker.log"
        started = time.monotonic()
        worker = _start(_worker_argv(peer, module, workers), log, cwd=tmp, env=env)
        try:
            client, close = (_celery_client if peer == "celery" else _dramatiq_client)(url)
            try:
                _wait_ready(client, worker, log)
                client.batch(WARMUP)  # enough to reach every worker process
                for i in range(WARMUP):
                    client.one(i)
                progress(f"peers: {peer}: {workers} workers ready in "
                         f"{time.monotonic() - started:.1f}s (warmed up)")
                yield client
            finally:
                close()
        finally:
            _stop(worker)
            if worker.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
                progress(f"peers: {peer}: worker exited {worker.returncode}: {_tail(log)}")


def throughput(peer: str, n: int, workers: int = 2, fsync: str | None = None,
               cpu: list[float] | None = None) -> float:
    """Jobs/s end to end (first enqueue to last result) for n no-op jobs enqueued all at once:
    the peer's best case, as all of its per-job costs can overlap. `fsync`: Redis's
    `appendfsync` (None: no persistence). `cpu`: gets the machine's CPU seconds spent meanwhile."""
    with _peer(peer, workers, fsync) as client:
        progress(f"peers: {peer}: {n} tasks, enqueue all then collect all results"
                 + (f" (Redis appendfsync {fsync})" if fsync else ""))
        cpu_before = machine_cpu_seconds()
        started = time.perf_counter()
        results = client.batch(n)
        elapsed = time.perf_counter() - started
        if cpu is not None:
            cpu.append(machine_cpu_seconds() - cpu_before)
    if results != list(range(n)):
        raise RuntimeError(f"{peer}: wrong results")
    rate = n / elapsed
    progress(f"peers: {peer}: {rate:.0f} jobs/s ({elapsed:.2f}s)")
    return rate


def roundtrip(peer: str, n: int, fsync: str | None = None) -> list[float]:
    """Seconds from enqueue to result for n jobs sent one at a time on an idle worker: the peer's
    dispatch latency, with nothing to overlap it. `fsync`: Redis's `appendfsync`."""
    with _peer(peer, 2, fsync) as client:
        progress(f"peers: {peer}: {n} round trips, one at a time"
                 + (f" (Redis appendfsync {fsync})" if fsync else ""))
        latencies = []
        for i in range(n):
            started = time.perf_counter()
            result = client.one(i)
            latencies.append(time.perf_counter() - started)
            if result != i:
                raise RuntimeError(f"{peer}: wrong result {result!r} for {i}")
    return latencies


def _ms(latencies: list[float], q: int) -> float:
    return round(percentile(latencies, q) * 1000, 2)


if __name__ == "__main__":
    if reason := unavailable():
        sys.exit(f"peers unavailable: {reason}")
    began = time.monotonic()
    summary: dict[str, Any] = {}
    for name in PEERS:
        rate = throughput(name, 2000)
        lat = roundtrip(name, 200)
        summary[name] = {"throughput_jobs_s": round(rate, 1),
                         "roundtrip_p50_ms": _ms(lat, 50), "roundtrip_p99_ms": _ms(lat, 99)}
    summary["seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(summary, indent=2))
