"""Human-readable output of the CLI: tables and job reports (JSON output bypasses this)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import msgspec

from shared.isolation import GroupView, describe_sandbox, format_value
from shared.jobs import JobView, WorkerStatus


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def print_job(view: JobView) -> None:
    duration = f" in {view.duration_ms:.0f} ms" if view.duration_ms is not None else ""
    print(f"job     {view.id}")
    print(f"status  {view.status}{duration}")
    print(f"tag     {view.tag}")
    print(f"group   {view.group or '-'}")
    print(f"worker  {view.worker or '-'}")
    for step in view.steps:
        print(f"  step {step.index} {step.name}: {step.status} on tag {step.tag}"
              f" (group {step.group or '-'}, job {step.job_id or '-'})")
    if view.logs:
        print("--- logs ---")
        print(view.logs.rstrip("\n"))
    if view.error:
        print("--- error ---")
        print(view.error)
    if view.status == "success":
        print("--- result ---")
        print(json.dumps(view.result, indent=2))


def print_workers(workers: list[WorkerStatus]) -> None:
    now = time.time()
    rows = [
        [
            w.id, w.group or "-", worker_state(w),
            f"{','.join(w.tags) or '-'} ({w.tags_source})", str(w.config_version),
            w.current_job or "-", w.init_status, worker_sandbox(w),
            ",".join(w.runtimes) or "-", f"{now - w.heartbeat_at:.0f}s ago",
        ]
        for w in workers
    ]
    _table(["WORKER", "GROUP", "STATE", "TAGS (SOURCE)", "CONFIG", "JOB", "INIT", "SANDBOX",
            "RUNTIMES", "HEARTBEAT"], rows)
    if not workers:
        print("(no live workers)")


def worker_state(w: WorkerStatus) -> str:
    """The heartbeat's state, except that a worker whose init script is still running or has
    failed says so: it takes no job, and the router does not count it as live."""
    if w.state == "ready" and w.held_by_init:
        return f"init-{w.init_status}"
    return w.state


def worker_sandbox(w: WorkerStatus) -> str:
    """`bwrap`, `bwrap/no-net`, or `NONE` (in capitals: its jobs are not isolated)."""
    if w.sandbox == "none":
        return "NONE"
    return w.sandbox + ("" if w.network else "/no-net")


def unsandboxed_warning(workers: list[WorkerStatus]) -> str | None:
    """One line naming every live worker that runs jobs without a sandbox, and why; None if none."""
    bare = [w for w in workers if w.sandbox == "none"]
    if not bare:
        return None
    names = "; ".join(f"{w.id} ({w.sandbox_note or 'no reason given'})" for w in bare)
    count = "1 live worker runs" if len(bare) == 1 else f"{len(bare)} live workers run"
    return (f"{count} jobs WITHOUT a sandbox (job code gets the worker's full access): {names}")


def print_groups(groups: list[GroupView]) -> None:
    rows = [
        [g.name, str(g.version), ",".join(g.tags) or "-", "yes" if g.init_script else "-",
         describe_sandbox(g.sandbox, g.network)]
        for g in groups
    ]
    _table(["GROUP", "VERSION", "TAGS", "INIT SCRIPT", "SANDBOX"], rows)


def print_group(g: GroupView) -> None:
    print(f"group        {g.name}")
    print(f"version      {g.version}")
    print(f"tags         {', '.join(g.tags) or '-'}")
    print(f"dedicated    {', '.join(g.dedicated) or '-'}")
    print("priorities   " + (", ".join(f"{t}={p}" for t, p in sorted(g.priorities.items(),
                                                                     key=lambda i: -i[1]))
                             or "-"))
    print("env          " + ("-" if not g.env else ""))
    for name, value in g.env.items():  # the group's static variables, as jobs get them
        print(f"  {name}={value}")
    print(f"sandbox      {g.sandbox or 'default'}"
          + ("" if g.sandbox else " (each worker's JOB_SANDBOX)"))
    print(f"network      {'on' if g.network else 'off'}")
    own = msgspec.structs.asdict(g.limits)
    own = {k: v for k, v in own.items() if v is not None}
    effective = {k: v for k, v in msgspec.structs.asdict(g.effective_limits).items()
                 if v is not None} or own
    print("limits       " + ("(all default)" if not own else "(set: " + ",".join(
        f"{k}={format_value(k, v)}" for k, v in own.items()) + ")"))
    width = max((len(k) for k in effective), default=0)
    for name, value in effective.items():
        shown = format_value(name, value) + (" s" if name in ("cpu_seconds", "max_timeout") else "")
        print(f"  {name.ljust(width)}  {shown.ljust(8)}  {'set' if name in own else 'default'}")
    if g.init_script:
        print("init script:")
        print(g.init_script.rstrip("\n"))
    else:
        print("init script  -")


def print_write(name: str, answer: dict[str, Any]) -> None:
    for warning in answer.get("warnings") or []:  # tags the change left with waiting jobs
        print(f"getoperate: warning: {warning}", file=sys.stderr)
    events = answer.get("events") or []
    group = answer.get("group") or {}
    if any(e["type"] == "group.tags_set" for e in events) and not group.get("tags"):
        print(f"getoperate: warning: group {name} now listens to no tag: its workers take no"
              " job until it has some (`getoperate group set NAME --tags ...`)", file=sys.stderr)
    if not events:
        print(f"group {name}: no change")
        return
    types = ", ".join(e["type"] for e in events)
    live = "" if answer.get("published") else " (stored; not yet on NATS, the outbox will publish it)"
    print(f"group {name}: {types} at seq {answer['seq']}{live}")


def print_deployed(items: list[dict[str, Any]]) -> None:
    rows = [[f"{i['workspace']}/{i['path']}", str(i["revision"]), str(i["version"]),
             i.get("language") or f"{len(i.get('steps', []))} steps", i.get("tag") or "-"]
            for i in items]
    _table(["PATH", "REVISION", "VERSION", "LANGUAGE", "TAG"], rows)


def print_script(s: dict[str, Any]) -> None:
    print(f"script    {s['workspace']}/{s['path']}")
    print(f"revision  {s['revision']} (version {s['version']})")
    print(f"language  {s['language']}")
    print(f"tag       {s.get('tag') or '- (language default)'}")
    print("--- content ---")
    print(s["content"].rstrip("\n"))


def print_flow(f: dict[str, Any]) -> None:
    print(f"flow      {f['workspace']}/{f['path']}")
    print(f"revision  {f['revision']} (version {f['version']})")
    print(f"tag       {f.get('tag') or '- (flow)'}{' (preserve step tags)' if f.get('preserve_step_tags') else ''}")
    for i, step in enumerate(f["steps"], 1):
        what = f"script {step['script']}" if step.get("script") else f"inline {step.get('language')}"
        print(f"  step {i} {step.get('name') or ''}: {what}, tag {step.get('tag') or '-'}")


def print_deploy(noun: str, target: str, answer: dict[str, Any]) -> None:
    item = answer.get("item") or {}
    print(f"{noun} {target}: revision {item.get('revision')} at seq {answer.get('seq')}")


def print_tags(tags: list[dict[str, Any]]) -> None:
    rows = [[t["tag"], t["spec"], ",".join(t["only"]) or ("all but " + ",".join(t["exclude"]) if t["exclude"] else "all")]
            for t in tags]
    _table(["TAG", "SPEC", "WORKSPACES"], rows)


def print_tokens(tokens: list[dict[str, Any]]) -> None:
    _table(["NAME", "WORKSPACE", "CREATED AT SEQ"],
           [[t["name"], t["workspace"] or "(admin)", str(t["created_seq"])] for t in tokens])


def event_line(row: dict[str, Any]) -> str:
    reason = f"  (reason: {row['reason']})" if row.get("reason") else ""
    return f"{row['seq']:>6}  {row['time'][:19].replace('T', ' ')}  {row['actor']:<12} {row['type']:<24} {row['summary']}{reason}"


def print_state(state: dict[str, Any]) -> None:
    print(f"configuration at seq {state['seq']}"
          + (" (empty: that is before the first event)" if not state["seq"] else ""))
    for g in sorted(state["groups"].values(), key=lambda g: g["name"]):
        extras = []
        if g.get("init_script"):
            extras.append("init script")
        if g.get("dedicated"):
            extras.append("dedicated " + ",".join(g["dedicated"]))
        if g.get("priorities"):
            extras.append("priorities " + ",".join(f"{k}={v}" for k, v in g["priorities"].items()))
        if g.get("limits"):
            extras.append("limits " + ",".join(f"{k}={format_value(k, v)}"
                                               for k, v in g["limits"].items()))
        if g.get("sandbox") or not g.get("network", True):
            extras.append("sandbox " + describe_sandbox(g.get("sandbox"), g.get("network", True)))
        print(f"  group {g['name']} (v{g['version']}): {', '.join(g['tags']) or '-'}"
              + (f"; {'; '.join(extras)}" if extras else ""))
    for s in sorted(state["scripts"].values(), key=lambda s: (s["workspace"], s["path"])):
        print(f"  script {s['workspace']}/{s['path']} r{s['revision']} {s['language']} tag {s.get('tag') or '-'}")
    for f in sorted(state["flows"].values(), key=lambda f: (f["workspace"], f["path"])):
        print(f"  flow {f['workspace']}/{f['path']} r{f['revision']} {len(f['steps'])} steps tag {f.get('tag') or '-'}")
    for t in sorted(state["assignable"]):
        print(f"  assignable tag {t}")
    for name, tok in sorted(state.get("tokens", {}).items()):
        print(f"  token {name} ({tok.get('workspace') or 'admin'})")


def print_jobs(jobs: list[JobView]) -> None:
    rows = [[j.id, j.status, j.tag or "-", j.group or "-", j.workspace or "-",
             time.strftime("%H:%M:%S", time.localtime(j.queued_at)) if j.queued_at else "-"]
            for j in jobs]
    _table(["JOB", "STATUS", "TAG", "GROUP", "WORKSPACE", "QUEUED"], rows)
