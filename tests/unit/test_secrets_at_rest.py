"""Secrets at rest: NATS passwords appear in nats-server's config only as bcrypt hashes (real
nats-server, real connections per role), data dirs are private whatever the umask (SQLite's WAL
and SHM, nats-server's JetStream store, a data dir left 0755 by an older version), and no worker
of compose.yaml or the Kubernetes example gets a token or another role's NATS password."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import bcrypt
import nats
import pytest
import yaml

from services.common import natsauth
from services.common.natsserver import (
    NatsServer, NatsServerError, find_binary, free_port, port_open,
)
from services.common.runtime import private_dir, write_private
from tests.unit.test_compose import ROOT, _compose, _runs
from tests.fsmodes import loose

K8S = ROOT / "deploy" / "kubernetes" / "manifests"
CREDS = {role: f"pw-{role}-0123456789abcdef" for role in natsauth.ROLES}
# What a worker must never be given: a bearer token, the routers' key that signs flow grants, or
# a NATS password of a more trusted role.
FORBIDDEN_FOR_WORKERS = re.compile(r"TOKEN|ROUTER_KEY|NATS_(ADMIN|CONFIG|ROUTER)_PASSWORD", re.I)




@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _binary() -> str:
    try:
        return find_binary()
    except NatsServerError:
        pytest.skip("no nats-server binary")


def _refused(url: str, user: str, password: str) -> bool:
    """Whether nats-server refuses these credentials (its protocol by hand: nats-py leaves a
    transport open behind a refused connect)."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.recv(4096)  # INFO
        connect = {"user": user, "pass": password, "verbose": False, "pedantic": False}
        sock.sendall(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    if reply.startswith(b"PONG"):
        return False
    assert b"Authorization Violation" in reply, reply
    return True


def _each_role_connects(url: str, hashes: dict[str, str]) -> None:
    async def connect_all() -> None:
        for role in natsauth.ROLES:
            nc = await nats.connect(url, user=role, password=CREDS[role], allow_reconnect=False)
            await nc.flush()
            await nc.close()

    asyncio.run(connect_all())
    assert _refused(url, "worker", CREDS["admin"])
    assert _refused(url, "admin", "")
    assert _refused(url, "admin", hashes["admin"])  # who reads a hash cannot log in with it


# --- bcrypt hashes in nats-server's config ---------------------------------------------------

def test_config_block_carries_bcrypt_hashes_and_refuses_plain_passwords(tmp_path: Path) -> None:
    hashes = natsauth.password_hashes(tmp_path, CREDS)
    block = natsauth.config_block(hashes)
    for role in natsauth.ROLES:
        assert CREDS[role] not in block
        assert natsauth.is_bcrypt_hash(hashes[role]) and hashes[role] in block
        assert hashes[role].startswith("$2a$") and int(hashes[role].split("$")[2]) >= 10
        assert bcrypt.checkpw(CREDS[role].encode(), hashes[role].encode())
    with pytest.raises(ValueError, match="bcrypt"):
        natsauth.config_block(CREDS)
    # Deployments: nats-server reads the hashes from its environment.
    assert "$NATS_WORKER_PASSWORD_HASH" in natsauth.config_block()


def test_hashes_are_computed_once_and_again_when_a_password_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = natsauth.hash_password

    def counting(password: str, cost: int = natsauth.BCRYPT_COST) -> str:
        calls.append(password)
        return real(password, cost)

    monkeypatch.setattr(natsauth, "hash_password", counting)
    first = natsauth.password_hashes(tmp_path, CREDS)
    assert len(calls) == len(natsauth.ROLES)
    path = tmp_path / natsauth.HASHES_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not any(pw in path.read_text() for pw in CREDS.values())
    before = path.read_bytes()
    assert natsauth.password_hashes(tmp_path, CREDS) == first  # a restart: no bcrypt at all
    assert len(calls) == len(natsauth.ROLES) and path.read_bytes() == before
    changed = {**CREDS, "worker": "a-new-worker-password"}
    again = natsauth.password_hashes(tmp_path, changed)
    assert calls[len(natsauth.ROLES):] == ["a-new-worker-password"]
    assert again["worker"] != first["worker"] and again["admin"] == first["admin"]
    assert bcrypt.checkpw(b"a-new-worker-password", again["worker"].encode())
    path.write_text("{not json")  # a damaged cache is rebuilt, not trusted
    assert natsauth.password_hashes(tmp_path, changed).keys() == set(natsauth.ROLES)


def test_nats_server_takes_the_hashes_and_each_role_connects_with_its_password(
    tmp_path: Path,
) -> None:
    _binary()
    hashes = natsauth.password_hashes(tmp_path, CREDS)
    with NatsServer(tmp_path / "nats", auth=natsauth.config_block(hashes)) as server:
        conf = (tmp_path / "nats" / "nats.conf").read_text()
        assert not any(pw in conf for pw in CREDS.values())
        _each_role_connects(server.url, hashes)


def test_deploy_nats_conf_takes_hashes_from_the_environment(tmp_path: Path) -> None:
    """compose.yaml's nats-server: deploy/nats.conf with NATS_<ROLE>_PASSWORD_HASH set to
    hashes (unquoted `$2a$...` values from the environment), real connections per role."""
    binary = _binary()
    port = free_port()
    conf = (ROOT / "deploy" / "nats.conf").read_text()
    conf = conf.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{port}")
    conf = re.sub(r"^http: .*$", "", conf, flags=re.M)
    conf = conf.replace('store_dir: "/data"', f'store_dir: "{tmp_path / "js"}"')
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    env = {"PATH": os.environ.get("PATH", "")}
    hashes = {role: natsauth.hash_password(CREDS[role], cost=10) for role in natsauth.ROLES}
    for role in natsauth.ROLES:
        env[natsauth.hash_env_var(role)] = hashes[role]
    checked = subprocess.run([binary, "-c", str(path), "-t"], env=env, capture_output=True,
                             text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    proc = subprocess.Popen([binary, "-c", str(path)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not port_open(port):
            assert proc.poll() is None and time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)
        _each_role_connects(f"nats://127.0.0.1:{port}", hashes)
    finally:
        proc.terminate()
        proc.wait(10)


def test_hash_command_prints_hashes_for_a_password_and_for_an_env_file() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "services.common.natsauth", "hash"],
                          input="s3cret-pw\n", capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    hashed = done.stdout.strip()
    assert natsauth.is_bcrypt_hash(hashed) and bcrypt.checkpw(b"s3cret-pw", hashed.encode())
    env = {k: v for k, v in env.items() if not k.startswith("NATS_")}
    env.update(NATS_WORKER_PASSWORD="w-pw", NATS_ADMIN_PASSWORD="a-pw")
    done = subprocess.run([sys.executable, "-m", "services.common.natsauth", "env"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert set(lines) == {"NATS_WORKER_PASSWORD_HASH", "NATS_ADMIN_PASSWORD_HASH"}
    for var, password in (("NATS_WORKER_PASSWORD_HASH", b"w-pw"),
                          ("NATS_ADMIN_PASSWORD_HASH", b"a-pw")):
        value = lines[var]
        assert value[0] == value[-1] == "'"  # literal in an .env file: compose leaves `$` alone
        assert bcrypt.checkpw(password, value[1:-1].encode())


# --- private data dirs ------------------------------------------------------------------------

def test_private_dir_tightens_a_data_dir_of_an_older_version(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "nats" / "jetstream").mkdir(parents=True)
    for path in (data, data / "nats", data / "nats" / "jetstream"):
        path.chmod(0o755)
    for name in ("admin.token", "endpoints.json", "config.sqlite", "nats/nats.conf"):
        (data / name).write_text("x")
        (data / name).chmod(0o644)
    (data / "run.sh").write_text("x")
    (data / "run.sh").chmod(0o775)
    os.symlink("/etc/hostname", data / "link")
    private_dir(data)
    assert loose(data) == []
    assert stat.S_IMODE((data / "run.sh").stat().st_mode) == 0o700  # the owner's x bit is kept
    assert stat.S_IMODE(Path("/etc/hostname").stat().st_mode) & 0o044  # the link's target untouched
    fresh = private_dir(tmp_path / "new" / "dir", recursive=False)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_write_private_replaces_a_readable_file_with_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text("old")
    path.chmod(0o644)
    with _umask(0o022):
        write_private(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["endpoints.json"]


def test_the_config_log_and_its_wal_and_shm_are_private_whatever_the_umask(tmp_path: Path) -> None:
    from services.config.store import EventLog
    from shared.events import GroupCreated

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    with _umask(0o022):
        log = EventLog(data / "config.sqlite")
        try:
            log.append([GroupCreated(group="g")], actor="test")
            names = {p.name for p in data.iterdir()}
            assert {"config.sqlite", "config.sqlite-wal", "config.sqlite-shm"} <= names
            assert loose(data) == []
        finally:
            log.close()
    # An older version's files, readable by all, are tightened when the log is opened again.
    for path in data.iterdir():
        path.chmod(0o644)
    data.chmod(0o755)
    EventLog(data / "config.sqlite").close()
    assert loose(data) == []


def test_nats_servers_jetstream_store_is_private_whatever_the_umask(tmp_path: Path) -> None:
    _binary()

    async def write_a_stream(url: str) -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="PROBE", subjects=["probe.>"])
            await js.publish("probe.x", b"secret payload")
            kv = await js.create_key_value(bucket="PROBE_KV")
            await kv.put("k", b"v")
        finally:
            await nc.close()

    with _umask(0o022):
        with NatsServer(tmp_path / "nats") as server:
            asyncio.run(write_a_stream(server.url))
    assert list((tmp_path / "nats" / "jetstream").rglob("*.blk"))
    assert loose(tmp_path / "nats") == []


def test_up_runs_jobs_outside_its_data_dir_in_a_folder_of_its_own(tmp_path: Path) -> None:
    from cli.client import CliError
    from cli.up import _own_private_dir, jobs_dir

    data = (tmp_path / ".getoperate").resolve()
    jobs = jobs_dir(data)
    assert not jobs.is_relative_to(data) and jobs != jobs_dir(tmp_path / "other")
    made = _own_private_dir(tmp_path / "jobs")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    made.chmod(0o755)
    assert stat.S_IMODE(_own_private_dir(made).stat().st_mode) == 0o700
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "planted")  # a symlink planted in /tmp
    with pytest.raises(CliError, match="not a directory owned by this user"):
        _own_private_dir(tmp_path / "planted")


# --- what workers are given in the deployment examples ----------------------------------------

def _k8s_objects() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _k8s_worker_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in _k8s_objects():
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            continue
        pod = obj["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            if (container.get("args") or [None])[0] == "worker":
                yield obj["metadata"]["name"], container


def test_compose_workers_get_no_token_and_no_other_roles_nats_password() -> None:
    services = _compose()["services"]
    workers = {name: s for name, s in services.items() if _runs(s) == "worker"}
    assert workers
    for name, service in workers.items():
        env = service["environment"]
        assert isinstance(env, dict), name
        for var, value in env.items():
            assert not FORBIDDEN_FOR_WORKERS.search(var), (name, var)
            assert not FORBIDDEN_FOR_WORKERS.search(str(value)), (name, var, value)
        assert env["NATS_USER"] == "worker" and "NATS_WORKER_PASSWORD" in env["NATS_PASSWORD"]
        assert not service.get("env_file") and not service.get("secrets"), name
    # The services that need the admin token still get it; the routers their key.
    for name in ("config", "router"):
        assert "GETOPERATE_ADMIN_TOKEN" in services[name]["environment"], name
    assert [n for n, svc in services.items()
            if "GETOPERATE_ROUTER_KEY" in (svc.get("environment") or {})] == ["router"]


def test_kubernetes_workers_get_no_token_and_no_other_roles_nats_password() -> None:
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in _k8s_objects()
            if o["kind"] == "ConfigMap"}
    seen = 0
    for name, container in _k8s_worker_containers():
        seen += 1
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, (name, "a whole Secret in the environment")
            for var in maps[source["configMapRef"]["name"]]:
                assert not FORBIDDEN_FOR_WORKERS.search(var), (name, var)
        for var in container.get("env", []):
            assert not FORBIDDEN_FOR_WORKERS.search(var["name"]), (name, var["name"])
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert not FORBIDDEN_FOR_WORKERS.search(ref["key"]), (name, ref)
                assert ref["key"] == "NATS_WORKER_PASSWORD", (name, ref)
        for mount in container.get("volumeMounts", []):
            assert "secret" not in mount["name"].lower(), (name, mount)
    assert seen >= 3
    keyed = {o["metadata"]["name"] for o in _k8s_objects()
             if o["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet")
             for c in o["spec"]["template"]["spec"]["containers"]
             for v in c.get("env", []) if v["name"] == "GETOPERATE_ROUTER_KEY"}
    assert keyed == {"router"}  # the routers' key reaches the routers only


def test_nats_pods_and_compose_nats_get_password_hashes_not_passwords() -> None:
    nats_set = next(o for o in _k8s_objects()
                    if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "nats")
    env = nats_set["spec"]["template"]["spec"]["containers"][0]["env"]
    keys = {v["valueFrom"]["secretKeyRef"]["key"] for v in env
            if "secretKeyRef" in v.get("valueFrom", {})}
    assert keys == {natsauth.hash_env_var(role) for role in natsauth.ROLES}
    compose_env = _compose()["services"]["nats"]["environment"]
    assert set(compose_env) == {natsauth.hash_env_var(role) for role in natsauth.ROLES}
    for role in natsauth.ROLES:
        # The hash when one is set, else (nats-server accepts either) the plain password.
        var = natsauth.hash_env_var(role)
        assert compose_env[var].startswith("${" + var + ":-${NATS_" + role.upper() + "_PASSWORD:?")
    secret = next(o for o in _k8s_objects() if o["kind"] == "Secret")
    assert {natsauth.hash_env_var(role) for role in natsauth.ROLES} <= set(secret["stringData"])


def test_dockerfile_keeps_the_data_dir_private() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"chmod\s+0?700\s+/data", dockerfile)


def test_credentials_and_token_files_are_created_private(tmp_path: Path) -> None:
    from services.common.runtime import admin_token

    data = tmp_path / "d"
    with _umask(0o022):
        natsauth.load_or_create(data)
        admin_token(data, create=True)
    assert loose(data) == []
    assert json.loads((data / natsauth.CREDENTIALS_FILE).read_text()).keys() == set(natsauth.ROLES)
