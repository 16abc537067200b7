"""Real PostgreSQL and MariaDB servers for tests, each in its own temp folder.

TCP on 127.0.0.1 only, on a free port; the unix socket lives in the temp folder. PostgreSQL
refuses to run as root, so under root initdb and postgres run as `nobody` (setpriv), owning
their folder; mariadbd is told to stay root. Both are stopped and their folders removed on exit.
.ci/run installs the packages (postgresql, mariadb-server) and sets GETOPERATE_REQUIRE_DATABASES:
there the tests never skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRED = bool(os.environ.get("GETOPERATE_REQUIRE_DATABASES"))
PASSWORD = "s3cret-pw"


def postgres_bin() -> Path | None:
    """The folder holding initdb and postgres (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    candidates = [str(Path(found).resolve().parent)] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                         reverse=True)
    for folder in candidates:
        if os.access(Path(folder) / "initdb", os.X_OK) and os.access(Path(folder) / "postgres",
                                                                      os.X_OK):
            return Path(folder)
    return None


def mariadbd() -> str | None:
    for name in ("mariadbd", "mysqld"):
        found = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}",
                                                                          os.X_OK) else None)
        if found:
            return found
    return None


def _skip(missing: bool, what: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(missing and not REQUIRED,
                              reason=f"{what} is not installed; .ci/run installs it")


needs_postgres = _skip(postgres_bin() is None, "PostgreSQL (apt-get install postgresql)")
needs_mariadb = _skip(mariadbd() is None, "MariaDB (apt-get install mariadb-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(proc: subprocess.Popen[bytes], log: Path, text: str, what: str,
              timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text(errors="replace") if log.exists() else ""):
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {text!r} not logged within {timeout}s:\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def postgres_server(databases: tuple[str, ...] = ()) -> Iterator[dict[str, str]]:
    """A PostgreSQL server; yields a URL per database (`postgres` and `databases`)."""
    binaries = postgres_bin()
    assert binaries is not None, "PostgreSQL is not installed (apt-get install postgresql)"
    root = Path(tempfile.mkdtemp(prefix="go-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses root: its folder and processes are nobody's
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        as_user = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                   "--clear-groups"]
    (root / "pw").write_text(PASSWORD + "\n")
    if as_user:
        os.chown(root / "pw", nobody.pw_uid, nobody.pw_gid)
    port = free_port()
    proc = None
    try:
        subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(root / "data"),
                        "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                        f"--pwfile={root / 'pw'}", "--no-sync", "--no-locale", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=60, cwd=root)
        log = root / "postgres.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*as_user, str(binaries / "postgres"), "-D", str(root / "data"), "-p", str(port),
                 "-h", "127.0.0.1", "-k", str(root), "-c", "fsync=off",
                 "-c", "full_page_writes=off", "-c", "synchronous_commit=off"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root)
        _wait_for(proc, log, "database system is ready to accept connections", "postgres")
        base = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}"
        for db in databases:
            subprocess.run([*as_user, str(binaries / "psql"), "-h", str(root), "-p", str(port),
                            "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                            "-c", f"CREATE DATABASE {db}"],
                           check=True, capture_output=True, timeout=30, cwd=root)
        yield {db: f"{base}/{db}" for db in ("postgres", *databases)}
    finally:
        if proc is not None:
            _stop(proc, signal.SIGINT)  # fast shutdown: clients are cut off
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mariadb_server(database: str = "app") -> Iterator[str]:
    """A MariaDB (or MySQL) server with a user `go` and a database; yields its URL."""
    server = mariadbd()
    assert server is not None, "MariaDB is not installed (apt-get install mariadb-server)"
    root = Path(tempfile.mkdtemp(prefix="go-my-"))
    user = ["--user=root"] if os.geteuid() == 0 else []
    port = free_port()
    sock = root / "sock"
    proc = None
    try:
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        assert install, "mariadb-install-db is missing (apt-get install mariadb-server)"
        subprocess.run([install, "--no-defaults", f"--datadir={root / 'data'}", *user,
                        "--auth-root-authentication-method=normal", "--skip-test-db",
                        "--skip-name-resolve"],
                       check=True, capture_output=True, timeout=120, cwd=root)
        log = root / "mariadb.log"
        proc = subprocess.Popen(
            [server, "--no-defaults", f"--datadir={root / 'data'}", *user, f"--port={port}",
             "--bind-address=127.0.0.1", f"--socket={sock}", f"--pid-file={root / 'pid'}",
             "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
             "--innodb-flush-log-at-trx-commit=0", f"--log-error={log}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            cwd=root)
        _wait_for(proc, log, "ready for connections", "mariadbd")
        client = shutil.which("mariadb") or shutil.which("mysql")
        assert client, "the mariadb client is missing (apt-get install mariadb-server)"
        subprocess.run([client, "--no-defaults", f"--socket={sock}", "-u", "root", "-e",
                        (f"CREATE USER 'go'@'%' IDENTIFIED BY '{PASSWORD}';"
                         f" GRANT ALL ON *.* TO 'go'@'%'; CREATE DATABASE {database};")],
                       check=True, capture_output=True, timeout=30, cwd=root)
        yield f"mysql://go:{PASSWORD}@127.0.0.1:{port}/{database}"
    finally:
        if proc is not None:
            _stop(proc, signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)
