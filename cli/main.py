"""The `getoperate` command line: start services, submit and inspect jobs, manage worker groups.

Exit codes: 0 success; 1 the job failed or the service refused the request; 2 bad usage or
invalid input; 3 a service could not be reached; 4 a submission's outcome is unknown.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, NoReturn

from cli import output
from cli.client import (
    EXIT_FAILED,
    EXIT_USAGE,
    EXIT_WAITING,
    CliError,
    Endpoints,
    answer_as,
    call,
    submit,
)
from services.common.runtime import DEFAULT_DATA_DIR
from services.worker.languages import BUILTIN as BUILTIN_LANGUAGES
from shared.errors import InvalidInput
from shared.isolation import GroupView
from shared.jobs import TERMINAL, JobView, SubmitAnswer, WorkerStatus


def parse_arg(text: str) -> tuple[str, Any]:
    """`k=v`: v as JSON when it parses (`n=3` is the number 3), else as the string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise CliError(f"--arg {text!r} must look like name=value", EXIT_USAGE)
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def _endpoints(ns: argparse.Namespace) -> Endpoints:
    return Endpoints(Path(ns.data_dir), getattr(ns, "config_url", None), getattr(ns, "router_url", None))


# --- jobs ----------------------------------------------------------------------------------------


def wait_for_job(ep: Endpoints, job_id: str, timeout: float | None) -> dict[str, Any]:
    """Long-poll the router until the job ends. A job still going after PROGRESS_AFTER seconds
    gets a line on stderr at each change (queued on which tag, running on which worker), so a
    long wait is never silent; stdout keeps only the result."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    quoted = urllib.parse.quote(job_id, safe="")
    shown = None
    while True:
        chunk = PROGRESS_AFTER if shown is None else 10.0
        step = chunk if deadline is None else max(0.0, min(chunk, deadline - time.monotonic()))
        raw = call("GET", f"{ep.router_url}/jobs/{quoted}?wait=1&timeout={step}", ep.token(),
                   timeout=step + 30)
        view = answer_as(raw, JobView, f"job {job_id}")
        if view.status in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
            return raw
        where = f"on worker {view.worker}" if view.status == "running" else f"on tag {view.tag!r}"
        line = f"job {job_id} is {view.status} {where}"
        if view.status == "running" and view.worker and not _alive(ep, view.worker):
            line = (f"job {job_id}: worker lost ({view.worker}), waiting for redelivery to"
                    " another worker")
        if line != shown:
            print(f"getoperate: {line} ({time.monotonic() - started:.0f}s)...", file=sys.stderr,
                  flush=True)
            shown = line


PROGRESS_AFTER = 2.0


def _alive(ep: Endpoints, worker: str) -> bool:
    """Whether a worker still beats (its heartbeat is in GET /workers). A failed look is taken
    as alive: the progress line only changes on evidence."""
    try:
        live = answer_as(call("GET", f"{ep.router_url}/workers", ep.token()), list[WorkerStatus],
                         "workers")
        return any(w.id == worker for w in live)
    except CliError:
        return True


def _progress(line: str) -> None:
    print(f"getoperate: {line}", file=sys.stderr, flush=True)


def split_target(target: str) -> tuple[str, str]:
    """`WS/PATH` -> (workspace, path)."""
    ws, sep, path = target.partition("/")
    if not sep or not ws or not path:
        raise CliError(f"{target!r} must look like WORKSPACE/PATH (e.g. main/f/etl)", EXIT_USAGE)
    return ws, path


def _check_wait(ns: argparse.Namespace, job_limit: str | None = None) -> None:
    """`--timeout` bounds `--wait`: alone, or not a positive number, it is a usage error (before
    anything is submitted), never silently ignored."""
    if ns.timeout is None:
        return
    if not ns.wait:
        hint = f" (the job's own limit is {job_limit})" if job_limit else ""
        raise CliError(f"--timeout is how long --wait waits: give --wait too{hint}", EXIT_USAGE)
    if not math.isfinite(ns.timeout) or ns.timeout <= 0:
        raise CliError(f"--timeout must be a number of seconds above 0, got {ns.timeout:g}",
                       EXIT_USAGE)


def cmd_run(ns: argparse.Namespace) -> int:
    _check_wait(ns, "--job-timeout")
    if not math.isfinite(ns.retry_for) or ns.retry_for < 0:
        raise CliError(f"--retry-for must be 0 or more seconds, got {ns.retry_for:g}", EXIT_USAGE)
    ep = _endpoints(ns)
    body: dict[str, Any] = {"args": dict(parse_arg(a) for a in ns.arg)}
    if ns.target:
        if ns.code is not None or ns.file is not None or ns.language is not None:
            raise CliError("give either WS/PATH of a deployed script or flow, or --language with"
                           " --code/--file", EXIT_USAGE)
        body["workspace"], body["path"] = split_target(ns.target)
        if ns.kind:
            body["kind"] = ns.kind
    else:
        if ns.code is None and ns.file is None:
            raise CliError("give the code with --code TEXT or --file PATH (or WS/PATH of a"
                           " deployed script)", EXIT_USAGE)
        if ns.language is None:
            raise CliError("--language is required (bash, python3, ...)", EXIT_USAGE)
        body["language"] = ns.language
        body["code"] = ns.code if ns.code is not None else _read(ns.file, "--file")
        body["workspace"] = ns.workspace
    if ns.tag:
        body["tag"] = ns.tag
    if ns.require_worker:
        body["require_worker"] = True
    if ns.job_timeout is not None:
        body["timeout"] = ns.job_timeout  # the router refuses 0 or less, naming the field
    key = ns.idempotency_key or f"cli-{uuid.uuid4().hex}"  # our own retries stay one job
    raw = submit(f"{ep.router_url}/jobs", ep.token(), body, key, ns.retry_for, _progress)
    answer = answer_as(raw, SubmitAnswer, "the submission")
    if answer.replayed:
        print(f"getoperate: job {answer.id} was already submitted with this idempotency key;"
              " showing that job", file=sys.stderr)
    if answer.warning:
        print(f"getoperate: warning: {answer.warning}", file=sys.stderr)
    if not ns.wait:
        print(json.dumps(raw) if ns.json else answer.id)
        return 0
    view = wait_for_job(ep, answer.id, ns.timeout)
    return _show_job(view, ns.json, waited=True)


def _read(path: str, flag: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {flag} {path}: {exc.strerror}", EXIT_USAGE) from exc


def _show_job(raw: Any, as_json: bool, waited: bool = False) -> int:
    view = answer_as(raw, JobView, "the job")
    if as_json:
        print(json.dumps(raw))
    else:
        output.print_job(view)
    if view.status in ("failure", "cancelled"):
        return EXIT_FAILED
    if waited and view.status not in TERMINAL:
        print(f"getoperate: job {view.id} is still {view.status} after --timeout; it goes"
              f" on: `getoperate job {view.id} --wait` waits again", file=sys.stderr)
        return EXIT_WAITING  # 0 means the job succeeded
    return 0


def cmd_job(ns: argparse.Namespace) -> int:
    _check_wait(ns)
    ep = _endpoints(ns)
    if ns.wait:
        view = wait_for_job(ep, ns.id, ns.timeout)
    else:
        view = call("GET", f"{ep.router_url}/jobs/{urllib.parse.quote(ns.id, safe='')}", ep.token())
    return _show_job(view, ns.json, waited=ns.wait)


def cmd_cancel(ns: argparse.Namespace) -> int:
    ep = _endpoints(ns)
    raw = call("POST", f"{ep.router_url}/jobs/{urllib.parse.quote(ns.id, safe='')}/cancel",
               ep.token(), {})
    view = answer_as(raw, JobView, f"cancel of job {ns.id}")
    if ns.json:
        print(json.dumps(raw))
    else:
        print(f"job {view.id}: {view.status}" + (f" ({view.error})" if view.error else ""))
    return 0 if view.status == "cancelled" else EXIT_FAILED


def cmd_workers(ns: argparse.Namespace) -> int:
    ep = _endpoints(ns)
    raw = call("GET", f"{ep.router_url}/workers", ep.token())
    workers = answer_as(raw, list[WorkerStatus], "workers")
    if ns.json:
        print(json.dumps(raw))
    else:
        output.print_workers(workers)
    warning = output.unsandboxed_warning(workers)
    if warning:
        print(f"getoperate: WARNING: {warning}", file=sys.stderr)
    return 0


# --- groups ------------------------------------------------------------------------------------


def cmd_group(ns: argparse.Namespace) -> int:
    ep = _endpoints(ns)
    base = f"{ep.config_url}/groups"
    token = ep.token()
    if ns.action == "list":
        raw = call("GET", base, token)
        groups = answer_as(raw, list[GroupView], "groups")
        if ns.json:
            print(json.dumps(raw))
        else:
            output.print_groups(groups)
        return 0
    name = urllib.parse.quote(ns.name, safe="")
    if ns.action == "show":
        raw = call("GET", f"{base}/{name}", token)
        group = answer_as(raw, GroupView, f"group {ns.name}")
        if ns.json:
            print(json.dumps(raw))
        else:
            output.print_group(group)
        return 0
    if ns.action == "set":
        body: dict[str, Any] = {}
        if ns.tags is not None:
            body["tags"] = [t.strip() for t in ns.tags.split(",") if t.strip()]
        if ns.dedicated is not None:
            body["dedicated"] = [t.strip() for t in ns.dedicated.split(",") if t.strip()]
        if ns.priority:
            prio: dict[str, int] = {}
            for item in ns.priority:
                tag, sep, value = item.rpartition("=")
                if not sep or not tag or not value.strip().isdigit():
                    raise CliError(f"--priority {item!r} must look like tag=N (N from 1 to 255)",
                                   EXIT_USAGE)
                prio[tag] = int(value)
            body["priorities"] = prio
        if ns.no_priorities:
            body["priorities"] = {}
        if ns.env:
            variables: dict[str, str] = {}
            for item in ns.env:
                var, sep, value = item.partition("=")
                if not sep or not var:
                    raise CliError(f"--env {item!r} must look like NAME=value", EXIT_USAGE)
                variables[var] = value
            body["env"] = variables
        if ns.no_env:
            body["env"] = {}
        if ns.limits is not None:
            from shared.limits import parse as parse_limits
            from shared.limits import as_dict

            body["limits"] = as_dict(parse_limits(ns.limits)) or None  # None: all defaults
        if ns.sandbox is not None:
            from shared.isolation import validate_sandbox

            validate_sandbox(ns.sandbox)  # one line on stderr and exit 2, before any request
            body["sandbox"] = ns.sandbox
        if ns.network is not None:
            body["network"] = ns.network
        if ns.no_init_script:
            body["init_script"] = None
        elif ns.init_script is not None:
            try:
                body["init_script"] = Path(ns.init_script).read_text()
            except OSError as exc:
                raise CliError(f"cannot read --init-script {ns.init_script}: {exc.strerror}", EXIT_USAGE)
        answer = call("PUT", f"{base}/{name}", token, {**body, **_write_opts(ns)})
    elif ns.action == "reset":
        answer = call("POST", f"{base}/{name}/reset", token, {"preset": ns.preset, **_write_opts(ns)})
    else:  # delete
        query = {k: v for k, v in _write_opts(ns).items()}
        suffix = ("?" + urllib.parse.urlencode(query)) if query else ""
        answer = call("DELETE", f"{base}/{name}{suffix}", token)
    if ns.json:
        print(json.dumps(answer))
    else:
        output.print_write(ns.name, answer)
    return 0


def _write_opts(ns: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if getattr(ns, "expected_version", None) is not None:
        opts["expected_version"] = ns.expected_version
    if getattr(ns, "reason", None):
        opts["reason"] = ns.reason
    return opts


# --- scripts, flows, assignable tags -----------------------------------------------------------


def _deployed(ns: argparse.Namespace, kind: str, show: Any) -> tuple[int | None, str, str | None]:
    """The list/show half of `script` and `flow`: (exit code if done, item URL, token)."""
    ep = _endpoints(ns)
    token = ep.token()
    if ns.action == "list":
        query = f"?workspace={urllib.parse.quote(ns.workspace)}" if ns.workspace else ""
        items = call("GET", f"{ep.config_url}/{kind}s{query}", token)
        return _print(items, ns.json, output.print_deployed), "", token
    ws, path = split_target(ns.target)
    url = f"{ep.config_url}/{kind}s/{urllib.parse.quote(ws, safe='')}/{urllib.parse.quote(path)}"
    if ns.action == "show":
        return _print(call("GET", url, token), ns.json, show), url, token
    return None, url, token


def cmd_script(ns: argparse.Namespace) -> int:
    done, url, token = _deployed(ns, "script", output.print_script)
    if done is not None:
        return done
    body: dict[str, Any] = {"language": ns.language, "content": _read(ns.file, "FILE"),
                            **_write_opts(ns)}
    if ns.tag:
        body["tag"] = ns.tag
    if ns.timeout:
        body["timeout"] = ns.timeout
    answer = call("PUT", url, token, body)
    return _print(answer, ns.json, lambda a: output.print_deploy("script", ns.target, a))


def load_flow_file(path: str) -> dict[str, Any]:
    """A flow file is JSON or YAML: {steps: [...], tag?, preserve_step_tags?}."""
    text = _read(path, "FLOW")
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # both parsers raise their own error types
        raise CliError(f"cannot parse {path}: {exc}", EXIT_USAGE) from exc
    if isinstance(data, list):
        data = {"steps": data}
    if not isinstance(data, dict):
        raise CliError(f"{path} must hold an object with 'steps' (or a list of steps)", EXIT_USAGE)
    return data


def cmd_flow(ns: argparse.Namespace) -> int:
    done, url, token = _deployed(ns, "flow", output.print_flow)
    if done is not None:
        return done
    body = {**load_flow_file(ns.file), **_write_opts(ns)}
    if ns.tag:
        body["tag"] = ns.tag
    if ns.preserve_step_tags:
        body["preserve_step_tags"] = True
    answer = call("PUT", url, token, body)
    return _print(answer, ns.json, lambda a: output.print_deploy("flow", ns.target, a))


def cmd_tags(ns: argparse.Namespace) -> int:
    ep = _endpoints(ns)
    token = ep.token()
    if ns.action == "list":
        return _print(call("GET", f"{ep.config_url}/tags", token), ns.json, output.print_tags)
    if ns.action == "add":
        body: dict[str, Any] = {"spec": ns.spec}
        if ns.reason:
            body["reason"] = ns.reason
        if ns.replace:
            body["replace"] = True
        before = {t["tag"]: t["spec"] for t in call("GET", f"{ep.config_url}/tags", token)}
        answer = call("POST", f"{ep.config_url}/tags", token, body)
        tag = ns.spec.split("(")[0].strip()
        if answer.get("seq") and tag in before and not ns.json:
            print(f"{tag}: restriction changed from {before[tag]} to "
                  f"{(answer.get('item') or {}).get('spec', ns.spec)}")
    else:
        answer = call("DELETE", f"{ep.config_url}/tags/{urllib.parse.quote(ns.tag, safe='')}", token)
    return _print(answer, ns.json, lambda a: print(
        f"{ns.action} {getattr(ns, 'spec', None) or ns.tag}: "
        + (f"seq {a['seq']}" if a.get("seq") else "no change")))


def cmd_token(ns: argparse.Namespace) -> int:
    ep = _endpoints(ns)
    token = ep.token()
    if ns.action == "create":
        body: dict[str, Any] = {"admin": True} if ns.admin else {"workspace": ns.workspace}
        if ns.admin and ns.workspace:
            raise CliError("give --workspace W or --admin, not both", EXIT_USAGE)
        if not ns.admin and not ns.workspace:
            raise CliError("give --workspace W (or --admin for another admin token)", EXIT_USAGE)
        if ns.name:
            body["name"] = ns.name
        answer = call("POST", f"{ep.config_url}/tokens", token, body)
        if ns.json:
            print(json.dumps(answer))
        else:
            print(answer["token"])
            print(f"token {answer['name']} for {answer['workspace'] or 'admin'}: shown once, store it"
                  " now (use it with GETOPERATE_TOKEN)", file=sys.stderr)
        return 0
    if ns.action == "list":
        return _print(call("GET", f"{ep.config_url}/tokens", token), ns.json, output.print_tokens)
    answer = call("DELETE", f"{ep.config_url}/tokens/{urllib.parse.quote(ns.name, safe='')}", token)
    return _print(answer, ns.json, lambda a: print(f"token {ns.name} revoked at seq {a['seq']}"))


def cmd_events(ns: argparse.Namespace) -> int:
    ep = _endpoints(ns)
    if ns.follow:  # checked first: without the public key, following would print nothing
        from services.common.signingkeys import load_verifier

        verifier = load_verifier(ep.data_dir)
    query: dict[str, Any] = {"limit": ns.limit}
    for key in ("group", "type", "actor", "since", "until"):
        if getattr(ns, key):
            query[key] = getattr(ns, key)
    if not ns.json:
        query["summary"] = 1
    # Where the log ends before the history is read: the follow starts there, so an event
    # written while this command starts is printed once, by the history or by the follow.
    start = call("GET", f"{ep.config_url}/healthz", None)["seq"] if ns.follow else 0
    rows = call("GET", f"{ep.config_url}/events?{urllib.parse.urlencode(query)}", ep.token())
    for row in rows:
        print(json.dumps(row) if ns.json else output.event_line(row), flush=True)
    if not ns.follow:
        return 0
    from cli.follow import follow_events

    last = max([int(start)] + [rows[-1]["seq"]] if rows else [int(start)])
    return follow_events(ep.nats_url, after=last, group=ns.group, type_=ns.type, actor=ns.actor,
                         as_json=ns.json, verifier=verifier, auth=ep.nats_auth())


def cmd_replay(ns: argparse.Namespace) -> int:
    ep = _endpoints(ns)
    state = call("GET", f"{ep.config_url}/state?{urllib.parse.urlencode({'at': ns.at})}", ep.token())
    return _print(state, ns.json, output.print_state)


def cmd_diff(ns: argparse.Namespace) -> int:
    ep = _endpoints(ns)
    query = {"from": ns.a, **({"to": ns.b} if ns.b else {})}
    answer = call("GET", f"{ep.config_url}/diff?{urllib.parse.urlencode(query)}", ep.token())
    if ns.json:
        print(json.dumps(answer))
        return 0
    print(f"from seq {answer['from_seq']} to seq {answer['to_seq']}:")
    for line in answer["changes"] or ["(no change)"]:
        print(f"  {line}")
    return 0


def cmd_verify(ns: argparse.Namespace) -> int:
    ep = _endpoints(ns)
    print("verifying the SQLite hash chain, its columns, the stream's signed events and every"
          " snapshot, event by event...", file=sys.stderr, flush=True)
    report = call("GET", f"{ep.config_url}/verify", ep.token(), timeout=600)
    if ns.json:
        print(json.dumps(report))
    if report["ok"]:
        if not ns.json:
            print(f"intact: {report['log_events']} events in the log, {report['stream_events']}"
                  " on the stream, same bytes in the same order, signed;"
                  f" {report.get('snapshots_checked', 0)} snapshots equal to the log")
        return 0
    more = len(report.get("problems") or []) - 1
    where = f" at seq {report['first_bad_seq']}" if report["first_bad_seq"] is not None else ""
    raise CliError(f"verification failed{where}: {report['problem']}"
                   + (f" ({more} more finding{'s' if more > 1 else ''}: --json lists them)"
                      if more > 0 else ""))


def cmd_jobs(ns: argparse.Namespace) -> int:
    ep = _endpoints(ns)
    if ns.action == "requeue":
        if not ns.tag or not ns.to:
            raise CliError("jobs requeue needs --tag (where the jobs wait) and --to (where they"
                           " go)", EXIT_USAGE)
        from cli.requeue import requeue

        moved = requeue(ep, ns.tag, ns.to)
        if moved["moved"] and not moved["serving"]:
            print(f"getoperate: warning: no group is configured with tag {ns.to!r} and no live"
                  " worker listens to it: the jobs wait there until one does", file=sys.stderr)
        if ns.json:
            print(json.dumps(moved))
        else:
            print(f"moved {len(moved['moved'])} waiting job(s) from {ns.tag} to {ns.to}")
            for line in moved["refused"]:
                print(f"  not moved: {line}")
            if moved["in_flight"]:
                print(f"  left: {moved['in_flight']} job(s) already handed to a worker")
            if moved["dropped_cancelled"]:
                print(f"  dropped: {len(moved['dropped_cancelled'])} job(s) cancelled while"
                      " queued (they had ended)")
        return EXIT_FAILED if moved["refused"] else 0
    if ns.to:
        raise CliError("--to is for `jobs requeue`", EXIT_USAGE)
    query = {k: v for k, v in (("tag", ns.tag), ("group", ns.group), ("workspace", ns.workspace),
                                ("status", ns.status), ("limit", ns.limit)) if v is not None}
    raw = call("GET", f"{ep.router_url}/jobs?{urllib.parse.urlencode(query)}", ep.token())
    jobs = answer_as(raw, list[JobView], "jobs")
    return _print(raw, ns.json, lambda _: output.print_jobs(jobs))


def _print(obj: Any, as_json: bool, human: Any) -> int:
    if as_json:
        print(json.dumps(obj))
    else:
        human(obj)
    return 0


# --- services ----------------------------------------------------------------------------------


def cmd_up(ns: argparse.Namespace) -> int:
    from cli.up import up

    if ns.port_base is not None:
        ns.nats_port, ns.config_port, ns.router_port = ns.port_base, ns.port_base + 1, ns.port_base + 2
    return up(Path(ns.data_dir), ns.nats_port, ns.config_port, ns.router_port,
              workers_per_group=ns.workers_per_group)


def cmd_service(ns: argparse.Namespace) -> int:
    os.environ["GETOPERATE_DATA_DIR"] = ns.data_dir
    if ns.command == "config":
        from services.config.main import main as service_main
    elif ns.command == "router":
        from services.router.main import main as service_main
    else:
        from services.worker.main import main as service_main
    return service_main()


def cmd_asyncapi(ns: argparse.Namespace) -> int:
    """The AsyncAPI document (cli/asyncapi.py), exactly as docs/asyncapi.json holds it."""
    from cli.asyncapi import render

    if ns.output:
        Path(ns.output).write_text(render())
    else:
        sys.stdout.write(render())
    return 0


# --- parser ------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """No abbreviated options: `group set gpu --tag cuda` must not be taken for `--tags`
    (which replaces the group's whole tag list)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """One line on stderr and exit 2, as every other CLI error (argparse would print the
        whole usage first); `--help` is named for the rest."""
        command = self.prog
        if (command == "getoperate" and message.startswith("unrecognized arguments")
                and len(sys.argv) > 1 and not sys.argv[1].startswith("-")):
            command = f"getoperate {sys.argv[1]}"  # an unknown flag is reported at the top
        print(f"{self.prog}: error: {message} (`{command} --help` shows the options)",
              file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    def common_options(top: bool) -> argparse.ArgumentParser:
        # Subcommands repeat the options with SUPPRESS defaults so `getoperate --data-dir X group
        # list` and `getoperate group list --data-dir X` both work (argparse would reset it).
        opts = argparse.ArgumentParser(add_help=False)
        default_dir = os.environ.get("GETOPERATE_DATA_DIR", DEFAULT_DATA_DIR)
        opts.add_argument("--data-dir", default=default_dir if top else argparse.SUPPRESS,
                          help="where `up` keeps data, endpoints.json and admin.token (default ./.getoperate)")
        opts.add_argument("--config-url", default=None if top else argparse.SUPPRESS,
                          help="config service URL (default: $GETOPERATE_CONFIG_URL, then endpoints.json)")
        opts.add_argument("--router-url", default=None if top else argparse.SUPPRESS,
                          help="router URL (default: $GETOPERATE_ROUTER_URL, then endpoints.json)")
        return opts

    common = common_options(top=False)
    p = _Parser(
        prog="getoperate", parents=[common_options(top=True)],
        description="Worker groups and tags over NATS JetStream.",
        epilog="Exit codes: 0 ok, 1 job failed or request refused, 2 bad usage, 3 service"
               " unreachable, 4 a submission's outcome is unknown (repeat it with the same"
               " --idempotency-key), 5 --wait's --timeout passed with the job still going.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("up", parents=[common], help="run NATS, config, router and the seeded workers locally",
                       description="Run NATS, the config service, a router and the seeded workers"
                       " on loopback, with their data in the data dir. One `up` per data dir: a"
                       " second one in the same folder refuses (exit 2) while the first runs.")
    s.add_argument("--nats-port", type=int, default=4222, help="NATS client port (default 4222)")
    s.add_argument("--config-port", type=int, default=8001, help="config service HTTP port (default 8001)")
    s.add_argument("--router-port", type=int, default=8002, help="router HTTP port (default 8002)")
    s.add_argument("--port-base", type=int, help="set the three ports to N, N+1, N+2")
    s.add_argument("--workers-per-group", type=int, default=1, help="workers started per seeded group")
    s.set_defaults(func=cmd_up)

    s = sub.add_parser("run", parents=[common], help="submit a job (and with --wait, show its outcome)")
    s.add_argument("target", nargs="?", metavar="WS/PATH", help="a deployed script or flow to run")
    s.add_argument("--kind", choices=["script", "flow"], help="when WS/PATH is both a script and a flow")
    s.add_argument("--require-worker", action="store_true",
                   help="refuse the job (exit 1) if no live worker can run it (one that listens"
                        " to its tag, has its language's runtime and passed its init script)")
    s.add_argument("--language", help=f"built in: {', '.join(BUILTIN_LANGUAGES)}; or a language"
                                      " a plugin adds (docs/languages.md)")
    s.add_argument("--code", help="the script text")
    s.add_argument("--file", help="read the script from this file")
    s.add_argument("--arg", action="append", default=[], metavar="K=V",
                   help="an argument; V is JSON when it parses, else a string (repeatable)")
    s.add_argument("--tag", help="route to this tag instead of the language default")
    s.add_argument("--workspace", default="main", help="workspace of an inline job (default main)")
    s.add_argument("--job-timeout", type=float, help="seconds the job may run (worker default 300)")
    s.add_argument("--idempotency-key", metavar="KEY",
                   help="1..255 printable ASCII characters naming this submission: running the"
                        " command again with the same key (same workspace and job) finds the job"
                        " it queued instead of queueing a second one (kept as long as job history)")
    s.add_argument("--retry-for", type=float, default=30.0, metavar="SECONDS",
                   help="keep repeating the submission (same key) while its outcome is unknown or"
                        " the router cannot queue now (default 30; 0: one attempt)")
    s.add_argument("--wait", action="store_true", help="wait for the job to finish and show it")
    s.add_argument("--timeout", type=float, help="stop waiting after this many seconds")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("job", parents=[common], help="show a job (or wait for it)")
    s.add_argument("id")
    s.add_argument("--wait", action="store_true", help="wait until the job ends")
    s.add_argument("--timeout", type=float, help="stop waiting after this many seconds")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=cmd_job)

    s = sub.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    s.add_argument("id")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=cmd_cancel)

    s = sub.add_parser("group", parents=[common], help="manage worker groups")
    gsub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    g = gsub.add_parser("list", parents=[common], help="all groups")
    g.add_argument("--json", action="store_true", help="print JSON instead of text")
    g = gsub.add_parser("show", parents=[common],
                        help="one group, with its limits (set and effective), sandbox and network")
    g.add_argument("name")
    g.add_argument("--json", action="store_true", help="print JSON instead of text")
    for action, helptext in (("set", "create or change a group"), ("reset", "reset the tags of an existing group to a preset"),
                             ("delete", "delete a group's config")):
        g = gsub.add_parser(action, parents=[common], help=helptext)
        g.add_argument("name")
        g.add_argument("--expected-version", type=int,
                       help="refuse (exit 1) if the group changed since this version")
        g.add_argument("--reason", help="recorded in the event log")
        g.add_argument("--json", action="store_true", help="print JSON instead of text")
        if action == "set":
            g.add_argument("--tags", help="comma-separated tags (replaces the list)")
            g.add_argument("--init-script", metavar="FILE", help="bash file run by each worker before jobs")
            g.add_argument("--no-init-script", action="store_true", help="remove the init script")
            g.add_argument("--dedicated", metavar="WS:PATH,...",
                           help="dedicate the group's workers to deployed scripts (ws:path) or flows"
                                " (ws:flow/path); empty string removes")
            g.add_argument("--priority", action="append", default=[], metavar="TAG=N",
                           help="tag priority 1..255, higher first (repeatable; replaces the set)")
            g.add_argument("--no-priorities", action="store_true", help="remove all priorities")
            g.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                           help="a static variable for the group's jobs (repeatable; replaces the set)")
            g.add_argument("--no-env", action="store_true", help="remove all static variables")
            g.add_argument("--limits", metavar="NAME=VALUE,...",
                           help="resource limits of the group's jobs, e.g. memory=512M,cpu_seconds=600,"
                                "processes=256,file_size=1G,max_timeout=3600 (replaces the set; a"
                                " limit left out is the default); `default` resets them all")
            g.add_argument("--sandbox", metavar="bwrap|none|default",
                           help="how the group's jobs are isolated: bwrap (bubblewrap), none, or"
                                " default (each worker's JOB_SANDBOX)")
            net = g.add_mutually_exclusive_group()
            net.add_argument("--no-network", dest="network", action="store_false", default=None,
                             help="the group's jobs get no network (in the sandbox)")
            net.add_argument("--network", dest="network", action="store_true", default=None,
                             help="the group's jobs may use the network (the default)")
        if action == "reset":
            g.add_argument("--preset", required=True, choices=["default", "native", "all"],
                           help="the tag preset to reset to")
    s.set_defaults(func=cmd_group)

    for noun, func in (("script", cmd_script), ("flow", cmd_flow)):
        s = sub.add_parser(noun, parents=[common], help=f"deploy, list and show {noun}s")
        nsub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
        d = nsub.add_parser("deploy", parents=[common], help=f"deploy a new version of a {noun}")
        d.add_argument("target", metavar="WS/PATH")
        d.add_argument("file", metavar="FILE" if noun == "script" else "FLOW.json|yaml")
        if noun == "script":
            d.add_argument("--language", required=True,
                           help=f"built in: {', '.join(BUILTIN_LANGUAGES)}; or a language a"
                                " plugin adds")
            d.add_argument("--timeout", type=float, help="seconds each run may take (default: the worker's)")
        else:
            d.add_argument("--preserve-step-tags", action="store_true",
                           help="the flow tag does not override the steps' own tags")
        d.add_argument("--tag", help=f"the {noun}'s tag ($workspace and $args[...] allowed)")
        d.add_argument("--expected-version", type=int, help="refuse if it changed since this version")
        d.add_argument("--reason", help="recorded in the event log")
        d.add_argument("--json", action="store_true", help="print JSON instead of text")
        ls = nsub.add_parser("list", parents=[common], help=f"deployed {noun}s")
        ls.add_argument("--workspace", help="only this workspace")
        ls.add_argument("--json", action="store_true", help="print JSON instead of text")
        sh = nsub.add_parser("show", parents=[common], help=f"one {noun}")
        sh.add_argument("target", metavar="WS/PATH")
        sh.add_argument("--json", action="store_true", help="print JSON instead of text")
        s.set_defaults(func=func)

    s = sub.add_parser("tags", parents=[common], help="assignable custom tags and their workspace restrictions")
    tsub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = tsub.add_parser("list", parents=[common], help="assignable tags")
    t.add_argument("--json", action="store_true", help="print JSON instead of text")
    t = tsub.add_parser("add", parents=[common], help="TAG, TAG(ws1+ws2) or TAG(^ws1^ws2)")
    t.add_argument("spec")
    t.add_argument("--replace", action="store_true",
                   help="change the restriction of a tag that is already assignable (refused"
                        " without it)")
    t.add_argument("--reason", help="recorded in the event log")
    t.add_argument("--json", action="store_true", help="print JSON instead of text")
    t = tsub.add_parser("remove", parents=[common], help="make a tag no longer assignable")
    t.add_argument("tag")
    t.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=cmd_tags)

    s = sub.add_parser("token", parents=[common], help="issue, list and revoke API tokens")
    ksub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    k = ksub.add_parser("create", parents=[common], help="issue a token (printed once)")
    k.add_argument("--workspace", help="the workspace the token may submit and read jobs in")
    k.add_argument("--admin", action="store_true", help="issue another admin token instead")
    k.add_argument("--name", help="a name for listing and revoking (default: generated)")
    k.add_argument("--json", action="store_true", help="print JSON instead of text")
    k = ksub.add_parser("list", parents=[common], help="issued tokens (names, never values)")
    k.add_argument("--json", action="store_true", help="print JSON instead of text")
    k = ksub.add_parser("revoke", parents=[common], help="revoke a token by name")
    k.add_argument("name")
    k.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=cmd_token)

    s = sub.add_parser("events", parents=[common], help="the config event log (audit)")
    s.add_argument("--group", help="only events about this worker group")
    s.add_argument("--type", help="only this event type, e.g. group.tags_set")
    s.add_argument("--actor", help="only changes made with this token name")
    s.add_argument("--since", metavar="TIME|SEQ", help="from this sequence or ISO time (inclusive)")
    s.add_argument("--until", metavar="TIME|SEQ", help="up to this sequence or ISO time (inclusive)")
    s.add_argument("--limit", type=int, default=1000, help="at most this many events (default 1000)")
    s.add_argument("--follow", action="store_true", help="then stream new events live from NATS")
    s.add_argument("--json", action="store_true", help="JSON lines, one event per line")
    s.set_defaults(func=cmd_events)

    s = sub.add_parser("replay", parents=[common], help="the whole configuration at a point in time")
    s.add_argument("--at", required=True, metavar="TIME|SEQ",
                   help="an ISO time (2026-11-28T10:32:00Z) or a log sequence number")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("diff", parents=[common], help="what changed between two points (TIME|SEQ)")
    s.add_argument("a", metavar="A")
    s.add_argument("b", metavar="B", nargs="?", help="default: now")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=cmd_diff)

    s = sub.add_parser("verify", parents=[common],
                       help="check the log's chain and columns, the signed stream and every"
                            " snapshot against the log")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("jobs", parents=[common], help="recent jobs from the job history; `jobs"
                       " requeue --tag T --to T2` moves the jobs waiting on T to T2")
    s.add_argument("action", nargs="?", choices=["list", "requeue"], default="list",
                   help="list (default), or requeue: move the jobs waiting on --tag to --to"
                        " (a tag no worker serves any more; refused while one still does)")
    s.add_argument("--to", help="requeue: the tag the waiting jobs move to")
    s.add_argument("--tag", help="only jobs routed to this tag (requeue: the tag they wait on)")
    s.add_argument("--group", help="only jobs run by this worker group")
    s.add_argument("--workspace", help="only jobs of this workspace")
    s.add_argument("--status", choices=["queued", "running", "success", "failure", "cancelled"],
                   help="only jobs in this state")
    s.add_argument("--limit", type=int, default=50, help="at most this many jobs, newest first (default 50)")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=cmd_jobs)

    s = sub.add_parser("workers", parents=[common],
                       help="list live workers and how each isolates jobs (SANDBOX); warns on"
                            " stderr about any that runs jobs without a sandbox. STATE is"
                            " init-running or init-failed while a worker's init script keeps it"
                            " from taking jobs")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=cmd_workers)

    about = "print the AsyncAPI document of every NATS subject and message"
    s = sub.add_parser("asyncapi", help=about, description=about)
    s.add_argument("--output", metavar="PATH", help="write it to PATH instead of stdout")
    s.set_defaults(func=cmd_asyncapi)

    for name, helptext in (("config", "run the config service (env: NATS_URL, CONFIG_PORT, GETOPERATE_DATA_DIR)"),
                           ("router", "run the router (env: NATS_URL, ROUTER_PORT)"),
                           ("worker", "run a worker (env: NATS_URL, WORKER_GROUP, WORKER_TAGS)")):
        s = sub.add_parser(name, parents=[common], help=helptext)
        s.set_defaults(func=cmd_service)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return int(ns.func(ns) or 0)
    except CliError as exc:
        print(f"getoperate: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except InvalidInput as exc:
        print(f"getoperate: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `getoperate ... | head`: stop quietly, like other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
