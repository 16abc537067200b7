"""`getoperate up`: nats-server, config, router and one worker per seeded group, in the foreground.

Children get their own sessions so shutdown runs in order (workers, router, config, then NATS),
and a Linux parent-death signal so none outlives a killed `up`.

The data dir holds secrets (admin token, NATS passwords, the config log with group env values
and init scripts): it is 0700 with 0600 files, written under umask 077 by `up`, nats-server and
the config service. Workers run user code, so their job folders are outside it, under the
system temp dir (docs/security.md, "Secrets at rest").
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cli.client import ENDPOINTS_FILE, CliError, EXIT_USAGE
from services.common import natsauth
from services.common.natsserver import NatsServer, port_open, store_bytes
from services.common.runtime import PRIVATE_UMASK, admin_token, private_dir, write_private
from services.common.signingkeys import load_signer
from services.worker import sandbox
from shared.state import SEEDED_GROUPS

WORKER_UNNEEDED = ("GETOPERATE_ADMIN_TOKEN", "GETOPERATE_TOKEN", "GETOPERATE_NATS_SECRET",
                   "GETOPERATE_ROUTER_KEY")


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setsid()


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], umask: int = -1):
        self.name, self.argv, self.env, self.umask = name, argv, env, umask
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent, umask=self.umask)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def jobs_dir(data_dir: Path) -> Path:
    """Where `up`'s workers keep job folders: outside the data dir (a job must not reach the
    admin token or NATS passwords by a relative path), one per data dir, in the temp dir."""
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"getoperate-jobs-{digest}"


def _own_private_dir(path: Path) -> Path:
    """Create `path` 0700, or take an existing one only if it is a real directory of ours (in
    a shared temp dir another user could have made it first, or put a symlink there)."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise CliError(f"{path} exists and is not a directory owned by this user: remove it,"
                       " or set TMPDIR to another folder")
    os.chmod(path, 0o700)
    return path


UP_LOCK = "up.lock"


def _hold_folder(data_dir: Path) -> int:
    """One `up` per data dir: a second one would rewrite endpoints.json and nats.conf under the
    first and break it. The lock is an flock on `<data dir>/up.lock`, held until this process
    ends (the kernel drops it even on SIGKILL, so a crash leaves nothing to clean up)."""
    fd = os.open(data_dir / UP_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise CliError(f"`getoperate up` already runs with this data dir ({data_dir}, pid"
                       f" {holder}); stop it first, or use another --data-dir", EXIT_USAGE
                       ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _wait_http(url: str, child: Child, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc is not None and child.proc.poll() is not None:
            raise CliError(f"{child.name} exited with code {child.proc.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise CliError(f"{child.name} did not answer {url} within {timeout:g}s")


def _progress(step: str) -> None:
    """Start-up takes seconds: say what is happening, on stderr (stdout keeps the summary)."""
    print(f"getoperate: {step}...", file=sys.stderr, flush=True)


def _warn_if_disk_small(data_dir: Path) -> None:
    """JetStream refuses writes cleanly at its budget; a disk that fills first breaks its
    streams until nats-server restarts (docs/production.md, "When the disk fills")."""
    budget, free = store_bytes(), shutil.disk_usage(data_dir).free
    if budget == 0 or budget > free:
        _progress(f"warning: JetStream may use {'any amount' if budget == 0 else f'{budget >> 20} MiB'}"
                  f" but the disk has {free >> 20} MiB free; set GETOPERATE_STORE_BYTES below"
                  " that (docs/production.md, \"When the disk fills\")")


def _sandbox_mode() -> str:
    """bwrap when it works here, else none (the local default must run on a fresh machine),
    said loudly; an explicit JOB_SANDBOX is obeyed, and bwrap asked for but missing is an error."""
    asked = os.environ.get("JOB_SANDBOX", "").strip().lower()
    if asked == "none":
        print(SANDBOX_OFF.format(why="JOB_SANDBOX=none"), file=sys.stderr, flush=True)
        return "none"
    why = sandbox.probe()
    if why is None:
        return "bwrap"
    if asked == "bwrap":
        raise CliError(f"JOB_SANDBOX=bwrap but {why}", EXIT_USAGE)
    print(SANDBOX_OFF.format(why=why), file=sys.stderr, flush=True)
    return "none"


SANDBOX_OFF = """getoperate: WARNING: JOBS RUN WITHOUT A SANDBOX ({why}).
getoperate: WARNING: any job can read what your user can read, see and signal your processes,
getoperate: WARNING: and leave processes behind. Fine for trying getoperate alone on your own
getoperate: WARNING: machine; for anything else install bubblewrap (apt-get install bubblewrap)
getoperate: WARNING: and restart: jobs are then sandboxed (docs/security.md)."""


def up(data_dir: Path, nats_port: int, config_port: int, router_port: int,
       workers_per_group: int = 1) -> int:
    data_dir = data_dir.resolve()
    # Everything `up` and the services it starts write is for this user only; workers get the
    # user's own umask back (they write no secret, and jobs' files are none of our business).
    user_umask = os.umask(PRIVATE_UMASK)
    private_dir(data_dir, recursive=False)
    for port, what in ((nats_port, "--nats-port"), (config_port, "--config-port"),
                       (router_port, "--router-port")):
        if port_open(port):
            raise CliError(f"port {port} ({what}) is already in use on 127.0.0.1", EXIT_USAGE)
    _hold_folder(data_dir)  # before anything in it is written
    private_dir(data_dir)  # a data dir of an older version was 0755 with 0644 files
    jobs = _own_private_dir(jobs_dir(data_dir))
    worker_dirs = {(group, i): _own_private_dir(jobs / f"{group}-{i}")
                   for group in SEEDED_GROUPS for i in range(workers_per_group)}
    admin_token(data_dir, create=True)
    # The config signing key pair, before any child starts: the config service signs with
    # config-signing.key, routers and workers verify with config-signing.pub beside it.
    load_signer(data_dir)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    sandbox_mode = _sandbox_mode()
    creds = natsauth.load_or_create(data_dir, SEEDED_GROUPS)
    hashes = natsauth.password_hashes(data_dir, creds)  # nats.conf gets these, not passwords
    issuer = natsauth.issuer(natsauth.load_secret(data_dir) or b"").public
    _progress(f"starting nats-server on 127.0.0.1:{nats_port} (JetStream in {data_dir / 'nats'})")
    _warn_if_disk_small(data_dir)
    nats = NatsServer(data_dir / "nats", port=nats_port,
                      auth=natsauth.config_block(hashes, issuer)).start()
    base_env = {**os.environ, "NATS_URL": nats.url, "GETOPERATE_DATA_DIR": str(data_dir),
                "CONFIG_PORT": str(config_port), "ROUTER_PORT": str(router_port),
                "HTTP_HOST": "127.0.0.1"}
    base_env.pop("WORKER_TAGS", None)
    base_env["JOB_SANDBOX"] = sandbox_mode
    for var in ("NATS_USER", "NATS_PASSWORD"):
        base_env.pop(var, None)  # each child connects as its own role, from the credentials file
    cmd = [sys.executable, "-m", "cli.main"]
    config = Child("config", cmd + ["config"], base_env)
    router = Child("router", cmd + ["router"], base_env)
    # Workers run user code: no bearer token nor the routers' key in their environment.
    worker_env = {k: v for k, v in base_env.items() if k not in WORKER_UNNEEDED}
    workers = [
        Child(f"worker:{group}#{i}", cmd + ["worker"],
              {**worker_env, "WORKER_GROUP": group,
               "WORKER_DIR": str(worker_dirs[group, i])}, umask=user_umask)
        for group in SEEDED_GROUPS for i in range(workers_per_group)
    ]
    children = [config, router, *workers]
    config_url = f"http://127.0.0.1:{config_port}"
    router_url = f"http://127.0.0.1:{router_port}"
    try:
        _progress(f"starting the config service on {config_url}")
        config.start()
        _wait_http(config_url + "/healthz", config)
        _progress(f"starting the router on {router_url}")
        router.start()
        _wait_http(router_url + "/healthz", router)
        _progress(f"starting {len(workers)} workers ({', '.join(SEEDED_GROUPS)})")
        for w in workers:
            w.start()
        write_private(data_dir / ENDPOINTS_FILE, json.dumps(
            {"nats_url": nats.url, "config_url": config_url, "router_url": router_url,
             "pid": os.getpid()}, indent=2) + "\n")
        print(f"getoperate is up (data in {data_dir})", flush=True)
        print(f"  nats    {nats.url}", flush=True)
        print(f"  config  {config_url}", flush=True)
        print(f"  router  {router_url}", flush=True)
        print(f"  web     {config_url}/  (the Workers page; admin token in"
              f" {data_dir / 'admin.token'})", flush=True)
        print(f"  workers {', '.join(SEEDED_GROUPS)} (x{workers_per_group} each)", flush=True)
        print(f"  sandbox {sandbox_mode if sandbox_mode == 'bwrap' else 'NONE (see above)'}",
              flush=True)
        print("Ctrl-C stops everything.", flush=True)
        while not stopping:
            time.sleep(0.2)
            if nats.proc is not None and nats.proc.poll() is not None and not stopping:
                print(f"nats-server exited with code {nats.proc.returncode}; restarting it"
                      " (its JetStream data is on disk)", file=sys.stderr, flush=True)
                nats.start()
            for child in children:
                if child.proc is not None and child.proc.poll() is not None and not stopping:
                    child.restarts += 1
                    print(f"{child.name} exited with code {child.proc.returncode}; restarting"
                          f" (restart {child.restarts})", file=sys.stderr, flush=True)
                    time.sleep(min(child.restarts, 5))
                    child.start()
    finally:
        for child in reversed(children):
            child.stop()
        nats.stop()
        shutil.rmtree(jobs, ignore_errors=True)  # scratch only: what jobs left behind
        print("getoperate stopped", flush=True)
    return 0
