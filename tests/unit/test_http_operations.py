"""One declaration per HTTP operation (services/common/openapi.py): each service's routes and its
/openapi.json come from one table, so they cannot disagree, and operation ids stay put. The apps
are built for real; the service objects behind them are only consulted by handlers, which these
tests do not call, so plain namespaces carry the few attributes the app factories read."""

from __future__ import annotations

import types
from typing import Any

import pytest
from aiohttp import web

from services.common import openapi
from services.common.http import TokenCheck
from services.common.log import Logger
from services.common.metrics import ConfigMetrics, RouterMetrics, WorkerMetrics


def _routes(app: web.Application) -> set[tuple[str, str]]:
    return {(r.method, r.resource.canonical) for r in app.router.routes()  # type: ignore[union-attr]
            if r.method != "HEAD"}


def _documented(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def _config() -> tuple[web.Application, list[openapi.Op]]:
    from services.config.app import OPS, create_app
    svc = types.SimpleNamespace(logger=Logger("t"), metrics=ConfigMetrics(lambda: 0, lambda: 0))
    return create_app(svc, TokenCheck("t")), OPS  # type: ignore[arg-type]


def _router() -> tuple[web.Application, list[openapi.Op]]:
    from services.router.app import OPS, create_app
    svc = types.SimpleNamespace(logger=Logger("t"), metrics=RouterMetrics(lambda: 0), js=None,
                                genuine=None, refresh_metrics=None)
    return create_app(svc, TokenCheck("t")), OPS  # type: ignore[arg-type]


def _worker() -> tuple[web.Application, list[openapi.Op]]:
    from services.worker.main import PROBE_OPS, probe_app
    worker = types.SimpleNamespace(metrics=WorkerMetrics())
    return probe_app(worker), PROBE_OPS  # type: ignore[arg-type]


IDS = {
    "config": {
        "get_healthz", "get_readyz", "get_metrics", "get_groups", "get_groups_name",
        "put_groups_name", "post_groups_name_reset", "delete_groups_name", "get_scripts",
        "get_scripts_ws_path", "put_scripts_ws_path", "get_flows", "get_flows_ws_path",
        "put_flows_ws_path", "get_tags", "post_tags", "delete_tags_tag", "get_tokens",
        "post_tokens", "delete_tokens_name", "get_events", "get_state", "get_diff", "get_verify",
        "get_root", "get_ui_overview"},
    "router": {"get_healthz", "get_readyz", "get_metrics", "post_jobs", "post_jobs_batch",
               "get_jobs", "get_jobs_id", "post_jobs_id_cancel", "get_workers"},
    "worker": {"get_healthz", "get_readyz", "get_metrics"},
}


@pytest.mark.parametrize("name, build", [("config", _config), ("router", _router),
                                         ("worker", _worker)])
def test_routes_and_the_document_are_the_same_operations(name: str, build: Any) -> None:
    app, ops = build()
    spec = openapi.build(name, ops)
    assert _routes(app) - {("GET", "/openapi.json")} == _documented(spec)
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    # Clients generate code from these ids: a change here is a breaking change, made on purpose.
    assert set(ids) == IDS[name]


def test_mount_refuses_an_operation_without_a_handler_and_a_handler_without_an_operation(
) -> None:
    async def h(request: web.Request) -> web.Response:
        return web.Response()

    with pytest.raises(ValueError, match="GET /a is declared without a handler"):
        openapi.mount(web.Application(), "t", [openapi.Op(method="GET", path="/a", summary="")])
    with pytest.raises(ValueError, match="undeclared operations"):
        openapi.mount(web.Application(), "t", [openapi.Op(method="GET", path="/a", summary="",
                                                          handler=h)],
                      {("GET", "/b"): h})
    with pytest.raises(ValueError, match="ids repeat"):
        openapi.mount(web.Application(), "t", [
            openapi.Op(method="GET", path="/a", summary="", handler=h),
            openapi.Op(method="GET", path="/b", summary="", handler=h, id="get_a")])


def test_operation_ids_come_from_the_method_and_path() -> None:
    assert openapi.operation_id(openapi.Op(method="GET", path="/scripts/{ws}/{path:.+}",
                                           summary="")) == "get_scripts_ws_path"
    assert openapi.operation_id(openapi.Op(method="GET", path="/", summary="")) == "get_root"
    assert openapi.operation_id(openapi.Op(method="PUT", path="/x", summary="",
                                           id="setX")) == "setX"
