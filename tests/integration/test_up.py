"""`getoperate up` as a user runs it: ports, data dir, endpoints file, token, clean Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

from services.common.natsserver import port_open
from tests.integration.harness import Proc, cli, free_port_base


def _pids_of_children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def test_up_writes_endpoints_and_token_and_stops_every_child_on_ctrl_c(tmp_path: Path) -> None:
    base = free_port_base()
    data = tmp_path / "state"
    up = Proc(["up", "--data-dir", str(data), "--port-base", str(base)], cwd=tmp_path, env={},
              name="up")
    try:
        up.wait_for("Ctrl-C stops everything", timeout=60)
        out = up.output()
        for port in (base, base + 1, base + 2):
            assert f"127.0.0.1:{port}" in out
            assert port_open(port)
        endpoints = json.loads((data / "endpoints.json").read_text())
        assert endpoints == {"nats_url": f"nats://127.0.0.1:{base}",
                             "config_url": f"http://127.0.0.1:{base + 1}",
                             "router_url": f"http://127.0.0.1:{base + 2}", "pid": up.p.pid}
        token_file = data / "admin.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        # The CLI in the same folder needs no flags beyond the data dir.
        groups = cli("--data-dir", str(data), "group", "list", "--json", cwd=tmp_path)
        assert groups.returncode == 0, groups.stderr
        assert (data / "nats" / "jetstream").is_dir()
        assert (data / "config.sqlite").exists()
        children = _pids_of_children(up.p.pid)
        assert len(children) == 5  # nats-server, config, router, two workers
    finally:
        rc = up.stop(signal.SIGINT, timeout=60)
    assert rc == 0
    assert "getoperate stopped" in up.output()
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    for port in (base, base + 1, base + 2):
        assert not port_open(port)


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        proc = cli("up", "--data-dir", str(tmp_path / "d"), "--nats-port", str(busy), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"port {busy} (--nats-port) is already in use" in proc.stderr
    assert os.listdir(tmp_path / "d") == []  # nothing started, nothing written but the folder
