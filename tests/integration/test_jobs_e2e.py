"""Job execution details end to end: NATS submission, timeouts, unknown languages, many tags."""

from __future__ import annotations

import json

import nats
import pytest

from cli.client import CliError
from shared import subjects
from tests.integration.conftest import Suite


async def test_submit_over_nats_request_reply(suite: Suite) -> None:
    nc = await nats.connect(suite.nats_url)
    try:
        payload = {"language": "bash", "code": "echo via nats", "workspace": "ws1"}
        auth = suite.auth()
        reply = await nc.request(subjects.SUBMIT_SUBJECT, json.dumps(payload).encode(), timeout=10,
                                 headers=auth)
        answer = json.loads(reply.data)
        assert answer["tag"] == "bash" and answer["live_workers"] >= 1
        bad = await nc.request(subjects.SUBMIT_SUBJECT, b'{"language": "bash"}', timeout=10,
                               headers=auth)
        error = json.loads(bad.data)
        assert error["error"] == "invalid" and "code" in error["message"]
        garbage = await nc.request(subjects.SUBMIT_SUBJECT, b"\xff\x00", timeout=10, headers=auth)
        assert json.loads(garbage.data)["error"] == "invalid"
    finally:
        await nc.close()
    view = suite.api.job(answer["id"])
    assert (view["status"], view["result"], view["workspace"]) == ("success", "via nats", "ws1")


def test_job_timeout_kills_the_process_tree_and_the_worker_goes_on(suite: Suite) -> None:
    slow = suite.api.submit("sleep 30 & sleep 30", timeout=0.5)
    view = suite.api.job(slow["id"])
    assert view["status"] == "failure"
    assert view["error"] == "timed out after 0.5s"
    after = suite.api.job(suite.api.submit("echo still here")["id"])
    assert after["result"] == "still here"


def test_a_language_without_executor_fails_clearly(suite: Suite) -> None:
    """Workers listen to tag bash, but none can run cobol: the submission says so (it does not
    count them as live), `require_worker` refuses it, and a job queued anyway fails naming the
    runtimes the worker has. A language the seeded groups name but getOperate does not bundle
    fails saying so."""
    answer = suite.api.submit("BEGIN; END;", language="cobol", tag="bash")
    assert answer["live_workers"] == 0 and "none can run 'cobol'" in answer["warning"], answer
    view = suite.api.job(answer["id"])
    assert view["status"] == "failure"
    assert "no executor for language 'cobol' on this worker" in view["error"]
    with pytest.raises(CliError) as refused:
        suite.api.submit("BEGIN; END;", language="cobol", tag="bash", require_worker=True)
    assert "none can run 'cobol'" in refused.value.message and "HTTP 409" in refused.value.message
    assert suite.api.submit("echo ok", tag="bash", require_worker=True)["live_workers"] >= 1
    typo = suite.api.submit("echo typo", language="bsh", tag="bash")  # a near miss is named
    assert "none can run 'bsh'" in typo["warning"] and "did you mean 'bash'?" in typo["warning"]
    assert "did you mean" not in answer["warning"]  # cobol is near nothing they run
    # powershell is a seeded tag of `default`, but not bundled: its job says so, and names the
    # entry-point group a plugin uses.
    ps = suite.api.job(suite.api.submit("Write-Output hi", language="powershell")["id"])
    assert (ps["status"], ps["tag"]) == ("failure", "powershell"), ps
    assert "powershell is not bundled with getOperate" in ps["error"], ps["error"]
    assert "entry-point group 'getoperate.languages'" in ps["error"], ps["error"]


DENO_MAIN = """
export async function main(name: string, n = 2, opts?: { shout: boolean }) {
  console.log(`deno ${Deno.version.deno}`);
  const greeting = `hello ${name}`;
  return { greeting: opts?.shout ? greeting.toUpperCase() : greeting, n, twice: n * 2 };
}
"""


def test_a_deno_job_runs_main_with_its_arguments_by_name(suite: Suite) -> None:
    """The `deno` wheel's runtime, in the sandbox: arguments matched to main's parameters by
    name (a missing one takes its default), the return value as the JSON result, console
    output as logs; a thrown error fails the job with its message."""
    workers = suite.api.workers()
    assert all("deno" in w["runtimes"] for w in workers if w["group"] == "default"), workers
    ok = suite.api.job(suite.api.submit(DENO_MAIN, language="deno",
                                        args={"opts": {"shout": True}, "name": "world"})["id"])
    assert ok["status"] == "success" and ok["tag"] == "deno", ok
    assert ok["result"] == {"greeting": "HELLO WORLD", "n": 2, "twice": 4}
    assert ok["logs"].startswith("deno 2."), ok["logs"]
    bad = suite.api.job(suite.api.submit(
        'export function main() { throw new TypeError("no such order"); }', language="deno")["id"])
    assert bad["status"] == "failure" and bad["error"] == "TypeError: no such order", bad
    none = suite.api.job(suite.api.submit("export const x = 1;", language="deno")["id"])
    assert none["status"] == "failure" and "exports no main() function" in none["error"], none


def test_jobs_do_not_see_the_workers_environment(suite: Suite) -> None:
    view = suite.api.job(suite.api.submit('echo "${NATS_URL:-unset}|$GO_TAG|$GO_WORKSPACE"')["id"])
    assert view["result"] == "unset|bash|main"


def test_dynamic_tags_fill_workspace_and_args(suite: Suite) -> None:
    answer = suite.api.submit("echo x", tag="pool-$workspace-$args[cfg.size]", workspace="dev",
                              args={"cfg": {"size": "xl"}})
    assert answer["tag"] == "pool-dev-xl"
    from cli.client import CliError

    try:
        suite.api.submit("echo x", tag="pool-$args[missing]")
    except CliError as exc:
        assert "no argument 'missing'" in exc.message
    else:
        raise AssertionError("a missing $args reference must be refused")


def test_job_history_lists_by_tag_group_workspace_and_status(suite: Suite) -> None:
    ok = [suite.api.submit("echo hist", workspace="histws")["id"] for _ in range(3)]
    bad = suite.api.submit("exit 4", workspace="histws")["id"]
    for job_id in ok + [bad]:
        suite.api.job(job_id)
    from tests.integration.harness import cli

    listed = json.loads(cli("jobs", "--workspace", "histws", "--json", cwd=suite.root).stdout)
    assert {j["id"] for j in listed} == set(ok + [bad])
    failed = json.loads(cli("jobs", "--workspace", "histws", "--status", "failure", "--json",
                            cwd=suite.root).stdout)
    assert [j["id"] for j in failed] == [bad]
    by_tag = json.loads(cli("jobs", "--tag", "bash", "--group", "default", "--limit", "500",
                            "--json", cwd=suite.root).stdout)
    assert set(ok) <= {j["id"] for j in by_tag}
    table = cli("jobs", "--workspace", "histws", cwd=suite.root).stdout
    assert table.splitlines()[0].split()[:3] == ["JOB", "STATUS", "TAG"] and bad in table


NATIVE_FETCH = """
export async function main(url: string, n: number) {
  await new Promise((r) => setTimeout(r, 700));  // a slow API: jobs overlap on one worker
  const got = await (await fetch(url)).text();
  const denied: string[] = [];
  for (const [what, attempt] of [
    ["read", () => Deno.readTextFileSync("/etc/hostname")],
    ["env", () => Deno.env.get("PATH")],
    ["run", () => new Deno.Command("true").outputSync()],
    ["write", () => Deno.writeTextFileSync("x.txt", "x")],
  ] as const) {
    try { attempt(); } catch (e) { denied.push(`${what}:${(e as Error).name}`); }
  }
  return { got, n, denied };
}
"""


def test_nativets_runs_many_at_once_with_the_network_and_nothing_else(suite: Suite) -> None:
    """nativets on the seeded `native` group: eight jobs at once on its one worker (they
    overlap in time), each reaching a loopback HTTP server, and each refused the file system,
    the environment and subprocesses."""
    import http.server
    import threading

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"pong")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        workers = [w for w in suite.api.workers() if w["group"] == "native"]
        assert len(workers) == 1 and "nativets" in workers[0]["runtimes"], workers
        ids = [suite.api.submit(NATIVE_FETCH, language="nativets", args={"url": url, "n": i})["id"]
               for i in range(8)]
        views = [suite.api.job(i) for i in ids]
    finally:
        server.shutdown()
        server.server_close()
    for i, view in enumerate(views):
        assert view["status"] == "success" and view["tag"] == "nativets", view
        assert view["result"] == {"got": "pong", "n": i, "denied": [
            "read:NotCapable", "env:NotCapable", "run:NotCapable", "write:NotCapable"]}, view
    # Most of the eight ran at the same time: some moment lies inside at least six runs.
    most = max(sum(v["started_at"] <= t["started_at"] < v["finished_at"] for v in views)
               for t in views)
    assert most >= 6, [(v["started_at"], v["finished_at"]) for v in views]


async def test_a_batch_of_submissions_is_answered_job_by_job(suite: Suite) -> None:
    """`POST /jobs/batch` and `go.router.submit` with `Go-Batch: 1`: every job routed and
    answered on its own, in order; a bad one refused alone; under an idempotency key K job i
    is K:i, so repeating the batch queues nothing new."""
    good = [{"language": "bash", "code": f"echo b{i}"} for i in range(3)]
    batch = {"jobs": [*good, {"language": "bash"}, {"language": "bash", "code": "echo x",
                                                     "tag": "bad,tag"}]}
    answer = suite.api.call("POST", "router", "/jobs/batch", batch)
    jobs = answer["jobs"]
    assert [j["index"] for j in jobs] == [0, 1, 2, 3, 4]
    assert all("id" in j and j["tag"] == "bash" for j in jobs[:3]), jobs
    assert jobs[3]["error"] == "invalid" and jobs[3]["field"] == "code", jobs[3]
    assert jobs[4]["error"] == "invalid" and "tag" in jobs[4]["field"], jobs[4]
    assert [suite.api.job(j["id"])["result"] for j in jobs[:3]] == ["b0", "b1", "b2"]

    nc = await nats.connect(suite.nats_url)
    try:
        headers = {**suite.auth(), subjects.BATCH_HEADER: "1", "Idempotency-Key": "batch-1"}
        body = json.dumps({"jobs": good}).encode()
        first = json.loads((await nc.request(subjects.SUBMIT_SUBJECT, body, timeout=15,
                                             headers=headers)).data)["jobs"]
        again = json.loads((await nc.request(subjects.SUBMIT_SUBJECT, body, timeout=15,
                                             headers=headers)).data)["jobs"]
        too_many = json.loads((await nc.request(
            subjects.SUBMIT_SUBJECT, json.dumps({"jobs": good * 200}).encode(), timeout=15,
            headers=headers)).data)
    finally:
        await nc.close()
    assert [j["id"] for j in again] == [j["id"] for j in first]
    assert all(j["replayed"] for j in again) and not any(j["replayed"] for j in first)
    assert too_many["error"] == "invalid" and "at most 500" in too_many["message"]
