"""The user's tour through the CLI against a real `getoperate up` (nats-server, SQLite, processes)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from services.common.natsserver import free_port
from tests.integration.conftest import Suite
from tests.integration.harness import Deployment, Proc, cli, run_view


def test_run_bash_with_wait_shows_output_tag_group_and_worker(suite: Suite) -> None:
    proc = cli("run", "--language", "bash", "--code", 'echo "hello $1"', "--arg", "name=world",
               "--wait", cwd=suite.root)
    assert proc.returncode == 0, proc.stderr
    assert "hello world" in proc.stdout
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines()[:5])
    assert lines["status"].startswith("success")
    assert lines["tag"] == "bash"
    assert lines["group"] == "default"
    assert lines["worker"].startswith("default-")


def test_run_json_has_the_documented_fields(suite: Suite) -> None:
    proc = cli("run", "--language", "bash", "--code", "echo one; echo two", "--wait", "--json",
               cwd=suite.root)
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert {"id", "tag", "status", "result", "logs", "worker", "group"} <= set(view)
    assert view["status"] == "success"
    assert view["result"] == "two"
    assert view["logs"] == "one\ntwo\n"


def test_python3_main_return_value_is_the_result_and_args_parse_as_json(suite: Suite) -> None:
    code = 'def main(n, name="x"):\n    print("working")\n    return {"twice": n * 2, "name": name}\n'
    proc = cli("run", "--language", "python3", "--code", code, "--arg", "n=3", "--arg",
               "name=bob", "--wait", "--json", cwd=suite.root)
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert view["tag"] == "python3"
    assert view["result"] == {"twice": 6, "name": "bob"}
    assert "working" in view["logs"]


NATIVETS = """export async function main(name: string, n = 2) {
  if (n < 0) throw new RangeError(`n must not be negative, got ${n}`);
  let env = "readable";
  try { Deno.env.get("PATH"); } catch (e) { env = (e as Error).name; }
  return { greeting: `hi ${name}`.repeat(n), env };
}
"""


def test_run_nativets_on_the_native_group(suite: Suite) -> None:
    """nativets through the CLI: --arg values reach main's parameters by name (n keeps its
    default), the job runs on the seeded `native` group without access to the environment, and
    a thrown error exits 1 with `Name: message`."""
    view = run_view("--language", "nativets", "--code", NATIVETS, "--arg", "name=ts",
                    cwd=suite.root)
    assert (view["status"], view["tag"], view["group"]) == ("success", "nativets", "native"), view
    assert view["result"] == {"greeting": "hi tshi ts", "env": "NotCapable"}
    failed = cli("run", "--language", "nativets", "--code", NATIVETS, "--arg", "name=x",
                 "--arg", "n=-1", "--wait", "--json", cwd=suite.root)
    assert failed.returncode == 1, failed.stderr
    assert json.loads(failed.stdout)["error"] == "RangeError: n must not be negative, got -1"


def test_failed_job_exits_1_and_shows_the_error(suite: Suite) -> None:
    proc = cli("run", "--language", "python3", "--code", "def main():\n    raise ValueError('boom')\n",
               "--wait", "--json", cwd=suite.root)
    assert proc.returncode == 1
    view = json.loads(proc.stdout)
    assert view["status"] == "failure"
    assert "ValueError: boom" in view["error"]


def test_bad_usage_exits_2_with_one_line_on_stderr(suite: Suite) -> None:
    missing_language = cli("run", "--code", "echo x", cwd=suite.root)
    assert missing_language.returncode == 2
    assert missing_language.stderr.strip().count("\n") == 0
    assert "--language" in missing_language.stderr
    bad_arg = cli("run", "--language", "bash", "--code", "x", "--arg", "novalue", cwd=suite.root)
    assert bad_arg.returncode == 2
    bad_tag = cli("run", "--language", "bash", "--code", "x", "--tag", "a,b", cwd=suite.root)
    assert bad_tag.returncode == 2
    assert "tag" in bad_tag.stderr


def test_run_without_wait_prints_the_id_and_job_waits_later(suite: Suite) -> None:
    proc = cli("run", "--language", "bash", "--code", "echo later", cwd=suite.root)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    assert len(job_id) == 32
    later = cli("job", job_id, "--wait", "--json", cwd=suite.root)
    assert later.returncode == 0, later.stderr
    view = json.loads(later.stdout)
    assert (view["id"], view["status"], view["result"]) == (job_id, "success", "later")


def test_unknown_job_is_a_clear_error(suite: Suite) -> None:
    proc = cli("job", "0" * 32, cwd=suite.root)
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr


def test_a_tag_nobody_serves_is_reported_not_silently_stuck(suite: Suite) -> None:
    proc = cli("run", "--language", "bash", "--code", "echo x", "--tag", "nobody-serves-this",
               "--json", cwd=suite.root)
    assert proc.returncode == 0
    answer = json.loads(proc.stdout)
    assert answer["live_workers"] == 0
    assert "no live worker listens to tag 'nobody-serves-this'" in answer["warning"]
    assert "warning" in proc.stderr
    view = json.loads(cli("job", answer["id"], "--json", cwd=suite.root).stdout)
    assert view["status"] == "queued"


def test_waiting_past_the_timeout_is_not_success(suite: Suite) -> None:
    """0 means the job succeeded: a --wait whose --timeout passes with the job still queued
    exits 5 and says how to wait again (issue 16, point 3)."""
    run = cli("run", "--language", "bash", "--code", "echo x", "--tag", "nobody-serves-wait",
              "--wait", "--timeout", "1", "--json", cwd=suite.root)
    assert run.returncode == 5, (run.returncode, run.stderr)
    view = json.loads(run.stdout)
    assert view["status"] == "queued" and "still queued after --timeout" in run.stderr
    again = cli("job", view["id"], "--wait", "--timeout", "1", cwd=suite.root)
    assert again.returncode == 5 and f"getoperate job {view['id']} --wait" in again.stderr
    assert cli("job", view["id"], cwd=suite.root).returncode == 0  # no --wait: just a look


def test_group_commands(suite: Suite) -> None:
    root = suite.root
    (root / "init.sh").write_text("echo ready\n")
    created = cli("group", "set", "cli-grp", "--tags", "a1,b1", "--init-script", "init.sh", cwd=root)
    assert created.returncode == 0, created.stderr
    shown = json.loads(cli("group", "show", "cli-grp", "--json", cwd=root).stdout)
    assert shown["tags"] == ["a1", "b1"]
    assert shown["init_script"] == "echo ready\n"
    listed = json.loads(cli("group", "list", "--json", cwd=root).stdout)
    names = [g["name"] for g in listed]
    assert {"default", "native", "cli-grp"} <= set(names)
    reset = cli("group", "reset", "cli-grp", "--preset", "native", cwd=root)
    assert reset.returncode == 0, reset.stderr
    shown = json.loads(cli("group", "show", "cli-grp", "--json", cwd=root).stdout)
    assert shown["tags"] == ["nativets", "postgresql", "mysql", "graphql", "snowflake", "bigquery", "mssql"]
    stale = cli("group", "set", "cli-grp", "--tags", "z", "--expected-version", "1", cwd=root)
    assert stale.returncode == 1
    assert "version" in stale.stderr
    assert cli("group", "delete", "cli-grp", cwd=root).returncode == 0
    gone = cli("group", "show", "cli-grp", cwd=root)
    assert gone.returncode == 1
    assert "does not exist" in gone.stderr
    bad = cli("group", "set", "Not Valid", "--tags", "x", cwd=root)
    assert bad.returncode == 2


def test_rough_edges_of_group_commands_and_history(suite: Suite) -> None:
    """Issue 16, point 4: a reset of a group that does not exist creates none; `group show`
    shows dedicated targets, priorities and env; a priority for a tag the group does not have
    is refused; a diff past the log's end says where it ends."""
    root = suite.root
    typo = cli("group", "reset", "nosuchgroup", "--preset", "all", cwd=root)
    assert typo.returncode == 1 and "group 'nosuchgroup' does not exist" in typo.stderr
    assert cli("group", "show", "nosuchgroup", cwd=root).returncode == 1
    made = cli("group", "set", "edges", "--tags", "e1,e2", "--priority", "e2=7",
               "--env", "REGION=eu", cwd=root)
    assert made.returncode == 0, made.stderr
    shown = cli("group", "show", "edges", cwd=root).stdout
    assert "priorities   e2=7" in shown and "REGION=eu" in shown and "dedicated    -" in shown
    wrong = cli("group", "set", "edges", "--priority", "notatag=5", cwd=root)
    assert wrong.returncode == 2 and "'notatag', which group 'edges' does not listen" in wrong.stderr
    end = json.loads(cli("events", "--json", "--limit", "1000", cwd=root).stdout.splitlines()[-1])
    past = cli("diff", str(end["seq"] + 2), str(end["seq"] + 20), cwd=root)
    assert past.returncode == 2, past.stdout
    assert f"past the end of the log, which ends at seq {end['seq']}" in past.stderr


def test_workers_lists_live_workers(suite: Suite) -> None:
    workers = json.loads(cli("workers", "--json", cwd=suite.root).stdout)
    by_group = {w["group"]: w for w in workers}
    assert "bash" in by_group["default"]["tags"]
    assert "postgresql" in by_group["native"]["tags"]
    for w in workers:
        assert {"id", "group", "tags", "config_version", "current_job", "heartbeat_at"} <= set(w)
    table = cli("workers", cwd=suite.root).stdout
    assert table.splitlines()[0].split()[:3] == ["WORKER", "GROUP", "STATE"]
    for w in workers:  # each worker's row lists the runtimes of its heartbeat
        assert w["runtimes"] and runtimes_column(table, w["id"]) == ",".join(w["runtimes"]), table
    assert {"bash", "python3"} <= set(runtimes_column(table, by_group["default"]["id"]).split(","))


def runtimes_column(table: str, worker_id: str) -> str:
    """The RUNTIMES cell of a worker's row in `getoperate workers`' table."""
    lines = table.splitlines()
    at = lines[0].index("RUNTIMES")
    row = next(line for line in lines[1:] if line.startswith(worker_id + " "))
    return row[at:].split()[0]


def path_without(folder: Path, program: str) -> str:
    """A PATH (one folder of links) with every program of this process's PATH but `program`."""
    folder.mkdir()
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(entry):
            continue
        for name in os.listdir(entry):
            if name != program and not os.path.lexists(folder / name):
                os.symlink(os.path.join(entry, name), folder / name)
    return str(folder)


def test_a_language_whose_runtime_is_missing_names_what_to_install(extra_workers: Suite,
                                                                   tmp_path: Path) -> None:
    """bun is found on PATH or in $BUN_INSTALL/bin: a worker with neither does not report it
    (`getoperate workers`), and a bun job it takes fails naming what to install."""
    suite = extra_workers
    suite.api.set_group("nobun", tags=["t-nobun"])
    # JOB_SANDBOX=none: bwrap, started with this PATH, would look for setpriv in a folder the
    # sandbox does not have; no job code runs on this worker anyway.
    worker = suite.worker("nobun", WORKER_GROUP="nobun", BUN_INSTALL=str(tmp_path / "empty"),
                          PATH=path_without(tmp_path / "bin", "bun"), JOB_SANDBOX="none")
    worker.wait_for('"worker_ready"', timeout=60)
    mine = suite.api.wait_workers(lambda ws: any(w["group"] == "nobun" for w in ws))
    runtimes = next(w["runtimes"] for w in mine if w["group"] == "nobun")
    assert "bun" not in runtimes and {"bash", "python3"} <= set(runtimes), runtimes
    nobun = next(w["id"] for w in mine if w["group"] == "nobun")
    assert runtimes_column(cli("workers", cwd=suite.root).stdout, nobun) == ",".join(runtimes)
    view = run_view("--language", "bun", "--tag", "t-nobun", "--code",
                    "export function main() { return 1; }", cwd=suite.root)
    assert view["status"] == "failure", view
    assert view["error"] == (f"no executor for language 'bun' on this worker (it runs"
                             f" {', '.join(runtimes)}); install bun on PATH (npm install -g bun),"
                             " or in $BUN_INSTALL/bin"), view["error"]


def test_workers_whose_init_script_runs_or_failed_are_not_counted_live(suite: Suite) -> None:
    """A ready worker cannot take jobs until its init script succeeds: it is not a live worker
    for the submission's answer, the warning says why, and --require-worker refuses (issue 16,
    point 2)."""
    suite.api.set_group("initfail", tags=["t-initfail"],
                        init_script="echo 'no such driver' >&2; exit 3")
    suite.api.set_group("initslow", tags=["t-initslow"], init_script="sleep 60")
    failing = suite.worker("initfail", WORKER_GROUP="initfail")
    slow = suite.worker("initslow", WORKER_GROUP="initslow")
    try:
        suite.api.wait_workers(lambda ws: {(w["group"], w["init_status"]) for w in ws}
                               >= {("initfail", "failed"), ("initslow", "running")}, timeout=60)
        answer = suite.api.submit("echo x", tag="t-initfail")
        assert answer["live_workers"] == 0, answer
        assert "the init script of 1 failed (no such driver)" in answer["warning"], answer
        # A workspace token is told the script failed, never what it printed (it may hold the
        # group's secrets; GET /workers keeps it from them too).
        assert cli("tags", "add", "t-initfail", cwd=suite.root).returncode == 0
        made = cli("token", "create", "--workspace", "wsinit", "--name", "wsinit", cwd=suite.root)
        assert made.returncode == 0, made.stderr
        theirs = cli("run", "--language", "bash", "--code", "echo x", "--tag", "t-initfail",
                     "--workspace", "wsinit", "--json", cwd=suite.root,
                     env={"GETOPERATE_TOKEN": made.stdout.strip()})
        assert theirs.returncode == 0, theirs.stderr
        warned = json.loads(theirs.stdout)["warning"]
        assert "the init script of 1 failed" in warned and "no such driver" not in warned, warned
        refused = cli("run", "--language", "bash", "--code", "echo x", "--tag", "t-initslow",
                      "--require-worker", cwd=suite.root)
        assert refused.returncode == 1 and "1 still running its init script" in refused.stderr
    finally:
        failing.stop()
        slow.stop()


def test_a_worker_started_in_ups_folder_joins_that_deployment(suite: Suite) -> None:
    """No NATS_URL: the worker reads the folder's endpoints.json and credentials, as every other
    command does (issue 16, point 1)."""
    suite.api.set_group("infolder", tags=["t-infolder"])
    worker = Proc(["worker"], cwd=suite.root, env={"WORKER_GROUP": "infolder"},
                  name="worker-infolder")
    try:
        worker.wait_for('"worker_ready"', timeout=60)
        assert f"127.0.0.1:{suite.base}" in worker.output()
        view = suite.api.job(suite.api.submit("echo joined", tag="t-infolder")["id"])
        assert view["result"] == "joined" and view["group"] == "infolder", view
    finally:
        worker.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_that_cannot_reach_nats_stops_on_a_signal(suite: Suite, sig: int) -> None:
    """While NATS is unreachable the worker keeps trying, and a signal stops it within seconds,
    with no traceback."""
    port = free_port()  # nothing listens there
    worker = Proc(["worker"], cwd=suite.root, env={"NATS_URL": f"nats://127.0.0.1:{port}",
                                                   "WORKER_GROUP": "default"},
                  name=f"worker-unreachable-{int(sig)}")
    worker.wait_for('"nats_error"', timeout=30)  # trying, and failing
    started = time.monotonic()
    code = worker.stop(sig)  # SIGKILL only if it did not stop within 20 s
    out = worker.output()
    assert code == 0 and "Traceback" not in out, out
    assert '"stopped_before_ready"' in out
    print(f"stopped {time.monotonic() - started:.2f}s after {signal.Signals(sig).name}")


def test_a_running_worker_whose_nats_went_away_stops_on_sigterm(tmp_path: Path) -> None:
    """NATS stops under a ready worker: SIGTERM still ends it within a few seconds (its goodbye
    to the heartbeat bucket cannot be said, and is not waited for), with no traceback."""
    d = Deployment(tmp_path, routers=1)
    try:
        d.start(group="default")
        worker = d.start_worker("default")
        d.nats.stop()
        worker.wait_for('"nats_disconnected"', timeout=30)
        started = time.monotonic()
        code = worker.stop(signal.SIGTERM)
        took = time.monotonic() - started
        out = worker.output()
        assert code == 0 and "Traceback" not in out, out  # 0: it stopped itself (no SIGKILL)
        print(f"stopped {took:.2f}s after SIGTERM with NATS gone")
    finally:
        d.stop()


def test_a_worker_of_a_group_that_does_not_exist_or_of_no_tags_says_so(suite: Suite) -> None:
    ghost = Proc(["worker"], cwd=suite.root, env={"WORKER_GROUP": "ghost"}, name="worker-ghost")
    try:
        ghost.wait_for('"group_not_configured"', timeout=60)
        assert "getoperate group set ghost --tags" in ghost.output()
    finally:
        ghost.stop()
    blank = cli("worker", cwd=suite.root, env={"WORKER_TAGS": " , "})
    assert blank.returncode == 2 and "WORKER_TAGS=' , ' lists no tag" in blank.stderr
    assert len(blank.stderr.strip().splitlines()) == 1


def test_a_second_up_in_the_same_folder_refuses_and_leaves_the_first_alone(suite: Suite) -> None:
    """Issue 16, point 8: it would rewrite endpoints.json and nats.conf under the first."""
    from tests.integration.harness import free_port_base

    endpoints = (suite.root / ".getoperate" / "endpoints.json").read_text()
    second = cli("up", "--port-base", str(free_port_base()), cwd=suite.root, timeout=60)
    assert second.returncode == 2, second.stderr
    assert "`getoperate up` already runs with this data dir" in second.stderr
    assert f"pid {suite.up.p.pid}" in second.stderr
    assert (suite.root / ".getoperate" / "endpoints.json").read_text() == endpoints
    assert suite.api.job(suite.api.submit("echo still one")["id"])["result"] == "still one"


def test_the_wait_line_says_when_the_running_worker_was_lost(suite: Suite) -> None:
    """Issue 16, point 9: `--wait` names the worker running the job; once that worker's
    heartbeat is gone (it was SIGKILLed), the line says so instead of naming a dead worker."""
    import subprocess
    import sys

    from tests.integration.harness import cli_env, wait_until

    suite.api.set_group("lost", tags=["t-lost"])
    worker = suite.worker("lost", WORKER_GROUP="lost")
    worker.wait_for('"worker_ready"', timeout=60)
    waiting = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "run", "--language", "bash", "--code", "sleep 120",
         "--tag", "t-lost", "--wait", "--timeout", "90"], cwd=suite.root, env=cli_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert waiting.stderr is not None
        lines: list[str] = []
        wait_until(lambda: (lines.append(waiting.stderr.readline()) or "is running on worker"
                            in lines[-1]), "the running line", 60)
        worker.stop(signal.SIGKILL)
        wait_until(lambda: (lines.append(waiting.stderr.readline()) or "worker lost" in lines[-1]),
                   "the lost line", 60)
        assert "worker lost (" in lines[-1] and "waiting for redelivery" in lines[-1], lines
    finally:
        waiting.kill()
        waiting.wait()
        if waiting.stderr is not None:
            waiting.stderr.close()
