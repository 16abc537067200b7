"""The attacks of the "job code is untrusted" issue, replayed as jobs against a real suite.

Each attack runs as a job on a sandboxed worker and must get nothing; where it matters the same
attack on a `JOB_SANDBOX=none` worker is the control that shows the test can see a leak.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from cli.client import CliError
from tests.integration.conftest import Suite, running_suite
from tests.integration.harness import cli, live_pids, needs_sandbox

pytestmark = needs_sandbox


@pytest.fixture(scope="module")
def s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("sandbox"), kill_extra=True,
                       ready=("default",)) as suite:
        yield suite


def run(s: Suite, code: str, timeout: float = 30, **body: Any) -> dict[str, Any]:
    """Submit and wait for the job's outcome (`timeout`: how long the wait may take)."""
    return s.api.job(s.api.submit(code, **body)["id"], timeout=timeout)  # type: ignore[no-any-return]


def secrets_of(s: Suite) -> dict[str, str]:
    data = s.root / ".getoperate"
    out = {"admin token": (data / "admin.token").read_text().strip()}
    for role, password in json.loads((data / "nats-credentials.json").read_text()).items():
        out[f"NATS password of {role}"] = password
    return out


def attack_script(data: Path) -> str:
    """Everything a job tried in the issue: relative and absolute paths, /proc, environment."""
    return ATTACK.replace("@DATA@", str(data))


ATTACK = r"""
D=@DATA@
{ ls -la $D .. ../.. / /tmp 2>/dev/null
for p in /proc/[0-9]*; do
  tr '\0' '\n' < $p/environ 2>/dev/null; tr '\0' ' ' < $p/cmdline 2>/dev/null; echo
  ls -l $p/fd 2>/dev/null
  for f in $p/fd/*; do
    [ -f "$f" ] && head -c 65536 "$f" 2>/dev/null | grep -a -o '[[:print:]]\{16,\}' | head -c 2000
  done
done
tr '\0' '\n' < /proc/$PPID/environ 2>/dev/null
env
find / -xdev \( -name admin.token -o -name 'nats-credentials.json' -o -name '*.sqlite' \
  -o -name args.json -o -name .args \) 2>/dev/null | while read -r f; do echo "$f"; cat "$f"; done
} | tr -cd '[:print:]\n' | tail -c 60000  # what it found, readable, in a log that fits
# last, so a log cut to its tail still shows them
for f in ../../../admin.token ../../admin.token ../admin.token ../../../nats-credentials.json \
         $D/admin.token $D/nats-credentials.json $D/nats/nats.conf $D/endpoints.json; do
  cat "$f" 2>/dev/null
done
head -c 64 $D/config.sqlite 2>/dev/null
echo attack-done
"""


def leaks(view: dict[str, Any], secrets: dict[str, str]) -> list[str]:
    text = json.dumps(view)
    found = [name for name, value in secrets.items() if value in text]
    if "SQLite format 3" in text:
        found.append("the SQLite config log")
    return found


def test_no_key_reaches_a_sandboxed_job_by_any_path(s: Suite) -> None:
    view = run(s, attack_script(s.root / ".getoperate"), workspace="ws2")
    assert view["status"] == "success" and view["result"] == "attack-done", view
    assert leaks(view, secrets_of(s)) == []
    assert "NATS_PASSWORD" not in view["logs"] and "GETOPERATE" not in view["logs"]


def test_the_same_attack_without_a_sandbox_finds_the_keys(s: Suite) -> None:
    """The control: with JOB_SANDBOX=none the job is as strong as its worker (docs/security.md)."""
    s.api.set_group("nobox", tags=["t-nobox"])
    s.worker("nobox", WORKER_GROUP="nobox", JOB_SANDBOX="none")
    # unsandboxed, its `find /` walks the whole host (every test's temp folders): give it time
    view = run(s, attack_script(s.root / ".getoperate"), tag="t-nobox", timeout=90)
    assert view["status"] == "success"
    assert "admin token" in leaks(view, secrets_of(s)), view["logs"][-3000:]
    status = [w for w in s.api.workers() if w["group"] == "nobox"][0]
    assert status["sandbox"] == "none" and status["sandbox_note"]
    warned = [e for e in s.extra[-1].log_events("sandbox_off")]
    assert warned and "WITHOUT A SANDBOX" in warned[0]["warning"]


def test_a_job_sees_only_its_own_processes_and_cannot_reach_its_worker(s: Suite) -> None:
    code = "ls /proc | grep -E '^[0-9]+$' | wc -l; kill -9 $PPID 1 2>&1; echo alive"
    view = run(s, code)
    assert view["status"] == "success", view
    count = int(view["logs"].split()[0])
    assert count <= 6, view["logs"]  # bwrap's init, bash, ls, grep, wc: never the host's
    ready = [w for w in s.api.workers() if w["group"] == "default" and w["state"] == "ready"]
    assert ready and run(s, "echo still-here")["result"] == "still-here"


def _wait_gone(needle: str, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (pids := live_pids(needle)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids


def _wait_seen(needle: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not live_pids(needle):
        assert time.monotonic() < deadline, f"{needle!r} never started"
        time.sleep(0.02)


@pytest.mark.parametrize("ending", ["success", "failure", "timeout"])
def test_nothing_survives_its_job_setsid_and_double_fork_included(s: Suite, ending: str) -> None:
    mark = f"{time.time_ns() % 10**9}.{len(ending)}7"
    code = (f"nohup setsid bash -c 'sleep {mark}; true' >/dev/null 2>&1 &\n"
            f"( ( sleep {mark}1 & ) & )\n"
            f"sleep 1.5\n")
    code += {"success": "echo ok", "failure": "exit 3", "timeout": "sleep 30"}[ending]
    job = s.api.submit(code, **({"timeout": 3} if ending == "timeout" else {}))["id"]
    _wait_seen(f"sleep {mark}1")  # both escaped processes run while the job does
    assert live_pids(f"sleep {mark}")
    view = s.api.job(job)
    assert view["status"] == ("success" if ending == "success" else "failure"), view
    assert _wait_gone(f"sleep {mark}") == []


def test_a_cancelled_jobs_daemons_are_gone_too(s: Suite) -> None:
    mark = f"{time.time_ns() % 10**9}.9"
    job = s.api.submit(f"nohup setsid sleep {mark} >/dev/null 2>&1 & sleep 60")["id"]
    _wait_seen(f"sleep {mark}")
    assert cli("cancel", job, cwd=s.root).returncode == 0
    assert s.api.job(job)["status"] == "cancelled"
    assert _wait_gone(f"sleep {mark}") == []


def test_a_spy_left_by_one_job_never_sees_a_later_jobs_arguments(s: Suite) -> None:
    s.api.set_group("spied", tags=["t-spied"])
    s.worker("spied", WORKER_GROUP="spied", WORKER_CONCURRENCY="2")
    spy = s.api.submit(
        "nohup setsid bash -c 'for i in $(seq 60); do cat /proc/*/cmdline /job/../*/.args"
        " /job/../*/args.json 2>/dev/null; find / -xdev -name .args 2>/dev/null; sleep 0.1;"
        " done' > /job/seen 2>&1 &\n"
        "for i in $(seq 40); do cat /proc/*/cmdline 2>/dev/null; ps -ef 2>/dev/null;"
        " find / -xdev \\( -name .args -o -name args.json \\) -exec cat {} + 2>/dev/null;"
        " sleep 0.1; done; cat /job/seen", tag="t-spied", workspace="ws2")["id"]
    time.sleep(0.5)
    secret = "sk_live_" + str(time.time_ns())
    victims = [s.api.submit('sleep 2; echo "$1" | wc -c', tag="t-spied", workspace="ws1",
                            args={"key": secret}),
               s.api.submit("import time\ndef main(key):\n    time.sleep(2)\n    return len(key)",
                            language="python3", tag="t-spied", workspace="ws1",
                            args={"key": secret})]
    for v in victims:
        assert s.api.job(v["id"])["status"] == "success"
    seen = s.api.job(spy)
    assert seen["status"] == "success"
    assert secret not in json.dumps(seen)


def test_job_arguments_never_travel_on_a_command_line(s: Suite) -> None:
    secret = "sk_live_argv_" + str(time.time_ns())
    job = s.api.submit('sleep 3; echo "got $1"', args={"key": secret})["id"]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # every process of the host, while the job runs
        assert live_pids(secret) == []
        time.sleep(0.05)
    assert s.api.job(job)["result"] == f"got {secret}"


def test_bash_stderr_never_becomes_the_result(s: Suite) -> None:
    view = run(s, "echo 20; echo warn >&2")
    assert view["result"] == "20" and "warn" in view["logs"]


def test_the_worker_process_is_not_dumpable() -> None:
    """What keeps a same-user job (a non-root worker) out of the worker's /proc files."""
    code = ("from services.worker.main import guard_secrets; guard_secrets(); import ctypes;"
            "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))")  # PR_GET_DUMPABLE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
    assert ctypes.CDLL(None).prctl(3, 0, 0, 0, 0) == 1  # the test process itself: the default


def test_a_standalone_worker_refuses_to_start_without_a_sandbox(s: Suite) -> None:
    out = subprocess.run([sys.executable, "-m", "cli.main", "worker"], cwd=s.root,
                         env={"PATH": "/nonexistent", "NATS_URL": s.plain_nats_url},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "JOB_SANDBOX" in lines[0] and "bubblewrap" in lines[0], out.stderr


def test_no_network_per_group_is_hot_reloaded(s: Suite) -> None:
    probe = f"(exec 3<>/dev/tcp/127.0.0.1/{s.base}) 2>/dev/null && echo reached || echo blocked"
    s.api.set_group("netg", tags=["t-net"])
    s.worker("netg", WORKER_GROUP="netg")
    assert run(s, probe, tag="t-net")["result"] == "reached"  # the default: network on
    changed = s.api.set_group("netg", network=False)
    s.api.wait_workers(lambda ws: any(w["group"] == "netg" and w["config_version"] >= changed["seq"]
                                      and w["network"] is False for w in ws))
    assert run(s, probe, tag="t-net")["result"] == "blocked"
    s.api.set_group("netg", network=True)
    deadline = time.monotonic() + 20
    while run(s, probe, tag="t-net")["result"] != "reached":
        assert time.monotonic() < deadline


def test_the_sandbox_can_be_switched_per_group_without_a_restart(s: Suite) -> None:
    count = "ls /proc | grep -cE '^[0-9]+$'"
    s.api.set_group("boxg", tags=["t-box"])
    proc = s.worker("boxg", WORKER_GROUP="boxg")
    assert int(run(s, count, tag="t-box")["result"]) <= 6
    changed = s.api.set_group("boxg", sandbox="none")
    s.api.wait_workers(lambda ws: any(w["group"] == "boxg" and w["config_version"] >= changed["seq"]
                                      and w["sandbox"] == "none" for w in ws))
    assert int(run(s, count, tag="t-box")["result"]) > 6  # the host's processes: no sandbox
    reloads = proc.log_events("hot_reload")
    assert any("sandbox: none" in c for e in reloads for c in e["changes"]), reloads
    s.api.set_group("boxg", sandbox=None)
    s.api.wait_workers(lambda ws: any(w["group"] == "boxg" and w["sandbox"] == "bwrap"
                                      for w in ws))
    assert int(run(s, count, tag="t-box")["result"]) <= 6
    assert proc.p.poll() is None  # the same process all along


def test_limits_set_from_the_cli_reach_running_workers(s: Suite) -> None:
    s.api.set_group("limg", tags=["t-lim"])
    s.worker("limg", WORKER_GROUP="limg")
    out = cli("group", "set", "limg", "--limits", "processes=32,max_timeout=60", "--reason",
              "bound forks", cwd=s.root)
    assert out.returncode == 0, out.stderr
    s.api.wait_workers(lambda ws: any(w["group"] == "limg" and w["state"] == "ready"
                                      and w["config_version"] >= 1 for w in ws))
    deadline = time.monotonic() + 20
    while True:  # the hot reload lands within milliseconds; the first job may predate it
        view = run(s, "b() { b | b & }; b; sleep 2", tag="t-lim", timeout=6)
        if "limits.processes" in (view["error"] or "") or time.monotonic() > deadline:
            break
    assert view["status"] == "failure" and "limits.processes" in view["error"], view
    assert run(s, "echo after", tag="t-lim")["result"] == "after"
    done = cli("events", "--group", "limg", "--type", "group.limits_set", "--json", cwd=s.root)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]  # one JSON object a line
    assert events and events[-1]["reason"] == "bound forks"


# --- what a red-team pass found, each now a test -------------------------------------------------


def test_a_job_cannot_listen_on_the_host_network_to_squat_a_service_port(s: Suite) -> None:
    """With a service down for a moment, a listening job would get its port and every token
    its clients send. On the host network a job may connect, never listen."""
    code = ("import socket\ndef main():\n    s = socket.socket()\n    s.bind(('127.0.0.1', 0))\n"
            "    try:\n        s.listen()\n    except PermissionError as exc:\n"
            "        return f'refused: {exc}'\n    return 'listening'\n")
    assert run(s, code, language="python3")["result"].startswith("refused")
    s.api.set_group("nonet", tags=["t-nonet"], network=False)
    s.worker("nonet", WORKER_GROUP="nonet")
    assert run(s, code, language="python3", tag="t-nonet")["result"] == "listening"  # own loopback


def test_no_kernel_keyring_and_no_new_namespaces_inside(s: Suite) -> None:
    code = ("import ctypes, os\ndef main():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
            "    key = libc.syscall(248 if os.uname().machine == 'x86_64' else 217, b'user',"
            " b'left-behind', b'x', 1, -4)\n    err = ctypes.get_errno()\n"
            "    return [key, err, os.system('unshare -Ur true 2>/dev/null')]\n")
    key, err, unshare = run(s, code, language="python3")["result"]
    assert key == -1 and err in (1, 38) and unshare != 0  # EPERM/ENOSYS; unshare refused


def test_no_io_uring_inside(s: Suite) -> None:
    """io_uring's own LISTEN operation would listen on the host network without `listen`."""
    code = ("import ctypes\ndef main():\n    libc = ctypes.CDLL(None, use_errno=True)\n"
            "    params = ctypes.create_string_buffer(120)\n"
            "    fd = libc.syscall(425, 8, params)\n    return [fd, ctypes.get_errno()]\n")
    assert run(s, code, language="python3")["result"] == [-1, 1]  # EPERM


def test_tmp_is_writable_and_the_job_folder_is_memory_bounded(s: Suite) -> None:
    view = run(s, "echo x > /tmp/a && echo ok-tmp; echo y > /job/b && echo ok-job;"
                  " df -k /job | tail -1 | awk '{print $2}'")
    assert view["logs"].split()[:2] == ["ok-tmp", "ok-job"], view
    assert int(view["result"]) * 1024 <= 2 * 1024**3  # a tmpfs sized by the memory limit


def test_a_job_that_leaves_a_tree_deeper_than_python_can_walk_is_still_cleaned(
    s: Suite, tmp_path: Path,
) -> None:
    deep = ("import os\ndef main():\n    os.mkdir('keep'); os.chdir('keep')\n"
            "    for i in range(1200):\n        os.mkdir('a'); os.chdir('a')\n"
            "    open('payload', 'wb').write(b'x' * 1000)\n    return 'deep'\n")
    for mode in ("bwrap", "none"):  # a tmpfs that vanishes; a host folder that must be removed
        work = tmp_path / mode
        s.api.set_group(f"deep-{mode}", tags=[f"t-deep-{mode}"])
        s.worker(f"deep-{mode}", WORKER_GROUP=f"deep-{mode}", JOB_SANDBOX=mode,
                 WORKER_DIR=str(work))
        assert run(s, deep, language="python3", tag=f"t-deep-{mode}")["result"] == "deep"
        assert run(s, "echo fine", tag=f"t-deep-{mode}")["result"] == "fine"
        assert list((work / "jobs").iterdir()) == [] and list((work / "out").iterdir()) == []


@pytest.mark.parametrize("language", ["bash", "python3"])
def test_a_flood_of_output_stops_the_job_not_the_worker(s: Suite, language: str) -> None:
    code = ("yes flood" if language == "bash" else
            "import os\ndef main():\n    while True:\n        os.write(2, b'x' * 65536)\n")
    view = run(s, code, language=language)
    assert view["status"] == "failure" and "bytes of output" in view["error"], view["error"]
    assert run(s, "echo after-flood")["result"] == "after-flood"


def test_a_warm_runtime_serves_only_its_own_script_and_ends_when_a_job_leaves_a_thread(
    s: Suite,
) -> None:
    code = ("import os, sys, threading, time\nID = os.urandom(8).hex()\nSEEN = []\n"
            "def main(mode, key=''):\n    SEEN.append(key)\n    env = os.environ.get('LEFT')\n"
            "    os.environ['LEFT'] = 'by a job'\n"
            "    if mode == 'plant':\n        threading.active_count = lambda: 1\n"
            "        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
            "    if mode == 'forge':\n        out = sys.modules['__main__'].out\n"
            "        out.write('{\"id\": \"x\", \"ok\": true, \"result\": \"forged\"}\\n')\n"
            "        out.flush()\n"
            "    return [ID, SEEN, env]\n")
    (s.root / "warm.py").write_text(code)
    assert cli("script", "deploy", "ws2/f/warm", "warm.py", "--language", "python3",
               cwd=s.root).returncode == 0
    assert cli("group", "set", "wded", "--dedicated", "ws2:f/warm", cwd=s.root).returncode == 0
    s.worker("wded", WORKER_GROUP="wded")

    def call(**args: str) -> list:  # type: ignore[type-arg]
        view = s.api.job(s.api.call("POST", "router", "/jobs",
                                    {"workspace": "ws2", "path": "f/warm", "args": args})["id"])
        assert view["status"] == "success", view
        return view["result"]  # type: ignore[no-any-return]

    first, second = call(mode="x"), call(mode="x")
    assert first[0] == second[0]  # one runtime
    assert second[2] is None  # what the first job put in its environment is gone
    # Another workspace's job cannot reach the dedicated tag at all (docs/tags.md, admins
    # included); an admin's inline job of its own workspace sent there runs cold.
    with pytest.raises(CliError, match="dedicated tag of a script or flow of workspace 'ws2'"):
        run(s, code, language="python3", tag="ws2:f/warm", workspace="ws1",
            args={"mode": "x", "key": "ws1-secret"})
    inline = run(s, code, language="python3", tag="ws2:f/warm", workspace="ws2",
                 args={"mode": "x", "key": "inline-secret"})
    assert inline["status"] == "success" and inline["result"][0] != first[0], inline
    planted = call(mode="plant")  # a thread, hidden from the runtime's own count
    assert planted[0] == first[0]
    after = call(mode="x")
    assert after[0] != first[0] and "inline-secret" not in json.dumps(after)  # a fresh runtime
    # A job that writes a forged answer into the pipe: never taken for the next job's answer.
    forged = s.api.job(s.api.call("POST", "router", "/jobs", {
        "workspace": "ws2", "path": "f/warm", "args": {"mode": "forge"}})["id"])
    assert forged["status"] == "failure" and "out of turn" in forged["error"], forged
    clean = call(mode="x", key="victim")
    assert clean[0] != after[0] and clean[1] == ["victim"]


def test_a_stolen_worker_credential_cannot_turn_the_sandbox_off_or_lift_a_limit(s: Suite) -> None:
    """With the `worker` NATS credentials (a job can no longer read them, but a worker host may
    be taken over): a forged `group.sandbox_set` never reaches the group, and a submission asking
    for more than max_timeout is refused by the router like any other."""
    import asyncio

    import nats

    from services.common import natsauth
    from shared import subjects
    from shared.codec import encode
    from shared.events import GroupSandboxSet, seal

    s.api.set_group("stolen", tags=["t-stolen"], limits={"max_timeout": 60})
    s.worker("stolen", WORKER_GROUP="stolen")
    user = "worker:default"  # a stolen worker credential (of another group, as it happens)
    password = json.loads((s.root / ".getoperate" / "nats-credentials.json").read_text())[user]
    forged = seal(prev_hash="0" * 64, seq=10**6, id="forged", time="now", actor="admin",
                  reason=None, event=GroupSandboxSet(group="stolen", sandbox="none"))

    async def attack() -> dict[str, Any]:
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        nc = await nats.connect(f"nats://127.0.0.1:{s.base}", user=user, password=password,
                                error_cb=on_error, **natsauth.connection_options(
                                    "stolen", user, worker="w", part="control"))
        try:
            await nc.publish(subjects.group_subject("stolen"), encode(forged))
            await nc.flush()
            body = json.dumps({"language": "bash", "code": "sleep 1", "tag": "t-stolen",
                               "workspace": "ws1", "timeout": 3600}).encode()
            # The stolen credential alone carries no identity: no job at all. Even with the
            # admin token, the limit holds.
            anonymous = await nc.request(subjects.SUBMIT_SUBJECT, body, timeout=10)
            reply = await nc.request(subjects.SUBMIT_SUBJECT, body, timeout=10,
                                     headers=s.auth())
            await asyncio.sleep(0.5)
            return {"errors": [str(e) for e in errors], "submit": json.loads(reply.data),
                    "anonymous": json.loads(anonymous.data)}
        finally:
            await nc.close()

    out = asyncio.run(attack())
    assert any("ermission" in e for e in out["errors"]), out  # the publish was refused
    assert out["anonymous"].get("error") == "unauthorized", out
    assert out["submit"].get("field") == "timeout", out
    group = s.api.call("GET", "config", "/groups/stolen")
    assert group.get("sandbox") in (None, "default"), group
    ws = s.api.wait_workers(lambda ws: any(w["group"] == "stolen" for w in ws))
    assert [w["sandbox"] for w in ws if w["group"] == "stolen"] == ["bwrap"]
