"""Secrets at rest under a real `getoperate up`: after a config write and a job, nothing in the
data dir (a 0755 one left by an older version included) is open to group or others; nats.conf
holds bcrypt hashes, not passwords; jobs run in folders outside the data dir, and a job looking
for `../../../admin.token` finds nothing; workers get no token in their environment."""

from __future__ import annotations

import json
import signal
import stat
from pathlib import Path

from cli.up import jobs_dir
from tests.integration.harness import Proc, cli, free_port_base
from tests.fsmodes import loose




def _children(pid: int) -> dict[int, str]:
    """pid -> command line of the processes whose parent is `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                    found[int(entry.name)] = cmdline.decode()
            except OSError:
                continue
    return found


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_up_keeps_its_data_dir_private_and_runs_jobs_outside_it(tmp_path: Path) -> None:
    data = tmp_path / ".getoperate"
    data.mkdir()
    data.chmod(0o755)  # as an older version left it
    (data / "left-by-an-older-version.json").write_text("{}")
    (data / "left-by-an-older-version.json").chmod(0o644)
    base = free_port_base()
    up = Proc(["up", "--data-dir", str(data), "--port-base", str(base)], cwd=tmp_path,
              env={"GETOPERATE_TOKEN": "gow_a-token-no-worker-needs"}, name="up")
    try:
        up.wait_for("Ctrl-C stops everything", timeout=60)
        # A config write: group env values are secrets of their own, kept in config.sqlite.
        done = cli("--data-dir", str(data), "group", "set", "default", "--env",
                   "DB_PASSWORD=hunter2-not-for-others", "--reason", "secrets test", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        # The attack that worked: a job reading the data dir by a relative path.
        code = ("pwd; for f in admin.token nats-credentials.json; do"
                " cat ../../../$f ../../$f ../$f 2>/dev/null; done; echo done")
        done = cli("--data-dir", str(data), "run", "--language", "bash", "--code", code,
                   "--wait", "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        view = json.loads(done.stdout)
        # Sandboxed, the job sees its folder as /job; where it really is, the workers' WORKER_DIR
        # below says (outside the data dir).
        assert view["logs"].splitlines()[0] == "/job", view["logs"]
        token = (data / "admin.token").read_text().strip()
        passwords = json.loads((data / "nats-credentials.json").read_text()).values()
        assert token not in view["logs"] and not any(pw in view["logs"] for pw in passwords)
        assert stat.S_IMODE(jobs_dir(data.resolve()).stat().st_mode) == 0o700

        workers = [pid for pid, cmd in _children(up.p.pid).items()
                   if cmd.split()[-1:] == ["worker"]]
        assert len(workers) == 2
        for pid in workers:
            env = _environ(pid)
            assert not [var for var in env if "TOKEN" in var], sorted(env)
            assert Path(env["WORKER_DIR"]).is_relative_to(jobs_dir(data.resolve()))

        conf = (data / "nats" / "nats.conf").read_text()
        assert not any(pw in conf for pw in passwords)
        assert conf.count('password: "$2a$') == 1  # the config user; the authority checks the rest
        assert "auth_callout" in conf
        assert not [var for pid in workers for var in _environ(pid) if "NATS_SECRET" in var]
        assert (data / "config.sqlite-wal").exists()
        assert list((data / "nats" / "jetstream").rglob("*.blk"))
        assert loose(data) == []
    finally:
        rc = up.stop(signal.SIGINT, timeout=60)
    assert rc == 0
    assert loose(data) == []  # what was written while stopping too
    assert not jobs_dir(data.resolve()).exists()  # scratch space, removed on a clean stop
