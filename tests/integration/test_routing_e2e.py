"""Groups, tags, hot reload and init scripts, end to end with real workers and a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor


from tests.integration.conftest import Suite
from tests.integration.harness import finished_events, ready


def test_jobs_land_only_on_workers_of_the_right_group(extra_workers: Suite) -> None:
    s = extra_workers
    s.api.set_group("alpha", tags=["t-alpha"])
    s.api.set_group("beta", tags=["t-beta"])
    s.worker("alpha", WORKER_GROUP="alpha")
    s.worker("alpha", WORKER_GROUP="alpha")
    s.worker("beta", WORKER_GROUP="beta")
    s.api.wait_workers(lambda ws: ready("alpha", 2)(ws) and ready("beta", 1)(ws))
    ids = {tag: [s.api.submit("echo $GO_WORKER_GROUP", tag=tag)["id"] for _ in range(8)]
           for tag in ("t-alpha", "t-beta")}
    for tag, group in (("t-alpha", "alpha"), ("t-beta", "beta")):
        for job_id in ids[tag]:
            view = s.api.job(job_id)
            assert view["status"] == "success", view
            assert (view["tag"], view["group"], view["result"]) == (tag, group, group)
    alpha_workers = {s.api.job(j)["worker"] for j in ids["t-alpha"]}
    assert all(w.startswith("alpha-") for w in alpha_workers)


def test_submit_answer_names_the_groups_and_live_workers(extra_workers: Suite) -> None:
    s = extra_workers
    s.api.set_group("gamma", tags=["t-gamma"])
    answer = s.api.submit("echo x", tag="t-gamma")
    assert answer["groups"] == ["gamma"]
    assert answer["live_workers"] == 0
    assert "groups configured with it: gamma" in answer["warning"]
    s.worker("gamma", WORKER_GROUP="gamma")
    view = s.api.job(answer["id"], timeout=30)
    assert view["status"] == "success"  # the queued job is picked up once a worker joins
    assert view["group"] == "gamma"


def test_hot_reload_moves_a_tag_while_jobs_flow_and_each_job_runs_once(extra_workers: Suite) -> None:
    s = extra_workers
    s.api.set_group("src", tags=["t-move"])
    s.api.set_group("dst", tags=["t-dst-other"])
    src = [s.worker("src", WORKER_GROUP="src") for _ in range(2)]
    dst = s.worker("dst", WORKER_GROUP="dst")
    s.api.wait_workers(lambda ws: ready("src", 2)(ws) and ready("dst", 1)(ws))
    ids: list[str] = []

    def submit_many(n: int) -> None:
        for _ in range(n):
            ids.append(s.api.submit("sleep 0.02; echo $GO_WORKER_GROUP", tag="t-move")["id"])

    submit_many(20)
    moved = s.api.set_group("src", tags=[])
    s.api.set_group("dst", tags=["t-dst-other", "t-move"])
    submit_many(20)
    s.api.wait_workers(ready("dst", 1, tags={"t-dst-other", "t-move"}, version=moved["seq"]))
    with ThreadPoolExecutor(8) as pool:
        views = list(pool.map(lambda j: s.api.job(j, timeout=60), ids))
    assert [v["status"] for v in views] == ["success"] * len(ids)
    counts = asyncio.run(finished_events(s.nats_url))
    assert all(counts[j] == 1 for j in ids), {j: counts[j] for j in ids if counts[j] != 1}
    groups = Counter(v["group"] for v in views)
    assert groups["dst"] >= 1  # after the move, the new group serves the tag
    # Every src worker applied the removal and logged what changed.
    for proc in src:
        proc_reloads = [r for r in proc.log_events("hot_reload") if r["config_version"] >= moved["seq"]]
        assert any("tags removed: t-move" in r["changes"] for r in proc_reloads), proc.output()[-2000:]
    assert any("tags added: t-move" in r["changes"] for r in dst.log_events("hot_reload"))
    # And later jobs land on dst only.
    late = [s.api.submit("echo $GO_WORKER_GROUP", tag="t-move")["id"] for _ in range(5)]
    assert {s.api.job(j)["group"] for j in late} == {"dst"}


def test_init_script_runs_before_the_first_job_and_again_after_it_changes(
    extra_workers: Suite,
) -> None:
    """An init script installs into $GO_INIT_DIR (its only writable place in the sandbox); jobs
    read it there; a changed script starts from an empty folder."""
    s = extra_workers
    marker = '"$GO_INIT_DIR/marker"'
    s.api.set_group("initg", tags=["t-init"], init_script=f"sleep 0.5; echo v1 >> {marker}\n")
    first = s.api.submit(f"tail -n1 {marker}", tag="t-init")["id"]  # queued before any worker
    s.worker("initg", WORKER_GROUP="initg")
    assert s.api.job(first)["result"] == "v1"
    changed = s.api.set_group("initg", init_script=f"echo v2 >> {marker}\n")
    s.api.wait_workers(ready("initg", 1, version=changed["seq"]))
    again = s.api.submit(f"cat {marker} | tr '\\n' ' '", tag="t-init")["id"]
    assert s.api.job(again)["result"] == "v2 "
    status = [w for w in s.api.workers() if w["group"] == "initg"][0]
    assert status["init_status"] == "ok"


def test_a_background_process_left_by_the_init_script_does_not_block_the_worker(
    extra_workers: Suite,
) -> None:
    s = extra_workers
    s.api.set_group("bgg", tags=["t-bg"], init_script="sleep 300 &\necho started\n")
    s.worker("bgg", WORKER_GROUP="bgg")
    job = s.api.submit("echo fine", tag="t-bg")["id"]
    assert s.api.job(job, timeout=20)["status"] == "success"


def test_worker_tags_env_takes_precedence_and_is_shown(extra_workers: Suite) -> None:
    s = extra_workers
    s.api.set_group("envg", tags=["t-stored"])
    proc = s.worker("envg", WORKER_GROUP="envg", WORKER_TAGS="t-env1,t-env2")
    community = s.worker("tagsonly", WORKER_TAGS="t-community")
    ws = s.api.wait_workers(lambda ws: ready("envg")(ws) and ready(None)(ws))  # type: ignore[arg-type]
    mine = [w for w in ws if w["group"] == "envg"][0]
    assert (mine["tags"], mine["tags_source"]) == (["t-env1", "t-env2"], "env")
    solo = [w for w in ws if w["group"] is None][0]
    assert (solo["tags"], solo["tags_source"]) == (["t-community"], "env")
    assert s.api.job(s.api.submit("echo ok", tag="t-env2")["id"])["group"] == "envg"
    assert s.api.job(s.api.submit("echo ok", tag="t-community")["id"])["group"] is None
    changed = s.api.set_group("envg", tags=["t-stored", "t-new"])
    s.api.wait_workers(ready("envg", version=changed["seq"]))
    reload = proc.log_events("hot_reload")[-1]
    assert "tags ignored: WORKER_TAGS takes precedence" in reload["changes"]
    assert reload["tags"] == ["t-env1", "t-env2"]
    assert community.p.poll() is None


def test_deleting_a_group_releases_its_tags(extra_workers: Suite) -> None:
    s = extra_workers
    s.api.set_group("tmpg", tags=["t-tmp"])
    s.worker("tmpg", WORKER_GROUP="tmpg")
    s.api.wait_workers(ready("tmpg", tags={"t-tmp"}))
    s.api.call("DELETE", "config", "/groups/tmpg")
    s.api.wait_workers(lambda ws: any(w["group"] == "tmpg" and w["tags"] == [] for w in ws))
    answer = s.api.submit("echo x", tag="t-tmp")
    assert answer["live_workers"] == 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert s.api.job(answer["id"], wait=False)["status"] == "queued"
        time.sleep(0.2)
