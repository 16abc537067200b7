"""Job limits and sandbox settings of worker groups through the real services: set through the CLI
and HTTP (events with actor and reason, `group show`, refusals naming the field), the router's
max_timeout for every token over HTTP and NATS, and how `getoperate workers` shows isolation."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import pytest

from cli.client import CliError
from tests.integration.conftest import Suite
from tests.integration.harness import FakeWorkers, cli, cli_json, fake_status

GiB, MiB = 1024**3, 1024**2
DEFAULTS = {"memory": 2 * GiB, "cpu_seconds": 3600, "processes": 512, "file_size": GiB,
            "max_timeout": 86400.0}


def http_error(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(CliError) as info:
        fn(*args, **kwargs)
    return info.value.message


def group_events(s: Suite, group: str) -> list[dict[str, Any]]:
    return s.api.call("GET", "config", f"/events?group={group}")  # type: ignore[no-any-return]


def one_line_error(proc: Any) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("getoperate: error: ")
    return proc.stderr  # type: ignore[no-any-return]


def test_limits_sandbox_and_network_through_the_cli(suite: Suite) -> None:
    root = suite.root
    out = cli("group", "set", "lim-cli", "--tags", "t-lim-cli", "--limits",
              "memory=512M,cpu_seconds=600,processes=256,file_size=1G,max_timeout=3600",
              "--sandbox", "bwrap", "--no-network", "--reason", "untrusted code", cwd=root)
    assert out.returncode == 0, out.stderr
    assert "group.limits_set, group.sandbox_set" in out.stdout

    shown = cli_json("group", "show", "lim-cli", cwd=root)
    set_limits = {"memory": 512 * MiB, "cpu_seconds": 600, "processes": 256, "file_size": GiB,
                  "max_timeout": 3600.0}
    assert shown["limits"] == set_limits and shown["effective_limits"] == set_limits
    assert (shown["sandbox"], shown["network"]) == ("bwrap", False)
    text = cli("group", "show", "lim-cli", cwd=root, check=True).stdout.splitlines()
    assert "sandbox      bwrap" in text and "network      off" in text
    assert ("limits       (set: memory=512M,cpu_seconds=600,processes=256,file_size=1G,"
            "max_timeout=3600)") in text
    assert [line.split() for line in text if line.startswith("  ")] == [
        ["memory", "512M", "set"], ["cpu_seconds", "600", "s", "set"], ["processes", "256", "set"],
        ["file_size", "1G", "set"], ["max_timeout", "3600", "s", "set"]]

    # Only what is given changes: --network keeps the sandbox; the same again writes nothing.
    out = cli("group", "set", "lim-cli", "--network", cwd=root, check=True)
    assert "group.sandbox_set" in out.stdout and "limits" not in out.stdout
    assert cli("group", "set", "lim-cli", "--network", cwd=root, check=True).stdout.strip() == (
        "group lim-cli: no change")
    shown = cli_json("group", "show", "lim-cli", cwd=root)
    assert (shown["sandbox"], shown["network"]) == ("bwrap", True)

    # --limits replaces the set: what it leaves out is back at the default.
    cli("group", "set", "lim-cli", "--limits", "max_timeout=7200", cwd=root, check=True)
    shown = cli_json("group", "show", "lim-cli", cwd=root)
    assert shown["limits"] == {"max_timeout": 7200.0}
    assert shown["effective_limits"] == {**DEFAULTS, "max_timeout": 7200.0}
    text = cli("group", "show", "lim-cli", cwd=root, check=True).stdout
    assert "  memory       2G        default" in text

    # Another admin token is recorded as the actor.
    ops = suite.api.call("POST", "config", "/tokens", {"admin": True, "name": "lim-ops"})
    cli("group", "set", "lim-cli", "--limits", "default", "--sandbox", "default", "--reason",
        "back to defaults", cwd=root, env={"GETOPERATE_TOKEN": ops["token"]}, check=True)
    shown = cli_json("group", "show", "lim-cli", cwd=root)
    assert (shown["limits"], shown["effective_limits"], shown["sandbox"]) == ({}, DEFAULTS, None)
    assert "limits       (all default)" in cli("group", "show", "lim-cli", cwd=root).stdout

    events = [(e["actor"], e["reason"], e["event"]["type"],
               {k: v for k, v in e["event"].items() if k in ("limits", "sandbox", "network")})
              for e in group_events(suite, "lim-cli")]
    assert events == [
        ("admin", "untrusted code", "group.created", {}),
        ("admin", "untrusted code", "group.tags_set", {}),
        ("admin", "untrusted code", "group.limits_set", {"limits": set_limits}),
        ("admin", "untrusted code", "group.sandbox_set", {"sandbox": "bwrap", "network": False}),
        ("admin", None, "group.sandbox_set", {"sandbox": "bwrap", "network": True}),
        ("admin", None, "group.limits_set", {"limits": {"max_timeout": 7200.0}}),
        ("lim-ops", "back to defaults", "group.limits_set", {"limits": {}}),
        ("lim-ops", "back to defaults", "group.sandbox_set", {"sandbox": None, "network": True}),
    ]
    log = cli("events", "--group", "lim-cli", cwd=root, check=True).stdout
    assert ("group lim-cli limits = memory=512M,cpu_seconds=600,processes=256,file_size=1G,"
            "max_timeout=3600 (others default)  (reason: untrusted code)") in log
    assert "group lim-cli sandbox = bwrap, network off" in log
    assert "group lim-cli limits reset to the defaults" in log
    assert "group lim-cli sandbox = worker default, network on  (reason: back to defaults)" in log

    # Bad input: one line on stderr, exit 2, nothing written.
    version = shown["version"]
    for args, needle in (
        (["--limits", "memory=1"], "limits.memory must be at least"),
        (["--limits", "memory=lots"], "limits.memory must be a whole number"),
        (["--limits", "processes=4.9"], "limits.processes must be a whole number"),
        (["--limits", "bogus=1"], "limits.bogus is not a limit; known: memory"),
        (["--limits", "memory"], "must look like name=value"),
        (["--limits", "cpu_seconds=" + "9" * 400], "limits.cpu_seconds must be at most"),
        (["--sandbox", "docker"], "sandbox must be one of bwrap, none, default"),
    ):
        err = one_line_error(cli("group", "set", "lim-cli", *args, cwd=root))
        assert needle in err, (args, err)
    assert cli_json("group", "show", "lim-cli", cwd=root)["version"] == version
    both = cli("group", "set", "lim-cli", "--network", "--no-network", cwd=root)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_limits_sandbox_and_network_through_http(suite: Suite) -> None:
    put = suite.api.set_group
    answer = put("lim-http", tags=["t-lim-http"], limits={"memory": "1G", "processes": 64,
                 "max_timeout": 600}, sandbox="none", network=False, reason="trusted batch")
    assert [e["type"] for e in answer["events"]] == [
        "group.created", "group.tags_set", "group.limits_set", "group.sandbox_set"]
    group = answer["group"]
    assert group["limits"] == {"memory": GiB, "processes": 64, "max_timeout": 600.0}
    assert group["effective_limits"] == {**DEFAULTS, "memory": GiB, "processes": 64,
                                         "max_timeout": 600.0}
    assert (group["sandbox"], group["network"]) == ("none", False)
    assert suite.api.call("GET", "config", "/groups/lim-http") == group
    listed = {g["name"]: g for g in suite.api.call("GET", "config", "/groups")}
    assert listed["lim-http"] == group and listed["default"]["effective_limits"] == DEFAULTS

    # Unchanged values write nothing; only the changed part does.
    same = put("lim-http", limits={"memory": GiB, "processes": "64", "max_timeout": 600.0},
               sandbox="none", network=False)
    assert same["events"] == [] and same["seq"] is None
    changed = put("lim-http", sandbox="bwrap", expected_version=group["version"])
    assert [e["type"] for e in changed["events"]] == ["group.sandbox_set"]
    assert (changed["group"]["sandbox"], changed["group"]["network"]) == ("bwrap", False)
    version = changed["group"]["version"]

    # Refusals name the field and write nothing, even when other fields were fine.
    for body, field, needle in (
        ({"tags": ["other"], "limits": {"memory": "5"}}, "limits.memory", "at least 16777216"),
        ({"limits": {"memory": True}}, "limits.memory", "got `bool`"),
        ({"limits": {"max_timeout": "soon"}}, "limits.max_timeout", "a number of seconds"),
        ({"limits": {"max_timeout": 0.5}}, "limits.max_timeout", "at least 1.0"),
        ({"limits": {"cpu_seconds": 1.5}}, "limits.cpu_seconds", "got `float`"),
        ({"limits": {"bogus": 1}}, "limits.bogus", "not a limit; known: memory, cpu_seconds"),
        ({"limits": ["memory=1G"]}, "limits", "Expected `object | null`"),
        ({"sandbox": "docker"}, "sandbox", "Invalid enum value 'docker'"),
        ({"network": None}, "network", "Expected `bool`"),
        ({"network": "no"}, "network", "Expected `bool`"),
    ):
        status, err = raw_put(suite, "lim-http", body)
        assert status == 400 and err["field"] == field and needle in err["message"], (body, err)
    conflict = http_error(put, "lim-http", network=True, expected_version=version - 1)
    assert "someone changed it first" in conflict
    assert suite.api.call("GET", "config", "/groups/lim-http")["version"] == version

    # null resets the limits; "default" (like null) gives the sandbox back to the workers.
    reset = put("lim-http", limits=None, sandbox="default", reason="defaults")
    assert [e["type"] for e in reset["events"]] == ["group.limits_set", "group.sandbox_set"]
    assert (reset["group"]["limits"], reset["group"]["sandbox"], reset["group"]["network"]) == (
        {}, None, False)

    # A workspace token may not change them.
    token = suite.api.call("POST", "config", "/tokens", {"workspace": "ws-lim-http"})["token"]
    status, err = raw_put(suite, "lim-http", {"limits": {"memory": "8G"}}, token=token)
    assert status == 403 and "admin token" in err["message"]

    summaries = [(e["actor"], e["reason"], e["summary"]) for e in suite.api.call(
        "GET", "config", "/events?group=lim-http&summary=1")]
    assert summaries[2:] == [
        ("admin", "trusted batch",
         "group lim-http limits = memory=1G,processes=64,max_timeout=600 (others default)"),
        ("admin", "trusted batch", "group lim-http sandbox = none, network off"),
        ("admin", None, "group lim-http sandbox = bwrap, network off"),
        ("admin", "defaults", "group lim-http limits reset to the defaults"),
        ("admin", "defaults", "group lim-http sandbox = worker default, network off"),
    ]
    diff = suite.api.call("GET", "config", f"/diff?from={version}&to={reset['seq']}")["changes"]
    assert diff == ["~ group lim-http: limits memory=1G,processes=64,max_timeout=600 -> default",
                    "~ group lim-http: sandbox bwrap -> worker default"]


def http_as(suite: Suite, method: str, service: str, path: str, body: dict[str, Any],
            token: str | None = None) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of a request with `token` (default: the admin token), 4xx included."""
    from cli.client import Endpoints
    from tests.integration.harness import http_json

    ep = Endpoints(suite.root / ".getoperate")
    base = ep.config_url if service == "config" else ep.router_url
    return http_json(method, f"{base}{path}", token or ep.token(), body)  # type: ignore[no-any-return]


def raw_put(suite: Suite, group: str, body: dict[str, Any],
            token: str | None = None) -> tuple[int, dict[str, Any]]:
    return http_as(suite, "PUT", "config", f"/groups/{group}", body, token)


def submit_as(suite: Suite, token: str | None, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return http_as(suite, "POST", "router", "/jobs", body, token)


async def nats_submit(url: str, bodies: list[dict[str, Any]], token: str
                      ) -> list[dict[str, Any]]:
    nc = await nats.connect(url)
    try:
        return [json.loads((await nc.request("go.router.submit", json.dumps(b).encode(),
                                             timeout=10,
                                             headers={"Authorization": f"Bearer {token}"})).data)
                for b in bodies]
    finally:
        await nc.close()


def test_max_timeout_refuses_longer_jobs_for_every_token(suite: Suite) -> None:
    s = suite
    s.api.set_group("lim-gpu", tags=["t-lim-gpu"], limits={"max_timeout": 3600})
    s.api.call("POST", "config", "/tags", {"spec": "t-lim-gpu"})
    ws_token = s.api.call("POST", "config", "/tokens", {"workspace": "ws-lim"})["token"]
    job = {"language": "bash", "code": "echo hi", "tag": "t-lim-gpu"}
    refused = ("timeout 7200 s is above max_timeout 3600 s of group lim-gpu"
               " (serving tag t-lim-gpu)")
    for token in (None, ws_token):  # admin, then a workspace token: the limit binds both
        status, err = submit_as(s, token, {**job, "timeout": 7200})
        assert (status, err) == (400, {"error": "invalid", "message": refused, "field": "timeout"})
        status, err = submit_as(s, token, {**job, "timeout": 3600.5})
        assert status == 400 and err["field"] == "timeout" and "3600.5 s" in err["message"]
        for ok in (3600, 60):
            status, answer = submit_as(s, token, {**job, "timeout": ok})
            assert status == 201 and answer["tag"] == "t-lim-gpu", answer
        status, answer = submit_as(s, token, job)  # no timeout: the worker's own, which it caps
        assert status == 201

    # The strictest group serving the tag wins, whatever the order.
    s.api.set_group("lim-gpu2", tags=["t-lim-gpu"], limits={"max_timeout": 1800})
    status, err = submit_as(s, None, {**job, "timeout": 2000})
    assert status == 400 and err["message"] == (
        "timeout 2000 s is above max_timeout 1800 s of group lim-gpu2 (serving tag t-lim-gpu)")
    assert submit_as(s, None, {**job, "timeout": 1800})[0] == 201

    # A deployed script's timeout counts when the job gives none; the job's own wins over it.
    s.api.call("PUT", "config", "/scripts/ws-lim/f/train",
               {"language": "bash", "content": "echo train", "tag": "t-lim-gpu", "timeout": 7200})
    status, err = submit_as(s, ws_token, {"path": "f/train"})
    assert status == 400 and err["field"] == "timeout" and "timeout 7200 s" in err["message"]
    assert submit_as(s, ws_token, {"path": "f/train", "timeout": 600})[0] == 201
    # A flow is refused at once when a step would be: its script's timeout, on its tag.
    s.api.call("PUT", "config", "/flows/ws-lim/f/pipeline",
               {"steps": [{"name": "prep", "language": "bash", "content": "echo"},
                          {"name": "train", "script": "f/train"}]})
    status, err = submit_as(s, ws_token, {"path": "f/pipeline"})
    assert status == 400 and err["field"] == "timeout"
    assert err["message"] == ("timeout 7200 s of step 2 (train) is above max_timeout 1800 s of"
                              " group lim-gpu2 (serving tag t-lim-gpu)")

    # The CLI: one line on stderr, exit 2.
    err = one_line_error(cli("run", "--language", "bash", "--code", "echo", "--tag", "t-lim-gpu",
                             "--job-timeout", "7200", cwd=s.root))
    assert "timeout 7200 s is above max_timeout 1800 s of group lim-gpu2" in err

    # The NATS path answers the same error, to an admin token as to a workspace token.
    answers = asyncio.run(nats_submit(s.nats_url, [{**job, "timeout": 7200},
                                                   {**job, "timeout": 1800}], s.admin_token))
    assert answers[0] == {"error": "invalid", "field": "timeout", "message": (
        "timeout 7200 s is above max_timeout 1800 s of group lim-gpu2 (serving tag t-lim-gpu)")}
    assert answers[1]["tag"] == "t-lim-gpu" and len(answers[1]["id"]) == 32
    answers = asyncio.run(nats_submit(s.nats_url, [{**job, "timeout": 7200}], ws_token))
    assert answers[0]["field"] == "timeout" and "7200 s" in answers[0]["message"]

    # Tags no group serves, and groups without their own limit, have the default (86400 s).
    s.api.set_group("lim-gpu2", limits=None)
    s.api.set_group("lim-gpu", limits={"max_timeout": 86400})
    assert submit_as(s, None, {**job, "timeout": 7200})[0] == 201
    assert submit_as(s, None, {"language": "bash", "code": "echo", "tag": "t-lim-nobody",
                               "timeout": 86400})[0] == 201


def test_workers_show_their_sandbox_and_warn_about_none(suite: Suite) -> None:
    bare = fake_status("fake-bare-1", sandbox="none",
                       sandbox_note="bwrap cannot create a user namespace here")
    boxed = fake_status("fake-boxed-1", sandbox="bwrap", network=False)
    with FakeWorkers(suite.nats_url, bare, boxed):
        suite.api.wait_workers(lambda ws: {"fake-bare-1", "fake-boxed-1"} <= {w["id"] for w in ws})
        out = cli("workers", cwd=suite.root, check=True)
        header = out.stdout.splitlines()[0].split()
        assert "SANDBOX" in header
        rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
        assert " NONE " in rows["fake-bare-1"] and " bwrap/no-net " in rows["fake-boxed-1"]
        warnings = [line for line in out.stderr.splitlines() if "WITHOUT a sandbox" in line]
        assert len(warnings) == 1 and warnings[0].startswith("getoperate: WARNING: ")
        assert "fake-bare-1 (bwrap cannot create a user namespace here)" in warnings[0]
        assert "fake-boxed-1" not in warnings[0]

        listed = {w["id"]: w for w in cli_json("workers", cwd=suite.root)}
        assert {k: listed["fake-bare-1"][k] for k in ("sandbox", "network", "sandbox_note")} == {
            "sandbox": "none", "network": True,
            "sandbox_note": "bwrap cannot create a user namespace here"}
        assert (listed["fake-boxed-1"]["sandbox"], listed["fake-boxed-1"]["network"]) == (
            "bwrap", False)
