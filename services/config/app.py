"""The config service's HTTP API: read and change worker groups, read the event log."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from services.common.http import (
    MAX_BODY_BYTES, TokenCheck, error_middleware, json_response, query_int, read_body,
)
from services.config.service import ConfigService
from shared import state as st
from shared.errors import NotFound
from shared.events import Recorded

SERVICE_KEY = web.AppKey("service", ConfigService)
TOKENS_KEY = web.AppKey("tokens", TokenCheck)


class GroupUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`PUT /groups/{name}`: fields left out are unchanged; the group is created if missing."""

    tags: list[str] | None = None
    init_script: str | None | msgspec.UnsetType = msgspec.UNSET
    expected_version: int | None = None
    reason: str | None = None


class GroupReset(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /groups/{name}/reset`: the product's reset buttons."""

    preset: str
    expected_version: int | None = None
    reason: str | None = None


def _write_answer(records: list[Recorded], published: bool, group: Any) -> web.Response:
    return json_response(
        {
            "group": group,
            "events": [{"seq": r.seq, "id": r.id, "type": r.event.__struct_config__.tag} for r in records],
            "seq": records[-1].seq if records else None,
            "published": published,
        }
    )


async def list_groups(request: web.Request) -> web.Response:
    request.app[TOKENS_KEY].actor(request)
    svc = request.app[SERVICE_KEY]
    return json_response(sorted(svc.state.groups.values(), key=lambda g: g.name))


async def get_group(request: web.Request) -> web.Response:
    request.app[TOKENS_KEY].actor(request)
    name = request.match_info["name"]
    group = request.app[SERVICE_KEY].state.groups.get(name)
    if group is None:
        raise NotFound(f"group {name!r} does not exist", field="group")
    return json_response(group)


async def put_group(request: web.Request) -> web.Response:
    actor = request.app[TOKENS_KEY].actor(request)
    svc = request.app[SERVICE_KEY]
    name = request.match_info["name"]
    body = await read_body(request, GroupUpdate)
    kwargs: dict[str, object] = {}
    if body.tags is not None:
        kwargs["tags"] = body.tags
    if body.init_script is not msgspec.UNSET:
        kwargs["init_script"] = body.init_script
    records, published = await svc.execute_and_publish(
        st.set_group, name, actor=actor, reason=body.reason,
        expected_version=body.expected_version, **kwargs,
    )
    return _write_answer(records, published, svc.state.groups.get(name))


async def reset_group(request: web.Request) -> web.Response:
    actor = request.app[TOKENS_KEY].actor(request)
    svc = request.app[SERVICE_KEY]
    name = request.match_info["name"]
    body = await read_body(request, GroupReset)
    records, published = await svc.execute_and_publish(
        st.reset_group, name, body.preset, actor=actor, reason=body.reason,
        expected_version=body.expected_version,
    )
    return _write_answer(records, published, svc.state.groups.get(name))


async def delete_group(request: web.Request) -> web.Response:
    actor = request.app[TOKENS_KEY].actor(request)
    svc = request.app[SERVICE_KEY]
    records, published = await svc.execute_and_publish(
        st.delete_group, request.match_info["name"], actor=actor,
        reason=request.query.get("reason"), expected_version=query_int(request, "expected_version"),
    )
    return _write_answer(records, published, None)


async def list_events(request: web.Request) -> web.Response:
    request.app[TOKENS_KEY].actor(request)
    since = query_int(request, "since", 0) or 0
    limit = min(query_int(request, "limit", 1000) or 1000, 10_000)
    return json_response(list(request.app[SERVICE_KEY].log.records(since, limit)))


async def get_state(request: web.Request) -> web.Response:
    request.app[TOKENS_KEY].actor(request)
    return json_response(request.app[SERVICE_KEY].state)


async def health(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    return json_response(
        {"ok": True, "seq": svc.state.seq, "published_seq": svc.outbox.published_seq,
         "nats_connected": svc.nc.is_connected}
    )


def create_app(service: ConfigService, tokens: TokenCheck) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(service.logger)], client_max_size=MAX_BODY_BYTES
    )
    app[SERVICE_KEY] = service
    app[TOKENS_KEY] = tokens
    app.router.add_get("/healthz", health)
    app.router.add_get("/groups", list_groups)
    app.router.add_get("/groups/{name}", get_group)
    app.router.add_put("/groups/{name}", put_group)
    app.router.add_post("/groups/{name}/reset", reset_group)
    app.router.add_delete("/groups/{name}", delete_group)
    app.router.add_get("/events", list_events)
    app.router.add_get("/state", get_state)
    return app
