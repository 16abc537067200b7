"""Every tag rule through the real services: deployed scripts and flows, restrictions, dedicated
workers with warm runtimes, priorities, and refusing unserved tags."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from cli.client import CliError
from tests.integration.conftest import Suite
from shared import subjects
from tests.integration.harness import cli, ready, wait_router_seq, wait_until


def deploy(s: Suite, target: str, content: str, language: str = "bash", **body: object) -> dict:  # type: ignore[type-arg]
    ws, path = target.split("/", 1)
    return s.api.call("PUT", "config", f"/scripts/{ws}/{path}",  # type: ignore[no-any-return]
                      {"language": language, "content": content, **body})


def run(s: Suite, target: str, **body: object) -> dict:  # type: ignore[type-arg]
    ws, path = target.split("/", 1)
    return s.api.call("POST", "router", "/jobs", {"workspace": ws, "path": path, **body})  # type: ignore[no-any-return]


def test_deployed_script_runs_on_its_tag_and_every_version_is_kept(extra_workers: Suite) -> None:
    s = extra_workers
    root = s.root
    (root / "hello.sh").write_text('echo "v1 $1"\n')
    out = cli("script", "deploy", "ws1/f/hello", "hello.sh", "--language", "bash", "--tag",
              "t-script", cwd=root)
    assert out.returncode == 0, out.stderr
    s.api.set_group("scriptg", tags=["t-script"])
    s.worker("scriptg", WORKER_GROUP="scriptg")
    res = cli("run", "ws1/f/hello", "--arg", "x=a", "--wait", "--json", cwd=root)
    assert res.returncode == 0, res.stderr
    view = json.loads(res.stdout)
    assert (view["tag"], view["group"], view["result"], view["path"]) == ("t-script", "scriptg", "v1 a", "f/hello")
    (root / "hello.sh").write_text('echo "v2 $1"\n')
    cli("script", "deploy", "ws1/f/hello", "hello.sh", "--language", "bash", "--tag", "t-script",
        cwd=root, check=True)
    shown = json.loads(cli("script", "show", "ws1/f/hello", "--json", cwd=root).stdout)
    assert shown["revision"] == 2
    assert json.loads(cli("run", "ws1/f/hello", "--arg", "x=b", "--wait", "--json",
                          cwd=root).stdout)["result"] == "v2 b"
    deployed = [e for e in s.api.call("GET", "config", "/events?limit=10000")
                if e["event"]["type"] == "script.deployed" and e["event"]["path"] == "f/hello"]
    assert [e["event"]["content"] for e in deployed] == ['echo "v1 $1"\n', 'echo "v2 $1"\n']
    listed = json.loads(cli("script", "list", "--workspace", "ws1", "--json", cwd=root).stdout)
    assert [(i["path"], i["revision"]) for i in listed] == [("f/hello", 2)]
    missing = cli("run", "ws1/f/nope", cwd=root)
    assert missing.returncode == 1 and "no script or flow 'f/nope'" in missing.stderr


def test_a_flow_runs_its_steps_on_their_own_groups_passing_results(extra_workers: Suite) -> None:
    s = extra_workers
    s.api.set_group("flowgpu", tags=["t-flowgpu"])
    s.worker("flowgpu", WORKER_GROUP="flowgpu")
    deploy(s, "ws1/f/double", "def main(previous_result, **kw):\n    return previous_result * 2\n",
           language="python3", tag="t-flowgpu")
    flow = {"steps": [
        {"name": "seed", "language": "python3", "content": "def main(n):\n    return n + 1\n"},
        {"name": "double", "script": "f/double"},
        {"name": "show", "language": "bash", "content": 'echo "got $2"\n'},
    ]}
    (s.root / "flow.json").write_text(json.dumps(flow))
    cli("flow", "deploy", "ws1/f/pipeline", "flow.json", cwd=s.root, check=True)
    out = cli("run", "ws1/f/pipeline", "--arg", "n=20", "--wait", "--json", cwd=s.root)
    assert out.returncode == 0, out.stderr
    view = json.loads(out.stdout)
    assert view["status"] == "success" and view["tag"] == "flow" and view["kind"] == "flow"
    assert view["result"] == "got 42"
    assert [(st["name"], st["tag"], st["group"]) for st in view["steps"]] == [
        ("seed", "python3", "default"), ("double", "t-flowgpu", "flowgpu"), ("show", "bash", "default")]
    step_jobs = [s.api.job(st["job_id"]) for st in view["steps"]]
    assert all(j["parent"] == view["id"] for j in step_jobs)


def test_a_failed_step_fails_the_flow_naming_the_step(extra_workers: Suite) -> None:
    s = extra_workers
    s.api.call("PUT", "config", "/flows/ws1/f/broken", {"steps": [
        {"name": "ok", "language": "bash", "content": "echo fine"},
        {"name": "explode", "language": "python3", "content": "def main(**kw):\n    raise RuntimeError('kaboom')\n"},
        {"name": "never", "language": "bash", "content": "echo never"},
    ]})
    view = s.api.job(run(s, "ws1/f/broken")["id"])
    assert view["status"] == "failure"
    assert view["error"].startswith("step 2 (explode) failed: RuntimeError: kaboom")
    assert [st["name"] for st in view["steps"]] == ["ok", "explode"]


def test_flow_tag_overrides_steps_unless_preserve_step_tags(extra_workers: Suite) -> None:
    s = extra_workers
    steps = [{"language": "bash", "content": "echo a", "tag": "t-step-own"}]
    s.api.call("PUT", "config", "/flows/ws1/f/tagged", {"steps": steps, "tag": "t-flowtag"})
    s.api.call("PUT", "config", "/flows/ws1/f/kept",
               {"steps": steps, "tag": "t-flowtag", "preserve_step_tags": True})
    assert run(s, "ws1/f/tagged")["steps"] == ["t-flowtag"]
    assert run(s, "ws1/f/kept")["steps"] == ["t-step-own"]
    assert run(s, "ws1/f/kept", tag="t-override")["steps"] == ["t-override"]


def test_a_flow_whose_step_nobody_can_run_says_so_when_submitted(extra_workers: Suite) -> None:
    """The flow's own tag is served, but its second step goes to a tag no worker listens to
    and its third to a language no worker on its tag can run: the answer's warning names both
    steps, instead of a flow that later sits 'running' at step 2 with nothing said."""
    s = extra_workers
    s.api.call("PUT", "config", "/flows/ws1/f/stuck", {"steps": [
        {"name": "first", "language": "bash", "content": "echo 1"},
        {"name": "nobody", "language": "bash", "content": "echo 2", "tag": "t-nobody-step"},
        {"name": "cobol", "language": "cobol", "content": "DISPLAY 3", "tag": "bash"}]})
    answer = run(s, "ws1/f/stuck")
    warning = answer["warning"] or ""
    assert "step 1" not in warning, warning
    assert "step 2 (nobody): no live worker listens to tag 't-nobody-step'" in warning, warning
    assert "step 3 (cobol):" in warning and "none can run 'cobol'" in warning, warning
    assert "fails it, naming the runtime to install" in warning, warning
    s.api.call("POST", "router", f"/jobs/{answer['id']}/cancel", {})


def test_cancelling_a_flow_ends_its_queued_step(extra_workers: Suite) -> None:
    """The flow's step waits on a tag nobody serves; cancelling the flow ends the step too,
    instead of leaving it queued (and counted as waiting) for ever."""
    from tests.integration.harness import wait_until

    s = extra_workers
    s.api.call("PUT", "config", "/flows/ws1/f/waits", {"steps": [
        {"name": "stuck", "language": "bash", "content": "echo 1", "tag": "t-nobody-cancel"}]})
    flow = run(s, "ws1/f/waits")["id"]

    def queued_step() -> list[dict]:  # type: ignore[type-arg]
        return [j for j in s.api.call("GET", "router", "/jobs?tag=t-nobody-cancel&limit=10")
                if j["parent"] == flow]
    (step,) = wait_until(queued_step, "the flow's step queued", 60)
    assert step["status"] == "queued"
    s.api.call("POST", "router", f"/jobs/{flow}/cancel", {})
    assert s.api.job(flow)["status"] == "cancelled"
    assert s.api.job(step["id"], wait=False)["status"] == "cancelled"


def test_restricted_tags_refuse_other_workspaces_even_for_admins(extra_workers: Suite) -> None:
    s = extra_workers
    root = s.root
    assert cli("tags", "add", "gpu-r(ws1+ws2)", cwd=root).returncode == 0
    assert cli("tags", "add", "cpu-x(^ws3)", cwd=root).returncode == 0
    tags = {t["tag"]: t for t in json.loads(cli("tags", "list", "--json", cwd=root).stdout)}
    assert tags["gpu-r"]["only"] == ["ws1", "ws2"] and tags["cpu-x"]["exclude"] == ["ws3"]
    assert s.api.submit("echo x", tag="gpu-r", workspace="ws2")["tag"] == "gpu-r"
    refused = cli("run", "--language", "bash", "--code", "echo x", "--tag", "gpu-r",
                  "--workspace", "ws3", cwd=root)
    assert refused.returncode == 1
    assert "tag 'gpu-r' is not available to workspace 'ws3'" in refused.stderr
    with pytest.raises(CliError, match="tag 'cpu-x' is not available to workspace 'ws3'"):
        s.api.submit("echo x", tag="cpu-x", workspace="ws3")
    # The check runs on the RESOLVED tag: $args cannot reach a restricted tag.
    with pytest.raises(CliError, match="tag 'gpu-r' is not available to workspace 'ws3'"):
        s.api.submit("echo x", tag="$args[t]", workspace="ws3", args={"t": "gpu-r"})
    bad = cli("tags", "add", "gpu(ws1^ws2)", cwd=root)
    assert bad.returncode == 2 and "spec" in bad.stderr
    # Re-adding without the restriction would open it to everyone: refused unless asked for.
    for spec in ("gpu-r", " gpu-r", "gpu-r(ws1)"):
        again = cli("tags", "add", spec, cwd=root)
        assert again.returncode == 1 and "already assignable as 'gpu-r(ws1+ws2)'" in again.stderr
    changed = cli("tags", "add", "gpu-r(ws1)", "--replace", cwd=root)
    assert changed.returncode == 0, changed.stderr
    assert "restriction changed from gpu-r(ws1+ws2) to gpu-r(ws1)" in changed.stdout
    # A script deployed with a tag its workspace may not use is refused at deploy.
    with pytest.raises(CliError, match="not available to workspace 'ws2'"):
        s.api.call("PUT", "config", "/scripts/ws2/f/closed",
                   {"language": "bash", "content": "echo", "tag": "gpu-r"})
    with pytest.raises(CliError, match=r"steps\[0\]\.tag"):
        s.api.call("PUT", "config", "/flows/ws2/f/closed",
                   {"steps": [{"language": "bash", "content": "echo", "tag": "gpu-r"}]})
    with pytest.raises(CliError, match="not available to workspace 'ws2'"):  # the flow's own tag
        s.api.call("PUT", "config", "/flows/ws2/f/closed",
                   {"steps": [{"language": "bash", "content": "echo"}], "tag": "gpu-r"})
    assert cli("tags", "remove", "cpu-x", cwd=root).returncode == 0
    assert s.api.submit("echo x", tag="cpu-x", workspace="ws3")["tag"] == "cpu-x"


def test_workspace_template_tag_routes_per_workspace(extra_workers: Suite) -> None:
    s = extra_workers
    s.api.call("POST", "config", "/tags", {"spec": "normal-$workspace"})
    for ws in ("dev", "prod"):
        deploy(s, f"{ws}/f/job", "echo $GO_TAG", tag="normal-$workspace")
        s.api.set_group(f"normal-{ws}", tags=[f"normal-{ws}"])
        s.worker(ws, WORKER_GROUP=f"normal-{ws}")
    for ws in ("dev", "prod"):
        view = s.api.job(run(s, f"{ws}/f/job")["id"])
        assert (view["result"], view["group"]) == (f"normal-{ws}", f"normal-{ws}")


def test_require_worker_refuses_an_unserved_tag(suite: Suite) -> None:
    out = cli("run", "--language", "bash", "--code", "echo x", "--tag", "t-nobody-here",
              "--require-worker", cwd=suite.root)
    assert out.returncode == 1
    assert "refused: no live worker listens to tag 't-nobody-here'" in out.stderr


def test_dedicated_workers_keep_a_warm_runtime_per_script_and_restart_it_on_redeploy(
    extra_workers: Suite,
) -> None:
    s = extra_workers
    # One id per runtime process (pids repeat: each sandbox has its own PID namespace).
    code = "import os\nSTARTED = os.urandom(8).hex()\ndef main(x):\n    return [{v}, STARTED, x]\n"
    deploy(s, "ws1/f/warm-a", code.format(v=1), language="python3")
    deploy(s, "ws1/f/warm-b", code.format(v=100), language="python3")
    root = s.root
    out = cli("group", "set", "ded", "--tags", "t-ded-other", "--dedicated",
              "ws1:f/warm-a,ws1:f/warm-b", cwd=root)
    assert out.returncode == 0, out.stderr
    s.worker("ded", WORKER_GROUP="ded")
    s.api.wait_workers(ready("ded", tags={"t-ded-other", "ws1:f/warm-a", "ws1:f/warm-b"}))
    first = [s.api.job(run(s, "ws1/f/warm-a", args={"x": i})["id"]) for i in range(3)]
    assert {v["tag"] for v in first} == {"ws1:f/warm-a"}
    results = [v["result"] for v in first]
    assert [r[0] for r in results] == [1, 1, 1] and [r[2] for r in results] == [0, 1, 2]
    assert len({r[1] for r in results}) == 1  # one process served all three
    other = s.api.job(run(s, "ws1/f/warm-b", args={"x": 7})["id"])["result"]
    assert other[0] == 100 and other[1] != results[0][1]  # every dedicated script is served
    wait_router_seq(s, deploy(s, "ws1/f/warm-a", code.format(v=2), language="python3")["seq"])
    after = s.api.job(run(s, "ws1/f/warm-a", args={"x": 9})["id"])["result"]
    assert after[0] == 2 and after[1] != results[0][1]  # redeploy: a fresh process, new code


@pytest.mark.parametrize("language", ["deno", "bun"])
def test_a_dedicated_typescript_script_is_served_by_one_warm_runtime(
        extra_workers: Suite, language: str) -> None:
    """deno and bun have a warm mode too: one process imports the script once and serves every
    job, with each job's console output as its logs and a thrown error as its failure."""
    from services.worker.languages import registry

    if language not in registry().found and not os.environ.get("GETOPERATE_REQUIRE_LANGUAGES"):
        pytest.skip(f"no {language} runtime here (.ci/run installs it)")
    s = extra_workers
    code = ("const STARTED = crypto.randomUUID();\n"
            "export async function main(x: number, fail = false) {\n"
            "  console.log(`job ${x}`);\n"
            "  if (fail) throw new RangeError(`bad ${x}`);\n"
            "  return [STARTED, x];\n}\n")
    path, group = f"f/warm-{language}", f"ded-{language}"
    deploy(s, f"ws1/{path}", code, language=language)
    out = cli("group", "set", group, "--tags", f"t-{group}", "--dedicated", f"ws1:{path}",
              cwd=s.root)
    assert out.returncode == 0, out.stderr
    s.worker(group, WORKER_GROUP=group)
    s.api.wait_workers(ready(group, tags={f"t-{group}", f"ws1:{path}"}))
    views = [s.api.job(run(s, f"ws1/{path}", args={"x": i})["id"]) for i in range(3)]
    assert {v["tag"] for v in views} == {f"ws1:{path}"}, views
    assert all(v["status"] == "success" for v in views), views
    assert [v["result"][1] for v in views] == [0, 1, 2]
    assert len({v["result"][0] for v in views}) == 1, views  # one process served all three
    assert [v["logs"] for v in views] == ["job 0\n", "job 1\n", "job 2\n"]
    bad = s.api.job(run(s, f"ws1/{path}", args={"x": 5, "fail": True})["id"])
    assert bad["status"] == "failure" and bad["error"] == "RangeError: bad 5", bad
    assert bad["logs"].startswith("job 5\n"), bad
    again = s.api.job(run(s, f"ws1/{path}", args={"x": 6})["id"])
    assert again["result"] == [views[0]["result"][0], 6]  # the error did not end the runtime


def test_higher_priority_tags_are_taken_first_from_a_backlog(extra_workers: Suite) -> None:
    s = extra_workers
    out = cli("group", "set", "prio", "--tags", "t-lo,t-hi", "--priority", "t-hi=10",
              cwd=s.root)
    assert out.returncode == 0, out.stderr
    lo = [s.api.submit("echo lo", tag="t-lo")["id"] for _ in range(4)]
    hi = [s.api.submit("echo hi", tag="t-hi")["id"] for _ in range(4)]
    s.worker("prio", WORKER_GROUP="prio")
    views = {j: s.api.job(j) for j in lo + hi}
    last_hi = max(views[j]["started_at"] for j in hi)
    first_lo = min(views[j]["started_at"] for j in lo)
    assert last_hi < first_lo
    status = [w for w in s.api.workers() if w["group"] == "prio"][0]
    assert status["priorities"] == {"t-hi": 10}


def test_workspace_tokens_use_defaults_and_open_assignable_tags_only(extra_workers: Suite) -> None:
    s = extra_workers
    root = s.root
    made = cli("token", "create", "--workspace", "teama", "--name", "team-a", cwd=root)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("gow_") and "shown once" in made.stderr
    assert token not in json.dumps(s.api.call("GET", "config", "/events?limit=10000"))
    listed = json.loads(cli("token", "list", "--json", cwd=root).stdout)
    assert {"name": "team-a", "workspace": "teama"} in [
        {k: t[k] for k in ("name", "workspace")} for t in listed]
    cli("tags", "add", "tok-open(teama)", cwd=root, check=True)
    cli("tags", "add", "tok-closed(^teama)", cwd=root, check=True)
    as_team = {"GETOPERATE_TOKEN": token}

    def run_as_team(*args: str) -> object:
        return cli("run", "--language", "bash", "--code", "echo hi", *args, cwd=root, env=as_team)

    ok = run_as_team("--workspace", "teama", "--wait", "--json")
    assert ok.returncode == 0, ok.stderr
    job_id = json.loads(ok.stdout)["id"]
    assert json.loads(run_as_team("--workspace", "teama", "--tag", "tok-open", "--json").stdout)["tag"] == "tok-open"
    for tag, why in (("tok-closed", "is not available to workspace 'teama'"),
                     ("some-admin-tag", "is not assignable in workspace 'teama'")):
        refused = run_as_team("--workspace", "teama", "--tag", tag)
        assert refused.returncode == 1 and why in refused.stderr, refused.stderr
    # $args cannot escalate: the resolved tag is what is checked.
    escalate = cli("run", "--language", "bash", "--code", "x", "--workspace", "teama", "--tag",
                   "$args[t]", "--arg", "t=some-admin-tag", cwd=root, env=as_team)
    assert escalate.returncode == 1 and "not assignable" in escalate.stderr
    other_ws = run_as_team("--workspace", "teamb")
    assert other_ws.returncode == 1 and "may only submit jobs in workspace 'teama'" in other_ws.stderr
    # An admin may use any unrestricted tag, but not a restricted one from an excluded workspace.
    assert s.api.submit("echo x", tag="some-admin-tag", workspace="teama")["tag"] == "some-admin-tag"
    with pytest.raises(CliError, match="not available to workspace 'teama'"):
        s.api.submit("echo x", tag="tok-closed", workspace="teama")
    # Isolation: the team cannot read another workspace's job or change configuration.
    admin_job = s.api.submit("echo secret", workspace="other")["id"]
    peek = cli("job", admin_job, cwd=root, env=as_team)
    assert peek.returncode == 1 and "does not exist" in peek.stderr
    assert cli("job", job_id, "--json", cwd=root, env=as_team).returncode == 0
    denied = cli("group", "set", "hack", "--tags", "x", cwd=root, env=as_team)
    assert denied.returncode == 1 and "needs an admin token" in denied.stderr
    assert cli("token", "revoke", "team-a", cwd=root).returncode == 0
    revoked = run_as_team("--workspace", "teama")
    assert revoked.returncode == 1 and "invalid or revoked token" in revoked.stderr


def test_jobs_stranded_on_a_tag_no_group_serves_are_reported_and_can_be_moved(
        extra_workers: Suite) -> None:
    """Issue 16, point 6: the change that stops the last group serving a tag with waiting jobs
    warns, the router's metrics count them, and `jobs requeue` moves them to a served tag."""
    from tests.integration.harness import scrape

    s = extra_workers
    deploy(s, "ws1/f/strand", 'echo "moved $1"\n')
    dedicated = s.api.set_group("strand", dedicated=["ws1:f/strand"])
    wait_router_seq(s, dedicated["seq"])  # routed by a router that knows the dedication
    ids = [run(s, "ws1/f/strand", args={"n": str(i)})["id"] for i in range(3)]
    assert {s.api.job(i, wait=False)["tag"] for i in ids} == {"ws1:f/strand"}
    gone = run(s, "ws1/f/strand", args={"n": "cancelled"})["id"]
    assert cli("cancel", gone, cwd=s.root).returncode == 0  # ended: dropped, never moved
    answer = s.api.call("PUT", "config", "/groups/strand", {"dedicated": []})
    assert answer["warnings"] == [
        "tag 'ws1:f/strand' has 3 waiting job(s) and no group serves it any more: they wait"
        " until one does; move them with `getoperate jobs requeue --tag ws1:f/strand --to"
        " OTHER_TAG`"], answer
    metrics = scrape(s.base + 2)
    assert metrics[("getoperate_jobs_unserved", (("tag", "ws1:f/strand"),))] == 3
    busy = cli("jobs", "requeue", "--tag", "bash", "--to", "t-elsewhere", cwd=s.root)
    assert busy.returncode == 1 and "live worker(s) still take jobs from tag 'bash'" in busy.stderr
    moved = cli("jobs", "requeue", "--tag", "ws1:f/strand", "--to", "t-strand-new", cwd=s.root)
    assert moved.returncode == 0, moved.stderr
    assert "moved 3 waiting job(s) from ws1:f/strand to t-strand-new" in moved.stdout
    assert "dropped: 1 job(s) cancelled while queued" in moved.stdout
    s.api.set_group("strand", tags=["t-strand-new"])
    s.worker("strand", WORKER_GROUP="strand")
    views = [s.api.job(i) for i in ids]
    assert [v["result"] for v in views] == ["moved 0", "moved 1", "moved 2"], views
    assert {v["group"] for v in views} == {"strand"}


def test_a_job_cancelled_before_it_started_leaves_its_queue(extra_workers: Suite) -> None:
    """Issue 16, point 9: it no longer counts as waiting (Workers page, metrics), even on a
    tag no worker serves."""
    from tests.integration.harness import scrape

    s = extra_workers

    def waiting() -> int:
        queues = s.api.call("GET", "config", "/ui/overview")["queues"]
        return sum(q["waiting"] for q in queues if q["tag"] == "t-cancel-queued")

    ids = [s.api.submit("echo never", tag="t-cancel-queued")["id"] for _ in range(3)]
    assert waiting() == 3
    out = cli("cancel", ids[1], cwd=s.root)
    assert out.returncode == 0, out.stderr
    assert waiting() == 2
    metrics = scrape(s.base + 2)
    assert metrics[("getoperate_jobs_waiting", (("tag", "t-cancel-queued"),))] == 2
    assert s.api.job(ids[1], wait=False)["status"] == "cancelled"
    s.api.set_group("cancelq", tags=["t-cancel-queued"])
    s.worker("cancelq", WORKER_GROUP="cancelq")
    assert [s.api.job(i)["status"] for i in ids] == ["success", "cancelled", "success"]

    async def marks() -> list[str]:
        import nats

        nc = await nats.connect(s.nats_url)
        try:
            keys = await (await nc.jetstream().key_value("GO_CANCELS")).keys()
        finally:
            await nc.close()
        mine = subjects.cancelled_queued_key("t-cancel-queued", "x")[:-1]  # not other tests'
        return [k for k in keys if k.startswith(mine)]

    # the worker that dropped it removed its mark (with its own, tag-scoped rights)
    wait_until(lambda: asyncio.run(marks()) == [], "the mark removed", 30)


def test_a_script_can_be_run_the_moment_its_deploy_answers(extra_workers: Suite) -> None:
    """Read your writes: once a deploy answers `published: true` (its event is on the config
    stream), a router that has not folded it yet catches up with the stream before it answers
    404 (or runs a version the deploy replaced). `published: false` (the stream took longer
    than the answer's 2 s, as on a loaded machine) promises nothing yet: then the test waits."""
    s = extra_workers
    for i in range(10):
        deployed = deploy(s, f"ws1/f/ryw-{i}", f"echo ryw-{i}\n")
        if not deployed["published"]:
            wait_router_seq(s, deployed["seq"])
        answer = run(s, f"ws1/f/ryw-{i}")  # no wait in between
        assert s.api.job(answer["id"])["result"] == f"ryw-{i}"


def test_a_stalled_config_follow_does_not_answer_404(extra_workers: Suite) -> None:
    """The routers' follows of the config stream are deleted (as when an ordered consumer is
    being recreated on a loaded machine): a submission naming a script deployed since reads the
    missing events from the stream itself rather than answering 404, and says so in the log."""
    s = extra_workers

    async def delete_config_consumers() -> int:
        import nats

        nc = await nats.connect(s.nats_url)
        try:
            jsm = nc.jetstream()
            names = [c.name for c in await jsm.consumers_info("GO_CONFIG")]
            for name in names:
                await jsm.delete_consumer("GO_CONFIG", name)
        finally:
            await nc.close()
        return len(names)

    behind_before = len(s.up.log_events("config_follow_behind"))
    assert asyncio.run(delete_config_consumers()) >= 1
    deployed = deploy(s, "ws1/f/stalled", "echo stalled\n")
    assert deployed["published"]
    answer = run(s, "ws1/f/stalled")  # the follow delivers nothing until nats-py recreates it
    assert s.api.job(answer["id"])["result"] == "stalled"
    behind = s.up.log_events("config_follow_behind")[behind_before:]
    assert any(r["why"] == "catch_up" and r["read"] >= 1 for r in behind), behind
