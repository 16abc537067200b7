"""The pure-enough parts the services share (services/common): log lines that carry a traceback,
background tasks that are kept and watched, the HTTP error middleware, bearer-token checks.
The middleware is exercised through aiohttp's own server on loopback, not a mocked request."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.common import runtime, tasks
from services.common.http import TokenCheck, error_middleware, hash_token
from services.common.log import Logger
from shared.errors import Forbidden, InvalidInput, Unauthorized
from shared.state import ApiToken, ConfigState


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _explode() -> None:
    raise ValueError("boom")


def test_an_exception_line_carries_the_traceback() -> None:
    out = io.StringIO()
    try:
        _explode()
    except ValueError as exc:
        Logger("t", out, json_lines=True).exception("it_failed", exc, job_id="j1")
    (line,) = _lines(out)
    assert line["level"] == "error" and line["event"] == "it_failed" and line["job_id"] == "j1"
    assert line["error"] == "ValueError('boom')"
    assert "in _explode" in line["traceback"] and line["traceback"].endswith("ValueError: boom")


async def test_a_failed_background_task_is_logged_and_a_vital_one_stops_the_service() -> None:
    out = io.StringIO()
    logger = Logger("t", out, json_lines=True)
    stop = runtime.stop_on_signals()
    try:
        async def fails() -> None:
            await asyncio.sleep(0)
            _explode()

        minor = tasks.background(fails(), name="minor", logger=logger)
        await asyncio.gather(minor, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run on the next turn
        assert not stop.is_set() and runtime._EXIT_CODE[0] == 0
        vital = tasks.background(fails(), name="loop", logger=logger, vital=True)
        await asyncio.gather(vital, return_exceptions=True)
        await asyncio.wait_for(stop.wait(), 5)
        assert runtime._EXIT_CODE[0] == 1
        failed = [line for line in _lines(out) if line["event"] == "task_failed"]
        assert [(f["task"], f["vital"]) for f in failed] == [("minor", False), ("loop", True)]
        assert all("in _explode" in f["traceback"] for f in failed)
    finally:
        runtime._EXIT_CODE[0] = 0
        tasks._ON_VITAL_FAILURE.clear()


async def test_a_background_task_is_held_until_it_ends_and_a_cancel_is_quiet() -> None:
    out = io.StringIO()
    before = tasks.running()
    release = asyncio.Event()
    held = tasks.background(release.wait(), name="held", logger=Logger("t", out))
    assert tasks.running() == before + 1
    release.set()
    await held
    await asyncio.sleep(0)
    cancelled = tasks.background(asyncio.sleep(60), name="c", logger=Logger("t", out),
                                 vital=True)
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    await asyncio.sleep(0)
    assert tasks.running() == before and out.getvalue() == ""


@pytest.fixture
async def client() -> Any:
    out = io.StringIO()

    async def invalid(request: web.Request) -> web.Response:
        raise InvalidInput("tags must be a list", field="tags")

    async def timeout(request: web.Request) -> web.Response:
        raise asyncio.TimeoutError()

    async def bug(request: web.Request) -> web.Response:
        _explode()
        raise AssertionError("unreachable")

    app = web.Application(middlewares=[error_middleware(Logger("t", out, json_lines=True))])
    app.router.add_get("/invalid", invalid)
    app.router.add_get("/timeout", timeout)
    app.router.add_get("/bug", bug)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        c.log = out
        yield c


async def test_a_typed_error_is_a_4xx_naming_the_field(client: Any) -> None:
    answer = await client.get("/invalid")
    assert answer.status == 400
    assert await answer.json() == {"error": "invalid", "message": "tags must be a list",
                                   "field": "tags"}


async def test_nats_not_answering_is_a_503_to_retry(client: Any) -> None:
    answer = await client.get("/timeout")
    assert answer.status == 503 and (await answer.json())["error"] == "unavailable"


async def test_a_bug_is_a_500_that_says_nothing_and_a_log_line_with_its_traceback(
        client: Any) -> None:
    answer = await client.get("/bug")
    assert answer.status == 500
    assert await answer.json() == {"error": "internal", "message": "internal error"}
    (line,) = [line for line in _lines(client.log) if line["event"] == "http_unhandled"]
    assert line["path"] == "/bug" and "in _explode" in line["traceback"]


async def test_an_unknown_route_is_a_json_404(client: Any) -> None:
    answer = await client.get("/nowhere")
    assert answer.status == 404 and (await answer.json())["error"] == "http"


def _state(*issued: ApiToken) -> ConfigState:
    return ConfigState(seq=len(issued), tokens={t.name: t for t in issued})


def test_tokens_admin_issued_revoked_and_malformed() -> None:
    ws = ApiToken(name="ci", workspace="team", token_hash=hash_token("gow_ci"), created_seq=1)
    boss = ApiToken(name="ops", token_hash=hash_token("gow_ops"), created_seq=2)
    state = [_state(ws, boss)]
    check = TokenCheck("goa_root", lambda: state[0])
    root = check.identify("Bearer goa_root")
    assert root.admin and root.name == "admin" and check.token_live(root)
    who = check.identify("Bearer gow_ci")
    assert (who.name, who.workspace, who.admin) == ("ci", "team", False) and check.token_live(who)
    assert check.identify("Bearer gow_ops").admin
    for header in (None, "", "Bearer ", "Basic goa_root", "Bearer goa_roo", "Bearer gow_cí"):
        with pytest.raises(Unauthorized):
            check.identify(header)
    state[0] = _state(boss)  # `ci` revoked: the index follows the state's sequence
    with pytest.raises(Unauthorized):
        check.identify("Bearer gow_ci")
    assert not check.token_live(who)
    state[0] = ConfigState(seq=3, tokens={"ci": ApiToken(name="ci", workspace="team",
                                                         token_hash=hash_token("gow_new"),
                                                         created_seq=3)})
    assert not check.token_live(who)  # the same name issued again is another token


async def test_the_admin_gate_names_the_actor_and_refuses_workspace_tokens() -> None:
    ws = ApiToken(name="ci", workspace="team", token_hash=hash_token("gow_ci"), created_seq=1)
    check = TokenCheck("goa_root", lambda: _state(ws))

    async def change(request: web.Request) -> web.Response:
        return web.json_response({"actor": check.admin_actor(request)})

    app = web.Application(middlewares=[error_middleware(Logger("t", io.StringIO()))])
    app.router.add_post("/change", change)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        ok = await c.post("/change", headers={"Authorization": "Bearer goa_root"})
        assert ok.status == 200 and await ok.json() == {"actor": "admin"}
        refused = await c.post("/change", headers={"Authorization": "Bearer gow_ci"})
        assert refused.status == Forbidden.status and "workspace token" in (
            await refused.json())["message"]
        anonymous = await c.post("/change")
        assert anonymous.status == 401
