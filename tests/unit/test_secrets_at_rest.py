"""Secrets at rest: nats-server's config names one user, `config`, by a bcrypt hash of its
password, and the authority checks every other password, derived from one secret (real
nats-server, the real authority, real connections per user); data dirs are private whatever the
umask (SQLite's WAL and SHM, nats-server's JetStream store, a data dir left 0755 by an older
version); and no worker of compose.yaml or the Kubernetes example gets a token, the secret, or a
NATS password but its own group's."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import os
import re
import secrets
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import bcrypt
import nats
import pytest
import yaml

from services.common import natsauth, permissions
from services.common.natsserver import (
    NatsServer, NatsServerError, find_binary, free_port, port_open,
)
from services.common.runtime import private_dir, write_private
from tests.unit.support import ROOT, compose, runs
from tests.fsmodes import loose

K8S = ROOT / "deploy" / "kubernetes" / "manifests"
GROUPS = ("default", "native", "gpu")  # the worker groups of compose.yaml and Kubernetes
# A fixed secret whose config password starts with a letter: nats-server parses a plain password
# from its environment as config (compose's fallback), and would refuse one starting with `-`.
SECRET = b"unit-test-nats-secret-0123456789abcdef"
CREDS = natsauth.credentials(SECRET, GROUPS)
ISSUER = natsauth.issuer(SECRET).public
# What a worker must never be given: a bearer token, the deployment's NATS secret (it derives
# every password), the routers' key that signs flow grants, or a NATS password (or hash) other
# than its own group's.
FORBIDDEN_FOR_WORKERS = re.compile(r"TOKEN|NATS_SECRET|ROUTER_KEY|NATS_\w*PASSWORD\w*", re.I)


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


def _name(**declare: str) -> tuple[str, str]:
    """A connection name declaring a fresh inbox (and `declare`), and that inbox's prefix."""
    token = secrets.token_hex(8)
    words = [f"inbox={token}", *(f"{k}={v}" for k, v in declare.items())]
    return " ".join(["probe", *words]), f"_INBOX.{token}"


def _declared(user: str) -> dict[str, str]:
    return {"worker": "probe-1"} if user.startswith(natsauth.WORKER_USER_PREFIX) else {}


def _refused(url: str, user: str, password: str) -> bool:
    """Whether these credentials are refused (by nats-server, or by the authority it asks),
    with a well-formed connection name, so a refusal is the password's. Its protocol by hand:
    nats-py leaves a transport open behind a refused connect."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    name, _ = _name(**_declared(user))
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.recv(4096)  # INFO
        connect = {"user": user, "pass": password, "name": name, "verbose": False,
                   "pedantic": False}
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


async def _connect(url: str, user: str, password: str) -> None:
    """Connect as `user` the way the services do (bus.connect), round trip, close."""
    name, inbox = _name(**_declared(user))
    if user == natsauth.AUTH_USER:
        inbox = f"{permissions.CONFIG_INBOX}.{secrets.token_hex(8)}"
    nc = await nats.connect(url, user=user, password=password, name=name, inbox_prefix=inbox,
                            allow_reconnect=False, connect_timeout=5)
    await nc.flush()
    await nc.close()


@contextlib.asynccontextmanager
async def _authority(url: str) -> AsyncIterator[None]:
    """The config service's authority (services/config/authority.py) on an empty config."""
    from services.common.log import Logger
    from services.config.authority import Authority
    from shared.state import ConfigState

    nc = await nats.connect(url, user=natsauth.AUTH_USER, password=CREDS[natsauth.AUTH_USER],
                            inbox_prefix=f"{permissions.CONFIG_INBOX}.{secrets.token_hex(8)}",
                            allow_reconnect=False)
    authority = Authority(nc, SECRET, ConfigState, Logger("test", stream=io.StringIO()))
    await authority.start()
    await nc.flush()
    try:
        yield
    finally:
        await authority.stop()
        await nc.close()


def _each_user_connects_with_its_password_only(url: str, hashes: dict[str, str]) -> None:
    async def connect_all() -> None:
        async with _authority(url):
            for user, password in CREDS.items():
                await _connect(url, user, password)
            for user, password in (
                (natsauth.worker_user("native"), CREDS[natsauth.worker_user("default")]),
                (natsauth.worker_user("gpu"), CREDS[natsauth.worker_user("native")]),
                ("router", CREDS["admin"]),
                ("admin", ""),
                ("admin", SECRET.decode()),  # the secret derives passwords; it is not one
                (natsauth.AUTH_USER, CREDS["router"]),
                (natsauth.AUTH_USER, hashes[natsauth.AUTH_USER]),  # the hash is no password
            ):
                refused = await asyncio.to_thread(_refused, url, user, password)
                assert refused, (user, "got in with another user's or no password")

    asyncio.run(connect_all())


# --- one secret, derived passwords, one bcrypt hash in nats-server's config ------------------

def test_config_block_names_the_config_user_by_its_hash_and_refuses_plain_passwords(
    tmp_path: Path,
) -> None:
    hashes = natsauth.password_hashes(tmp_path, CREDS)
    assert set(hashes) == set(natsauth.HASHED_ROLES) == {natsauth.AUTH_USER}
    hashed = hashes[natsauth.AUTH_USER]
    assert hashed.startswith("$2a$") and int(hashed.split("$")[2]) >= natsauth.MIN_BCRYPT_COST
    assert bcrypt.checkpw(CREDS[natsauth.AUTH_USER].encode(), hashed.encode())
    block = natsauth.config_block(hashes, ISSUER)
    assert json.dumps(hashed) in block and f"issuer: {ISSUER}" in block
    assert "auth_users: [config]" in block
    assert re.findall(r"\{user: (\w+)", block) == [natsauth.AUTH_USER]  # the rest: the authority
    assert not any(pw in block for pw in CREDS.values()) and SECRET.decode() not in block
    with pytest.raises(ValueError, match="bcrypt"):
        natsauth.config_block(CREDS, ISSUER)  # a plain password would end up in a config file
    with pytest.raises(ValueError, match="bcrypt"):  # below the minimum cost, or `$2b$`
        natsauth.config_block({natsauth.AUTH_USER: hashed.replace("$2a$10$", "$2a$04$", 1)})
    with pytest.raises(ValueError, match="bcrypt"):
        natsauth.config_block({natsauth.AUTH_USER: "$2b$" + hashed[4:]})
    # Deployments: nats-server reads the hash and the issuer from its environment.
    block = natsauth.config_block()
    assert "password: $NATS_CONFIG_PASSWORD_HASH," in block and "issuer: $NATS_AUTH_ISSUER" in block


def test_hashes_are_computed_once_and_again_when_the_password_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = natsauth.hash_password

    def counting(password: str, cost: int = natsauth.BCRYPT_COST) -> str:
        calls.append(password)
        return real(password, cost)

    monkeypatch.setattr(natsauth, "hash_password", counting)
    config = natsauth.AUTH_USER
    first = natsauth.password_hashes(tmp_path, CREDS)
    assert calls == [CREDS[config]]  # the config user's only: the authority checks the others
    path = tmp_path / natsauth.HASHES_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not any(pw in path.read_text() for pw in CREDS.values())
    before = path.read_bytes()
    assert natsauth.password_hashes(tmp_path, CREDS) == first  # a restart: no bcrypt at all
    assert len(calls) == 1 and path.read_bytes() == before
    assert natsauth.password_hashes(tmp_path, {**CREDS, "router": "another"}) == first
    assert len(calls) == 1
    again = natsauth.password_hashes(tmp_path, {**CREDS, config: "a-new-config-password"})
    assert calls[1:] == ["a-new-config-password"] and again[config] != first[config]
    assert bcrypt.checkpw(b"a-new-config-password", again[config].encode())
    path.write_text("{not json")  # a damaged cache is rebuilt, not trusted
    assert natsauth.password_hashes(tmp_path, CREDS).keys() == {config} and len(calls) == 3
    forged = json.loads(path.read_text())
    forged[config]["hash"] = real("a-password-nobody-uses", natsauth.MIN_BCRYPT_COST)
    path.write_text(json.dumps(forged))  # a cached hash of another password is not reused
    assert bcrypt.checkpw(CREDS[config].encode(),
                          natsauth.password_hashes(tmp_path, CREDS)[config].encode())
    assert len(calls) == 4


def test_passwords_are_derived_per_user_and_per_secret() -> None:
    users = [*natsauth.ROLES, *(natsauth.worker_user(g) for g in GROUPS),
             natsauth.worker_user(tags=["gpu", "cuda"])]
    passwords = [natsauth.password(SECRET, user) for user in users]
    assert len(set(passwords)) == len(users)  # every role and every group its own
    assert all(len(pw) == 32 and re.fullmatch(r"[A-Za-z0-9_-]+", pw) for pw in passwords)
    assert natsauth.password(SECRET, "worker:default") == CREDS["worker:default"]  # stable
    assert natsauth.password(b"another-secret", "worker:default") != CREDS["worker:default"]
    assert natsauth.worker_user(tags=["cuda", "gpu", "gpu"]) == "worker-tags:cuda,gpu"
    assert natsauth.issuer(SECRET).public != natsauth.issuer(b"another-secret").public


def test_nats_server_takes_the_hash_and_every_user_connects_with_its_own_password_only(
    tmp_path: Path,
) -> None:
    _binary()
    hashes = natsauth.password_hashes(tmp_path, CREDS)
    with NatsServer(tmp_path / "nats", auth=natsauth.config_block(hashes, ISSUER)) as server:
        conf = (tmp_path / "nats" / "nats.conf").read_text()
        assert not any(pw in conf for pw in CREDS.values())
        _each_user_connects_with_its_password_only(server.url, hashes)


@pytest.mark.parametrize("given", ["hash", "plain password"])
def test_deploy_nats_conf_takes_the_hash_and_issuer_from_the_environment(
    tmp_path: Path, given: str
) -> None:
    """compose.yaml's nats-server: deploy/nats.conf with NATS_CONFIG_PASSWORD_HASH (a `$2a$...`
    hash unquoted from the environment, or compose's fallback, the plain password) and
    NATS_AUTH_ISSUER; real connections of every user through the real authority."""
    binary = _binary()
    port = free_port()
    conf = (ROOT / "deploy" / "nats.conf").read_text()
    conf = conf.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{port}")
    conf = re.sub(r"^http: .*$", "", conf, flags=re.M)
    conf = conf.replace('store_dir: "/data"', f'store_dir: "{tmp_path / "js"}"')
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    config_password = CREDS[natsauth.AUTH_USER]
    hashes = {natsauth.AUTH_USER: natsauth.hash_password(config_password, cost=10)}
    env = {"PATH": os.environ.get("PATH", ""), natsauth.ISSUER_ENV: ISSUER,
           natsauth.hash_env_var(natsauth.AUTH_USER):
               hashes[natsauth.AUTH_USER] if given == "hash" else config_password}
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
        _each_user_connects_with_its_password_only(f"nats://127.0.0.1:{port}", hashes)
    finally:
        proc.terminate()
        proc.wait(10)


def _natsauth(*args: str, secret: str | None, cwd: Path,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NATS_") and k not in (natsauth.SECRET_ENV, "GETOPERATE_DATA_DIR")}
    env["PYTHONPATH"] = str(ROOT)
    if secret is not None:
        env[natsauth.SECRET_ENV] = secret
    return subprocess.run([sys.executable, "-m", "services.common.natsauth", *args], input=stdin,
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def _dotenv(text: str) -> dict[str, str]:
    """An .env file's lines, each value in single quotes (compose leaves `$` in them alone)."""
    lines = dict(line.split("=", 1) for line in text.splitlines())
    for var, value in lines.items():
        assert value[0] == value[-1] == "'" and "'" not in value[1:-1], (var, value)
    return {var: value[1:-1] for var, value in lines.items()}


def test_env_command_prints_the_variables_of_a_deployment(tmp_path: Path) -> None:
    done = _natsauth("env", "--groups", ",".join(GROUPS), secret=SECRET.decode(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = _dotenv(done.stdout)
    workers = {natsauth.worker_password_env(g): natsauth.worker_user(g) for g in GROUPS}
    assert list(workers) == ["NATS_WORKER_DEFAULT_PASSWORD", "NATS_WORKER_NATIVE_PASSWORD",
                             "NATS_WORKER_GPU_PASSWORD"]  # the names compose.yaml and k8s use
    assert set(lines) == {"NATS_AUTH_ISSUER", "NATS_CONFIG_PASSWORD_HASH", "NATS_CONFIG_PASSWORD",
                          "NATS_ROUTER_PASSWORD", "NATS_ADMIN_PASSWORD", "NATS_CLIENT_PASSWORD",
                          *workers}
    assert lines["NATS_AUTH_ISSUER"] == ISSUER
    for role in natsauth.ROLES:
        assert lines[f"NATS_{role.upper()}_PASSWORD"] == CREDS[role], role
    for var, user in workers.items():
        assert lines[var] == CREDS[user], var
    hashed = lines["NATS_CONFIG_PASSWORD_HASH"]
    assert natsauth.is_bcrypt_hash(hashed)
    assert bcrypt.checkpw(CREDS[natsauth.AUTH_USER].encode(), hashed.encode())
    assert SECRET.decode() not in done.stdout
    # Without --groups: the roles only. A bad or ambiguous group list: an error, no output.
    done = _natsauth("env", secret=SECRET.decode(), cwd=tmp_path)
    assert not [v for v in _dotenv(done.stdout) if v.startswith("NATS_WORKER_")]
    for groups in ("default,Not-A-Group", "a-b,a_b"):
        done = _natsauth("env", "--groups", groups, secret=SECRET.decode(), cwd=tmp_path)
        assert done.returncode == 2 and done.stdout == "", groups
        assert "group" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_worker_and_hash_commands_and_no_secret(tmp_path: Path) -> None:
    done = _natsauth("worker", "gpu", secret=SECRET.decode(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _dotenv(done.stdout) == {"NATS_USER": "worker:gpu",
                                    "NATS_PASSWORD": CREDS["worker:gpu"]}
    done = _natsauth("hash", secret=None, cwd=tmp_path, stdin="s3cret-pw\n")
    assert done.returncode == 0, done.stderr
    hashed = done.stdout.strip()
    assert natsauth.is_bcrypt_hash(hashed) and bcrypt.checkpw(b"s3cret-pw", hashed.encode())
    # No GETOPERATE_NATS_SECRET and no ./.getoperate/nats-secret: nothing printed, a hint.
    done = _natsauth("env", secret=None, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert natsauth.SECRET_ENV in done.stderr and "openssl rand" in done.stderr


def test_up_derives_its_credentials_file_from_its_secret_file(tmp_path: Path) -> None:
    data = tmp_path / "d"
    with _umask(0o022):
        creds = natsauth.load_or_create(data, GROUPS)
    secret = (data / natsauth.SECRET_FILE).read_text().strip().encode()
    assert len(secret) == 64  # made once: 32 random bytes, hex
    assert creds == natsauth.credentials(secret, GROUPS)
    assert set(creds) == {*natsauth.ROLES, *(natsauth.worker_user(g) for g in GROUPS)}
    path = data / natsauth.CREDENTIALS_FILE
    assert json.loads(path.read_text()) == creds
    for name in (natsauth.SECRET_FILE, natsauth.CREDENTIALS_FILE):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert loose(data) == []
    # The same secret on the next start: the same passwords; a group added later gets its own.
    assert natsauth.load_or_create(data, GROUPS) == creds
    more = natsauth.load_or_create(data, (*GROUPS, "late"))
    assert {k: more[k] for k in creds} == creds
    assert more["worker:late"] == natsauth.password(secret, "worker:late")
    # Another data dir: another secret, other passwords.
    assert natsauth.load_or_create(tmp_path / "other", GROUPS)["router"] != creds["router"]


def test_credentials_for_prefers_the_environment_then_the_file_then_derivation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "d"
    for var in ("NATS_USER", "NATS_PASSWORD", natsauth.SECRET_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GETOPERATE_DATA_DIR", str(data))
    assert natsauth.credentials_for("router") == (None, None)  # nothing to go by: no auth
    creds = natsauth.load_or_create(data)
    secret = (data / natsauth.SECRET_FILE).read_bytes().strip()
    # The file wins over derivation (an entry that differs from it shows which one answered).
    (data / natsauth.CREDENTIALS_FILE).write_text(json.dumps({**creds, "router": "from-file"}))
    assert natsauth.credentials_for("router") == ("router", "from-file")
    # A user the file lacks (a group created since `up`): derived from the data dir's secret.
    assert natsauth.credentials_for("worker:late") == (
        "worker:late", natsauth.password(secret, "worker:late"))
    # GETOPERATE_NATS_SECRET is the authority's: nobody derives a password from it here.
    monkeypatch.setenv(natsauth.SECRET_ENV, "the-config-services-secret")
    assert natsauth.credentials_for("worker:late") == (None, None)
    assert natsauth.credentials_for("router") == ("router", "from-file")
    # NATS_USER / NATS_PASSWORD win over both.
    monkeypatch.setenv("NATS_USER", "worker:default")
    monkeypatch.setenv("NATS_PASSWORD", "from-env")
    assert natsauth.credentials_for("router") == ("worker:default", "from-env")


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

def _leaks(text: str, allowed: set[str]) -> list[str]:
    """What `text` (a variable's name or value) names that a worker must not get."""
    return [m for m in FORBIDDEN_FOR_WORKERS.findall(text) if m.upper() not in allowed]


def _compose_worker_leaks(services: dict[str, Any]) -> list[tuple[str, str]]:
    """(worker service, what it is given that it must not be): a token, the secret, a hash, or
    a NATS password other than its group's; env files and secrets are not looked into."""
    found = []
    for name, service in services.items():
        if runs(service) != "worker":
            continue
        env = service["environment"]
        own = {natsauth.worker_password_env(str(env.get("WORKER_GROUP")))}
        for var, value in env.items():
            found += [(name, leak) for leak in _leaks(var, {"NATS_PASSWORD"})]
            found += [(name, leak) for leak in _leaks(str(value), own)]
        found += [(name, key) for key in ("env_file", "secrets") if service.get(key)]
    return found


def _k8s_objects() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _k8s_pods(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def _k8s_worker_leaks(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(worker Deployment, what it is given that it must not be): any Secret key but its
    group's password, a whole Secret, a Secret volume, a forbidden variable of a ConfigMap."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    found: list[tuple[str, str]] = []
    for name, pod in _k8s_pods(objects):
        for volume in pod.get("volumes", []):
            sources = volume.get("projected", {}).get("sources", [])
            if "secret" in volume or any("secret" in source for source in sources):
                found.append((name, f"volume {volume['name']}"))
        for container in pod.get("initContainers", []) + pod["containers"]:
            if (container.get("args") or [None])[0] != "worker":
                continue
            env = {v["name"]: v for v in container.get("env", [])}
            own = natsauth.worker_password_env(str(env.get("WORKER_GROUP", {}).get("value")))
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    found.append((name, f"all of Secret {source['secretRef']['name']}"))
                else:
                    for var in maps[source["configMapRef"]["name"]]:
                        found += [(name, leak) for leak in _leaks(var, set())]
            for var in env.values():
                found += [(name, leak) for leak in _leaks(var["name"], {"NATS_PASSWORD"})]
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] != own:
                    found.append((name, ref["key"]))
    return found


def test_compose_workers_get_their_groups_nats_password_only() -> None:
    services = compose()["services"]
    workers = {name: s for name, s in services.items() if runs(s) == "worker"}
    assert {s["environment"]["WORKER_GROUP"] for s in workers.values()} == set(GROUPS)
    assert _compose_worker_leaks(services) == []
    for name, service in workers.items():
        env = service["environment"]
        var = natsauth.worker_password_env(env["WORKER_GROUP"])
        assert env["NATS_USER"] == natsauth.worker_user(env["WORKER_GROUP"]), name
        assert env["NATS_PASSWORD"].startswith("${" + var + ":?"), name
    # The check catches each way a worker could be given too much.
    other = {"default": "native", "native": "gpu", "gpu": "default"}
    for name, service in workers.items():
        group = service["environment"]["WORKER_GROUP"]
        for var, value in (
            (natsauth.SECRET_ENV, "${GETOPERATE_NATS_SECRET:?x}"),
            ("NATS_PASSWORD", "${" + natsauth.worker_password_env(other[group]) + "}"),
            ("NATS_PASSWORD", "${NATS_ROUTER_PASSWORD:?x}"),
            ("NATS_PASSWORD", "${NATS_PASSWORD}"),
            ("EXTRA", "${NATS_CONFIG_PASSWORD_HASH}"),
            ("GETOPERATE_ADMIN_TOKEN", "${GETOPERATE_ADMIN_TOKEN}"),
            ("GETOPERATE_ROUTER_KEY", "${GETOPERATE_ROUTER_KEY}"),
        ):
            changed = copy.deepcopy(services)
            changed[name]["environment"][var] = value
            assert _compose_worker_leaks(changed), (name, var, value)
    # The secret reaches the config service alone; the admin token config and router.
    assert [n for n, svc in services.items()
            if natsauth.SECRET_ENV in (svc.get("environment") or {})] == ["config"]
    # The routers' key reaches the routers alone.
    assert [n for n, svc in services.items()
            if "GETOPERATE_ROUTER_KEY" in (svc.get("environment") or {})] == ["router"]
    for name in ("config", "router"):
        assert "GETOPERATE_ADMIN_TOKEN" in services[name]["environment"], name


def test_kubernetes_workers_get_their_groups_nats_password_only() -> None:
    objects = _k8s_objects()
    workers = {name: pod for name, pod in _k8s_pods(objects)
               if [(c.get("args") or [None])[0] for c in pod["containers"]] == ["worker"]}
    assert set(workers) == {f"worker-{g}" for g in GROUPS}
    assert _k8s_worker_leaks(objects) == []
    for name, pod in workers.items():
        env = {v["name"]: v for v in pod["containers"][0]["env"]}
        group = env["WORKER_GROUP"]["value"]
        assert env["NATS_USER"]["value"] == natsauth.worker_user(group), name
        assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "getoperate-worker-secrets", "key": natsauth.worker_password_env(group)}
    worker_secret = next(o for o in objects if o["kind"] == "Secret"
                         and o["metadata"]["name"] == "getoperate-worker-secrets")
    assert set(worker_secret["stringData"]) == {natsauth.worker_password_env(g) for g in GROUPS}

    def given(deployment: str, **change: Any) -> list[tuple[str, str]]:
        changed = copy.deepcopy(objects)
        pod = next(p for n, p in _k8s_pods(changed) if n == deployment)
        container = pod["containers"][0]
        for key, value in change.items():
            if key == "volumes":
                pod["volumes"] = pod.get("volumes", []) + value
            else:
                container[key] = container.get(key, []) + value
        return _k8s_worker_leaks(changed)

    def secret_var(var: str, key: str, secret: str = "getoperate-worker-secrets") -> list[Any]:
        return [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}]

    # The check catches each way a worker could be given too much.
    assert given("worker-default", env=secret_var(natsauth.SECRET_ENV, natsauth.SECRET_ENV,
                                                  "getoperate-secrets"))
    assert given("worker-default", env=secret_var("NATS_PASSWORD", "NATS_WORKER_NATIVE_PASSWORD"))
    assert given("worker-gpu", env=secret_var("EXTRA", "NATS_ROUTER_PASSWORD",
                                              "getoperate-secrets"))
    assert given("worker-native", envFrom=[{"secretRef": {"name": "getoperate-worker-secrets"}}])
    assert given("worker-native", volumes=[{"name": "s", "secret": {"secretName": "x"}}])
    # The secret reaches the config service alone.
    holders = {name for name, pod in _k8s_pods(objects) for c in pod["containers"]
               for v in c.get("env", []) if v["name"] == natsauth.SECRET_ENV}
    assert holders == {"config"}
    keyed = {name for name, pod in _k8s_pods(objects) for c in pod["containers"]
             for v in c.get("env", []) if v["name"] == "GETOPERATE_ROUTER_KEY"}
    assert keyed == {"router"}  # the routers' key reaches the routers only
    assert given("worker-default", env=secret_var("GETOPERATE_ROUTER_KEY", "GETOPERATE_ROUTER_KEY",
                                                  "getoperate-secrets"))


def test_nats_gets_the_config_users_hash_and_the_issuer_only() -> None:
    nats_set = next(o for o in _k8s_objects()
                    if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "nats")
    env = nats_set["spec"]["template"]["spec"]["containers"][0]["env"]
    keys = {v["valueFrom"]["secretKeyRef"]["key"] for v in env
            if "secretKeyRef" in v.get("valueFrom", {})}
    wanted = {natsauth.hash_env_var(natsauth.AUTH_USER), natsauth.ISSUER_ENV}
    assert keys == wanted
    secret = next(o for o in _k8s_objects() if o["kind"] == "Secret")
    assert wanted <= set(secret["stringData"])
    compose_env = compose()["services"]["nats"]["environment"]
    assert set(compose_env) == wanted
    # The hash when one is set, else (compose's fallback) the plain password.
    assert compose_env["NATS_CONFIG_PASSWORD_HASH"] == (
        "${NATS_CONFIG_PASSWORD_HASH:-${NATS_CONFIG_PASSWORD:?set NATS_CONFIG_PASSWORD}}")
    # Required, and the error says how to make it.
    issuer = compose_env["NATS_AUTH_ISSUER"]
    assert issuer.startswith("${NATS_AUTH_ISSUER:?") and "natsauth env" in issuer


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
