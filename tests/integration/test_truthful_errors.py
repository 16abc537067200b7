"""Errors that tell the truth (issue 14, point 6): no 5xx for any input, the field named."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

from cli.client import Endpoints
from tests.integration.conftest import Suite
from tests.integration.harness import cli


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
