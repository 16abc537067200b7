"""Errors that tell the truth (issue 14, point 6): no 5xx for any input, the field named."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cli.client import Endpoints
from services.common.natsserver import NatsServer, free_port
from tests.integration.conftest import Suite
from tests.integration.harness import Proc, cli


def _request(s: Suite, service: str, method: str, path: str, body: bytes | None = None,
             authorization: bytes | None = None) -> tuple[int, dict[str, object]]:
    ep = Endpoints(s.root / ".getoperate")
    url = urlsplit(ep.config_url if service == "config" else ep.router_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest(method, path)
        conn.putheader("Authorization", authorization or f"Bearer {s.admin_token}".encode())
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or b"")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def test_json_nested_thousands_deep_is_a_400(suite: Suite) -> None:
    deep = b'{"language": "bash", "code": "true", "args": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    status, body = _request(suite, "router", "POST", "/jobs", deep)
    assert status == 400 and "nested too deeply" in str(body["message"]), body
    status, body = _request(suite, "config", "PUT", "/groups/deep",
                            b'{"tags": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert status == 400, body


def test_a_token_with_bytes_that_are_not_ascii_is_a_401(suite: Suite) -> None:
    for service, path in (("router", "/workers"), ("config", "/groups")):
        status, body = _request(suite, service, "GET", path,
                                authorization=b"Bearer gow_\xe9\xff\xfe")
        assert status == 401 and body["error"] == "unauthorized", (service, body)


def test_a_limit_out_of_range_is_refused_with_its_name(suite: Suite) -> None:
    for service, path in (("router", "/jobs?limit=-5"), ("router", "/jobs?limit=0"),
                          ("config", "/events?limit=-5"), ("config", "/events?limit=10001")):
        status, body = _request(suite, service, "GET", path)
        assert status == 400 and body["field"] == "limit", (path, body)
    assert _request(suite, "router", "GET", "/jobs?limit=1")[0] == 200


def test_a_zero_job_timeout_is_refused_not_dropped(suite: Suite) -> None:
    out = cli("run", "--language", "bash", "--code", "echo x", "--job-timeout", "0",
              cwd=suite.root)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1 and "timeout" in lines[0], out.stderr


@pytest.mark.parametrize("args, said", [
    (["run", "--language", "bash", "--code", "echo x", "--wait", "--timeout", "-1"],
     "--timeout must be a number of seconds above 0, got -1"),
    (["run", "--language", "bash", "--code", "echo x", "--timeout", "5"],
     "--timeout is how long --wait waits: give --wait too (the job's own limit is --job-timeout)"),
    (["job", "some-id", "--timeout", "5"], "--timeout is how long --wait waits: give --wait too"),
    (["run", "--language", "bash", "--code", "echo x", "--retry-for", "-2"],
     "--retry-for must be 0 or more seconds, got -2"),
    (["run", "--language", "bash", "--code", "echo x", "--tagz", "x"],  # one line, no usage
     "unrecognized arguments: --tagz (`getoperate run --help` shows the options)"),
])
def test_wait_options_that_mean_nothing_are_refused_before_anything_is_sent(
        suite: Suite, args: list[str], said: str) -> None:
    before = len(suite.api.call("GET", "router", "/jobs?limit=1000"))
    out = cli(*args, cwd=suite.root)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and lines == [f"getoperate: error: {said}"], out.stderr
    assert len(suite.api.call("GET", "router", "/jobs?limit=1000")) == before  # nothing queued


def test_workers_while_nats_is_down_is_a_503_not_an_empty_list(tmp_path: Path) -> None:
    """With NATS away the router cannot know who is alive: `GET /workers` says so (503) and
    the CLI prints that, instead of `200 []` and "(no live workers)"."""
    nats_server = NatsServer(tmp_path / "nats").start()
    data = tmp_path / "data"
    cport, rport = free_port(), free_port()
    while rport == cport:
        rport = free_port()
    env = {"NATS_URL": nats_server.url, "GETOPERATE_DATA_DIR": str(data),
           "CONFIG_PORT": str(cport), "ROUTER_PORT": str(rport),
           "GETOPERATE_ADMIN_TOKEN": "errors-token"}
    procs = [Proc(["config"], cwd=tmp_path, env=env, name="config")]
    try:
        procs[0].wait_for('"http_listening"', timeout=60)
        procs.append(Proc(["router"], cwd=tmp_path, env=env, name="router"))
        procs[1].wait_for('"http_listening"', timeout=60)
        (data / "endpoints.json").write_text(json.dumps({
            "config_url": f"http://127.0.0.1:{cport}", "router_url": f"http://127.0.0.1:{rport}"}))

        def workers() -> tuple[int, str]:
            req = urllib.request.Request(f"http://127.0.0.1:{rport}/workers",
                                         headers={"Authorization": "Bearer errors-token"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        assert workers()[0] == 200
        nats_server.stop()
        deadline = time.monotonic() + 20
        while (answer := workers())[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer[0] == 503 and "not connected to NATS" in answer[1], answer
        out = cli("workers", cwd=tmp_path, env={"GETOPERATE_DATA_DIR": str(data),
                                                "GETOPERATE_ADMIN_TOKEN": "errors-token"})
        assert out.returncode != 0 and "NATS" in out.stderr, (out.stdout, out.stderr)
        assert "no live workers" not in out.stdout
        # A submission names NATS too, never "cannot reach the router", and queued nothing.
        run = cli("run", "--language", "bash", "--code", "echo x", "--retry-for", "0", cwd=tmp_path,
                  env={"GETOPERATE_DATA_DIR": str(data), "GETOPERATE_ADMIN_TOKEN": "errors-token"})
        assert run.returncode == 1 and "not connected to NATS" in run.stderr, run.stderr
        assert "cannot reach" not in run.stderr and "nothing was queued" in run.stderr
    finally:
        for proc in reversed(procs):
            proc.stop()
        nats_server.stop()
