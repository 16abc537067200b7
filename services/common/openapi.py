"""One declaration per HTTP operation: each service lists its operations once (`Op`: method,
path, handler, the msgspec types it decodes and encodes), and `mount` both routes them and
serves the OpenAPI 3.1 document built from the same list at `/openapi.json`. A route cannot
exist without its entry in the document, nor an entry without its route; operation ids come
from the method and path, so they do not move when the list is reordered."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

REF = "#/components/schemas/{name}"


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every 4xx answer: a code, a sentence, and the offending field when there is one."""

    error: str
    message: str
    field: str | None = None


class Op(msgspec.Struct, kw_only=True):
    """One operation: method, path (aiohttp syntax), and the types it reads and returns."""

    method: str
    path: str
    summary: str
    body: Any = None
    response: Any = None
    status: int = 200
    query: dict[str, str] = msgspec.field(default_factory=dict)
    headers: dict[str, str] = msgspec.field(default_factory=dict)  # request headers it reads
    errors: dict[int, str] = msgspec.field(default_factory=dict)  # answers beyond the 4xx set
    auth: bool = True
    handler: Any = None  # the aiohttp handler; or given to `mount` when it is built per app
    id: str = ""  # operationId; empty: operation_id() derives it from the method and path


def operation_id(op: Op) -> str:
    """`get_groups_name` for GET /groups/{name}; `get_root` for GET /."""
    path, _ = _path(op.path)
    words = [w.strip("{}") for w in path.split("/") if w]
    return op.id or f"{op.method.lower()}_{'_'.join(words) or 'root'}"


def probe_ops(readiness: str, ready: Any = None) -> list[Op]:
    """`/readyz` (handled by `ready`) and `/metrics` (its handler is built per app: give it to
    `mount`), as every service declares them; `readiness` says what ready means."""
    return [Op(method="GET", path="/readyz", summary=f"readiness: {readiness}", auth=False,
               handler=ready),
            Op(method="GET", path="/metrics", summary="Prometheus metrics (text exposition)",
               auth=False)]


def _path(path: str) -> tuple[str, list[str]]:
    """`/scripts/{ws}/{path:.+}` -> (`/scripts/{ws}/{path}`, [ws, path])."""
    names, out = [], []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1].split(":")[0]
            names.append(name)
            out.append("{" + name + "}")
        else:
            out.append(part)
    return "/".join(out), names


def build(title: str, ops: list[Op]) -> dict[str, Any]:
    types = [ErrorBody] + [t for op in ops for t in (op.body, op.response) if t is not None]
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    error_ref = schemas[0]
    paths: dict[str, Any] = {}
    for op in ops:
        path, names = _path(op.path)
        entry: dict[str, Any] = {"summary": op.summary, "operationId": operation_id(op)}
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                  for n in names]
        params += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"},
                    "description": d} for q, d in op.query.items()]
        params += [{"name": h, "in": "header", "required": False, "schema": {"type": "string"},
                    "description": d} for h, d in op.headers.items()]
        if params:
            entry["parameters"] = params
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": schemas[types.index(op.body)]}}}
        ok: dict[str, Any] = {"description": "success"}
        if op.response is not None:
            ok["content"] = {"application/json": {"schema": schemas[types.index(op.response)]}}
        errors = {str(code): {"description": text, "content": {"application/json": {"schema": error_ref}}}
                  for code, text in ((400, "invalid input (names the field)"),
                                     (401, "missing or invalid token"), (403, "not allowed"),
                                     (404, "not found"), (409, "conflict"),
                                     (413, "body over 1 MiB"), *op.errors.items())}
        entry["responses"] = {str(op.status): ok, **errors}
        if op.auth:
            entry["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def mount(app: web.Application, title: str, ops: list[Op],
          bound: dict[tuple[str, str], Any] | None = None) -> None:
    """Route every operation of `ops` to its handler (`op.handler`, or `bound[(method, path)]`
    for handlers built per app, such as /metrics over the app's registry) and serve
    `GET /openapi.json` built from the same list. An operation without a handler, a handler
    for no operation, or two operations with one id stop the service at start."""
    bound = dict(bound or {})
    ids = [operation_id(op) for op in ops]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{title}: operation ids repeat: {sorted(i for i in ids if ids.count(i) > 1)}")
    for op in ops:
        handler = bound.pop((op.method, op.path), None) or op.handler
        if handler is None:
            raise ValueError(f"{title}: {op.method} {op.path} is declared without a handler")
        if op.method == "GET":
            app.router.add_get(op.path, handler)  # and HEAD, as aiohttp does by default
        else:
            app.router.add_route(op.method, op.path, handler)
    if bound:
        raise ValueError(f"{title}: handlers for undeclared operations: {sorted(bound)}")
    spec = msgspec.json.encode(build(title, ops))

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    app.router.add_get("/openapi.json", openapi)
