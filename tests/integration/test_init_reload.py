"""A group's isolation changed again and again under a worker with an init script: every hot
reload restarts the script cleanly, in a cgroup of its own, after the old run's daemons are gone
(the old run's cgroup, removed in the background, once took the new run's away: 2 changes in 8
failed with "cgroup.procs: Directory nonexistent")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.integration.conftest import Suite
from tests.integration.harness import Proc, live_pids, needs_sandbox, wait_until

pytestmark = needs_sandbox

MiB = 1024**2
DAEMON = "sleep 86417"  # what the init script leaves running, found by its command line


def init_outcomes(proc: Proc) -> int:
    """Runs of the init script the worker finished, well or not (a crashed run included)."""
    crashed = [e for e in proc.log_events("task_failed") if e.get("task") == "init-script"]
    return (len(proc.log_events("init_script_ok")) + len(proc.log_events("init_script_failed"))
            + len(crashed))


def memory_limit(pid: int) -> int | None:
    """The memory limit of the cgroup `pid` is in (cgroup v1 or v2), if it can be read."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctls, path = line.split(":", 2)
        if "memory" in ctls.split(","):
            found = Path("/sys/fs/cgroup/memory", path.lstrip("/"), "memory.limit_in_bytes")
        elif ctls == "":
            found = Path("/sys/fs/cgroup", path.lstrip("/"), "memory.max")
        else:
            continue
        if found.exists():
            return int(found.read_text())
    return None


def test_toggling_network_and_limits_restarts_the_init_script_cleanly_every_time(
    extra_workers: Suite,
) -> None:
    s = extra_workers
    s.api.set_group("initflip", tags=["t-initflip"], init_script=f"{DAEMON} &\necho up\n")
    proc = s.worker("initflip", WORKER_GROUP="initflip")
    wait_until(lambda: init_outcomes(proc) == 1, "the first run of the init script", 60)
    changes: list[dict[str, Any]] = []
    for i in range(4):  # a network change, then a limits change, four times; network off last
        changes += [{"network": i % 2 == 1}, {"limits": {"memory": (300 + 20 * i) * MiB}}]
    changes.append({"network": False})
    for n, change in enumerate(changes, start=2):
        s.api.set_group("initflip", **change)
        wait_until(lambda n=n: init_outcomes(proc) >= n, f"the init script's run after {change}",
                   20)

    failed = [e.get("output") or e.get("error") for e in proc.log_events("init_script_failed")
              + proc.log_events("task_failed")]
    assert failed == [], failed
    assert len(proc.log_events("init_script_ok")) == len(changes) + 1
    last = s.api.wait_workers(lambda ws: any(
        w["group"] == "initflip" and w["state"] == "ready" and w["init_status"] == "ok"
        and w["network"] is False for w in ws))
    assert [w["sandbox"] for w in last if w["group"] == "initflip"] == ["bwrap"]
    # One daemon: each change ended the old sandbox's; it runs with the last network and limits.
    wait_until(lambda: len(live_pids(DAEMON)) == 1, "only the last run's daemon alive", 10)
    [daemon] = live_pids(DAEMON)
    assert os.readlink(f"/proc/{daemon}/ns/net") != os.readlink("/proc/self/ns/net")
    if not proc.log_events("cgroups_unavailable"):
        assert memory_limit(daemon) == 360 * MiB
