"""OpenAPI 3.1 documents built from the msgspec types each service really decodes and encodes,
so the spec cannot drift from the code. Each service serves its own at `/openapi.json`."""

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


def probe_ops(readiness: str) -> list[Op]:
    """`/readyz` and `/metrics`, as every service declares them; `readiness` says what ready means."""
    return [Op(method="GET", path="/readyz", summary=f"readiness: {readiness}", auth=False),
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
    for op, i in zip(ops, range(len(ops))):
        path, names = _path(op.path)
        entry: dict[str, Any] = {"summary": op.summary, "operationId": f"{op.method}_{i}"}
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


def serve(app: web.Application, title: str, ops: list[Op]) -> None:
    """Add `GET /openapi.json` to an app."""
    spec = msgspec.json.encode(build(title, ops))

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    app.router.add_get("/openapi.json", openapi)
