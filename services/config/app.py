"""The config service's HTTP API: read and change worker groups, read the event log."""

from __future__ import annotations

import re
import secrets
from typing import Any, Literal

import msgspec
from aiohttp import web

from services.common import openapi
from services.common.http import (
    MAX_BODY_BYTES,
    Handler,
    TokenCheck,
    error_middleware,
    hash_token,
    json_response,
    query_int,
    query_range,
    read_body,
)
from services.common.metrics import metrics_handler, readiness
from services.common.openapi import Op
from services.config.dashboard import DASHBOARD_OPS, add_dashboard
from services.config.keys import SERVICE_KEY, TOKENS_KEY
from services.config.service import ConfigService
from services.config.unserved import stranded
from services.config.verify import Report
from shared import isolation
from shared import state as st
from shared.errors import InvalidInput, NotFound
from shared.events import FlowStep, Recorded
from shared.history import Point, diff_states, summarize
from shared.limits import FIELDS
from shared.subjects import group_subject
from shared.tags import format_tag_spec


class LimitsUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`limits` of `PUT /groups/{name}`: the group's complete limits; a limit left out or null
    is the default (docs/configuration.md). Sizes are bytes or a number with K, M, G or T ("512M");
    times are seconds."""

    memory: int | str | None = None
    cpu_seconds: int | str | None = None
    processes: int | str | None = None
    file_size: int | str | None = None
    max_timeout: float | str | None = None


class GroupUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`PUT /groups/{name}`: fields left out are unchanged; the group is created if missing."""

    tags: list[str] | None = None
    init_script: str | None | msgspec.UnsetType = msgspec.UNSET
    dedicated: list[str] | None = None
    priorities: dict[str, int] | None = None
    env: dict[str, str] | None = None
    # null resets every limit to its default; an object replaces the whole set
    limits: LimitsUpdate | None | msgspec.UnsetType = msgspec.UNSET
    # "default" or null: the worker's JOB_SANDBOX
    sandbox: Literal["bwrap", "none", "default"] | None | msgspec.UnsetType = msgspec.UNSET
    network: bool | msgspec.UnsetType = msgspec.UNSET
    expected_version: int | None = None
    reason: str | None = None


class ScriptDeploy(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`PUT /scripts/{workspace}/{path}`: deploy a new version."""

    language: str
    content: str
    tag: str | None = None
    timeout: float | None = None
    expected_version: int | None = None
    reason: str | None = None


class FlowStepIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A step as a request gives it: unknown (misspelled) fields are refused here, while the
    stored event type stays lenient for forward compatibility."""

    name: str | None = None
    script: str | None = None
    language: str | None = None
    content: str | None = None
    tag: str | None = None


class FlowDeploy(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`PUT /flows/{workspace}/{path}`: deploy a new version."""

    steps: list[FlowStepIn]
    tag: str | None = None
    preserve_step_tags: bool = False
    expected_version: int | None = None
    reason: str | None = None


class TagAdd(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /tags`: `gpu`, `gpu(ws1+ws2)` or `gpu(^ws1^ws2)`. Changing the restriction of a tag
    that is already assignable needs `replace: true` (else 409)."""

    spec: str
    reason: str | None = None
    replace: bool = False


class GroupReset(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /groups/{name}/reset`: the product's reset buttons."""

    preset: str
    expected_version: int | None = None
    reason: str | None = None


def _write_answer(records: list[Recorded], published: bool,
                  group: st.GroupConfig | None, warnings: list[str] | None = None
                  ) -> web.Response:
    return json_response(
        {
            "group": isolation.group_view(group) if group is not None else None,
            "events": [{"seq": r.seq, "id": r.id, "type": r.event.__struct_config__.tag} for r in records],
            "seq": records[-1].seq if records else None,
            "published": published,
            "warnings": warnings or [],
        }
    )


async def _group_write(request: web.Request, name: str | None, decide: Any, *args: Any,
                       **kwargs: Any) -> web.Response:
    """Apply a group change; its answer warns about tags it leaves with waiting jobs and no
    group to serve them (services/config/unserved.py)."""
    svc = request.app[SERVICE_KEY]
    before = svc.state
    records, published = await svc.execute_and_publish(decide, *args, **kwargs)
    warnings = await stranded(svc.js, before, svc.state) if records else []
    return _write_answer(records, published, svc.state.groups.get(name) if name else None,
                         warnings)


async def list_groups(request: web.Request) -> web.Response:
    request.app[TOKENS_KEY].admin_actor(request)
    svc = request.app[SERVICE_KEY]
    return json_response([isolation.group_view(g)
                          for g in sorted(svc.state.groups.values(), key=lambda g: g.name)])


async def get_group(request: web.Request) -> web.Response:
    request.app[TOKENS_KEY].admin_actor(request)
    name = request.match_info["name"]
    group = request.app[SERVICE_KEY].state.groups.get(name)
    if group is None:
        raise NotFound(f"group {name!r} does not exist", field="group")
    return json_response(isolation.group_view(group))


async def put_group(request: web.Request) -> web.Response:
    actor = request.app[TOKENS_KEY].admin_actor(request)
    name = request.match_info["name"]
    body = await _read_group_update(request)
    kwargs: dict[str, object] = {}
    if body.tags is not None:
        kwargs["tags"] = body.tags
    if body.init_script is not msgspec.UNSET:
        kwargs["init_script"] = body.init_script
    if body.dedicated is not None:
        kwargs["dedicated"] = body.dedicated
    if body.priorities is not None:
        kwargs["priorities"] = body.priorities
    if body.env is not None:
        kwargs["env"] = body.env
    if body.limits is not msgspec.UNSET:
        kwargs["limits"] = None if body.limits is None else msgspec.structs.asdict(body.limits)
    if body.sandbox is not msgspec.UNSET:
        kwargs["sandbox"] = body.sandbox
    if body.network is not msgspec.UNSET:
        kwargs["network"] = body.network
    return await _group_write(request, name, isolation.set_group, name, actor=actor,
                              reason=body.reason, expected_version=body.expected_version,
                              **kwargs)


_UNKNOWN_LIMIT = re.compile(r"unknown field `([^`]*)` - at `\$\.limits`")


async def _read_group_update(request: web.Request) -> GroupUpdate:
    """The body; an unknown limit is named as `limits.<name>` with the known ones listed, like
    every other bad limit (msgspec would blame the whole `limits` object)."""
    try:
        return await read_body(request, GroupUpdate)
    except InvalidInput as exc:
        unknown = _UNKNOWN_LIMIT.search(exc.message)
        if exc.field != "limits" or unknown is None:
            raise
        name = unknown.group(1)
        raise InvalidInput(f"limits.{name} is not a limit; known: {', '.join(FIELDS)}",
                           field=f"limits.{name}") from None


async def reset_group(request: web.Request) -> web.Response:
    actor = request.app[TOKENS_KEY].admin_actor(request)
    name = request.match_info["name"]
    body = await read_body(request, GroupReset)
    return await _group_write(request, name, st.reset_group, name, body.preset, actor=actor,
                              reason=body.reason, expected_version=body.expected_version)


async def delete_group(request: web.Request) -> web.Response:
    actor = request.app[TOKENS_KEY].admin_actor(request)
    return await _group_write(
        request, None, st.delete_group, request.match_info["name"], actor=actor,
        reason=request.query.get("reason"), expected_version=query_int(request, "expected_version"),
    )


def _deployed_answer(records: list[Recorded], published: bool, item: Any) -> web.Response:
    return json_response({"item": item, "seq": records[-1].seq if records else None,
                          "published": published})


def _filter_ws(request: web.Request, items: Any) -> list[Any]:
    """Admins see every workspace (or `?workspace=`); a workspace token only its own."""
    who = request.app[TOKENS_KEY].identity(request)
    ws = request.query.get("workspace") if who.admin else who.workspace
    return sorted((i for i in items if ws is None or i.workspace == ws),
                  key=lambda i: (i.workspace, i.path))


def _readable(request: web.Request, ws: str) -> bool:
    who = request.app[TOKENS_KEY].identity(request)
    return who.admin or who.workspace == ws


def _deployed_reads(kind: str) -> tuple[Handler, Handler]:
    """`GET /{kind}s` and `GET /{kind}s/{ws}/{path}`, the same for scripts and flows."""

    def items(request: web.Request) -> dict[str, Any]:
        state = request.app[SERVICE_KEY].state
        return state.scripts if kind == "script" else state.flows  # type: ignore[return-value]

    async def list_items(request: web.Request) -> web.Response:
        return json_response(_filter_ws(request, items(request).values()))

    async def get_item(request: web.Request) -> web.Response:
        ws, path = request.match_info["ws"], request.match_info["path"]
        item = items(request).get(st.key(ws, path))
        if not _readable(request, ws) or item is None:
            raise NotFound(f"no {kind} {path!r} is deployed in workspace {ws!r}", field="path")
        return json_response(item)

    return list_items, get_item


list_scripts, get_script = _deployed_reads("script")
list_flows, get_flow = _deployed_reads("flow")


async def put_script(request: web.Request) -> web.Response:
    actor = request.app[TOKENS_KEY].admin_actor(request)
    svc = request.app[SERVICE_KEY]
    ws, path = request.match_info["ws"], request.match_info["path"]
    body = await read_body(request, ScriptDeploy)
    records, published = await svc.execute_and_publish(
        st.deploy_script, ws, path, actor=actor, reason=body.reason, language=body.language,
        content=body.content, tag=body.tag, expected_version=body.expected_version,
        timeout=body.timeout,
    )
    return _deployed_answer(records, published, svc.state.scripts.get(st.key(ws, path)))


async def put_flow(request: web.Request) -> web.Response:
    actor = request.app[TOKENS_KEY].admin_actor(request)
    svc = request.app[SERVICE_KEY]
    ws, path = request.match_info["ws"], request.match_info["path"]
    body = await read_body(request, FlowDeploy)
    records, published = await svc.execute_and_publish(
        st.deploy_flow, ws, path, actor=actor, reason=body.reason,
        steps=[FlowStep(**msgspec.structs.asdict(step)) for step in body.steps], tag=body.tag,
        preserve_step_tags=body.preserve_step_tags, expected_version=body.expected_version,
    )
    return _deployed_answer(records, published, svc.state.flows.get(st.key(ws, path)))


def _tag_view(t: Any) -> dict[str, Any]:
    return {"tag": t.tag, "only": list(t.only), "exclude": list(t.exclude),
            "spec": format_tag_spec(t.tag, t.only, t.exclude),
            "restricted": bool(t.only or t.exclude)}


async def list_tags(request: web.Request) -> web.Response:
    """The assignable tags; a workspace token sees only those open to it, without the lists of
    workspaces (they name other workspaces): `restricted` says there is one."""
    who = request.app[TOKENS_KEY].identity(request)
    state = request.app[SERVICE_KEY].state
    tags = [t for _, t in sorted(state.assignable.items())]
    if who.admin:
        return json_response([_tag_view(t) for t in tags])
    assert who.workspace is not None
    return json_response([
        {"tag": t.tag, "only": [], "exclude": [], "spec": t.tag,
         "restricted": bool(t.only or t.exclude)}
        for t in tags if t.allows(who.workspace)])


async def add_tag(request: web.Request) -> web.Response:
    actor = request.app[TOKENS_KEY].admin_actor(request)
    svc = request.app[SERVICE_KEY]
    body = await read_body(request, TagAdd)
    records, published = await svc.execute_and_publish(
        st.set_assignable_tag, body.spec, body.replace, actor=actor, reason=body.reason)
    tag = body.spec.split("(")[0].strip()
    item = svc.state.assignable.get(tag)
    return _deployed_answer(records, published, _tag_view(item) if item else None)


async def remove_tag(request: web.Request) -> web.Response:
    actor = request.app[TOKENS_KEY].admin_actor(request)
    svc = request.app[SERVICE_KEY]
    records, published = await svc.execute_and_publish(
        st.remove_assignable_tag, request.match_info["tag"], actor=actor,
        reason=request.query.get("reason"))
    return _deployed_answer(records, published, None)


class TokenCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /tokens`: a workspace token (or an admin one with `admin: true`)."""

    workspace: str | None = None
    name: str | None = None
    admin: bool = False
    reason: str | None = None


async def create_token(request: web.Request) -> web.Response:
    actor = request.app[TOKENS_KEY].admin_actor(request)
    svc = request.app[SERVICE_KEY]
    body = await read_body(request, TokenCreate)
    if body.admin == (body.workspace is not None):
        raise InvalidInput("give exactly one of workspace (a workspace token) or admin: true",
                           field="workspace")
    value = ("goa_" if body.admin else "gow_") + secrets.token_urlsafe(32)
    name = body.name or f"{body.workspace or 'admin'}-{secrets.token_hex(3)}"
    records, published = await svc.execute_and_publish(
        st.create_token, name, actor=actor, reason=body.reason, workspace=body.workspace,
        token_hash=hash_token(value))
    # The only time the value is shown: it is not stored anywhere but in the caller's hands.
    return json_response({"name": name, "workspace": body.workspace, "token": value,
                          "seq": records[-1].seq, "published": published}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    request.app[TOKENS_KEY].admin_actor(request)
    tokens = request.app[SERVICE_KEY].state.tokens.values()
    return json_response([{"name": t.name, "workspace": t.workspace, "created_seq": t.created_seq}
                          for t in sorted(tokens, key=lambda t: t.name)])


async def revoke_token(request: web.Request) -> web.Response:
    actor = request.app[TOKENS_KEY].admin_actor(request)
    svc = request.app[SERVICE_KEY]
    records, published = await svc.execute_and_publish(
        st.revoke_token, request.match_info["name"], actor=actor, reason=request.query.get("reason"))
    return json_response({"seq": records[-1].seq, "published": published})


def _point(request: web.Request, name: str) -> Point | None:
    raw = request.query.get(name)
    return Point.parse(raw, field=name) if raw else None


async def list_events(request: web.Request) -> web.Response:
    """The log, filtered: since/until (seq or ISO time), type, actor, group; oldest first."""
    request.app[TOKENS_KEY].admin_actor(request)
    svc = request.app[SERVICE_KEY]
    since, until = _point(request, "since"), _point(request, "until")
    group = request.query.get("group")
    limit = query_range(request, "limit", 1000, 1, 10_000)
    records = await svc.log.call(
        svc.log.query, since_seq=(since.seq - 1) if since and since.seq else 0,
        since_time=since.time if since else None,
        until_seq=until.seq if until else None, until_time=until.time if until else None,
        type=request.query.get("type"), actor=request.query.get("actor"),
        subject=group_subject(group) if group else None, limit=limit,
    )
    if request.query.get("summary") in ("1", "true"):
        return json_response([{"seq": r.seq, "time": r.time, "actor": r.actor, "reason": r.reason,
                               "type": r.event.__struct_config__.tag, "summary": summarize(r.event)}
                              for r in records])
    return json_response(records)


async def get_state(request: web.Request) -> web.Response:
    """The whole configuration now, or `?at=` a sequence or an ISO time."""
    request.app[TOKENS_KEY].admin_actor(request)
    svc = request.app[SERVICE_KEY]
    at = _point(request, "at")
    return json_response(await svc.state_at(at, "at") if at else svc.state)


async def get_diff(request: web.Request) -> web.Response:
    """What changed between two points (`from`, `to`; `to` defaults to now)."""
    request.app[TOKENS_KEY].admin_actor(request)
    svc = request.app[SERVICE_KEY]
    start = _point(request, "from")
    if start is None:
        raise InvalidInput("give from=SEQ|TIME (and optionally to=SEQ|TIME)", field="from")
    end = _point(request, "to")
    a = await svc.state_at(start, "from")
    b = await svc.state_at(end, "to") if end else svc.state
    return json_response({"from_seq": a.seq, "to_seq": b.seq, "changes": diff_states(a, b)})


async def get_verify(request: web.Request) -> web.Response:
    request.app[TOKENS_KEY].admin_actor(request)
    return json_response(await request.app[SERVICE_KEY].verify())


async def health(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    return json_response(
        {"ok": True, "seq": svc.state.seq, "published_seq": svc.outbox.published_seq,
         "nats_connected": svc.nc.is_connected}
    )


async def ready(request: web.Request) -> web.Response:
    """Ready once the log is loaded. NATS is reported, not required: while it is away, writes are
    stored in the log and the outbox publishes them when it is back (docs/configuration.md)."""
    svc = request.app[SERVICE_KEY]
    return readiness({"log_loaded": svc.ready},
                     {"nats_connected": svc.nc.is_connected,
                      "unpublished": max(svc.state.seq - svc.outbox.published_seq, 0)})


EVENT_QUERY = {"since": "sequence or ISO time (inclusive)", "until": "sequence or ISO time (inclusive)",
               "type": "event type", "actor": "token name", "group": "group name",
               "limit": "1..10000", "summary": "1 for one-line summaries"}
OPS = [
    Op(method="GET", path="/healthz", summary="liveness and log position", auth=False,
       handler=health),
    *openapi.probe_ops("log loaded (NATS state reported)", ready),
    Op(method="GET", path="/groups", summary="all worker groups",
       response=list[isolation.GroupView], handler=list_groups),
    Op(method="GET", path="/groups/{name}", summary="one group", response=isolation.GroupView,
       handler=get_group),
    Op(method="PUT", path="/groups/{name}", summary="create or change a group", body=GroupUpdate,
       handler=put_group),
    Op(method="POST", path="/groups/{name}/reset", summary="reset tags to a preset", body=GroupReset,
       handler=reset_group),
    Op(method="DELETE", path="/groups/{name}", summary="delete a group",
       query={"expected_version": "refuse if changed", "reason": "recorded in the log"},
       handler=delete_group),
    Op(method="GET", path="/scripts", summary="deployed scripts", response=list[st.Script],
       query={"workspace": "only this workspace"}, handler=list_scripts),
    Op(method="GET", path="/scripts/{ws}/{path:.+}", summary="one script", response=st.Script,
       handler=get_script),
    Op(method="PUT", path="/scripts/{ws}/{path:.+}", summary="deploy a script version",
       body=ScriptDeploy, handler=put_script),
    Op(method="GET", path="/flows", summary="deployed flows", response=list[st.Flow],
       query={"workspace": "only this workspace"}, handler=list_flows),
    Op(method="GET", path="/flows/{ws}/{path:.+}", summary="one flow", response=st.Flow,
       handler=get_flow),
    Op(method="PUT", path="/flows/{ws}/{path:.+}", summary="deploy a flow version", body=FlowDeploy,
       handler=put_flow),
    Op(method="GET", path="/tags", summary="assignable tags", handler=list_tags),
    Op(method="POST", path="/tags", summary="add an assignable tag", body=TagAdd, handler=add_tag),
    Op(method="DELETE", path="/tags/{tag}", summary="remove an assignable tag", handler=remove_tag),
    Op(method="GET", path="/tokens", summary="issued tokens (names only)", handler=list_tokens),
    Op(method="POST", path="/tokens", summary="issue a token", body=TokenCreate, status=201,
       handler=create_token),
    Op(method="DELETE", path="/tokens/{name}", summary="revoke a token", handler=revoke_token),
    Op(method="GET", path="/events", summary="the event log, filtered", query=EVENT_QUERY,
       handler=list_events),
    Op(method="GET", path="/state", summary="configuration now or at a point",
       response=st.ConfigState, query={"at": "sequence or ISO time"}, handler=get_state),
    Op(method="GET", path="/diff", summary="changes between two points",
       query={"from": "sequence or ISO time", "to": "sequence or ISO time"}, handler=get_diff),
    Op(method="GET", path="/verify", response=Report,
       summary="hash chain, columns, signed stream and snapshots check", handler=get_verify),
    *DASHBOARD_OPS,
]


def create_app(service: ConfigService, tokens: TokenCheck) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(service.logger)], client_max_size=MAX_BODY_BYTES
    )
    app[SERVICE_KEY] = service
    app[TOKENS_KEY] = tokens
    add_dashboard(app)  # the Workers page's live-workers view, stopped with the app
    openapi.mount(app, "getOperate config service", OPS, {
        ("GET", "/metrics"): metrics_handler(service.metrics.registry)})
    return app
