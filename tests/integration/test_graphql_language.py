"""graphql jobs against a real GraphQL server the module starts: graphql-core executing a small
schema behind http.server, on a free loopback port, in a thread.

The seeded `native` group (tag graphql) holds the endpoint as GRAPHQL_URL with its token as
GRAPHQL_TOKEN; BROKEN_URL points at a path that answers 500 without JSON.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from graphql import (
    GraphQLArgument,
    GraphQLField,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    graphql_sync,
)

from tests.integration.conftest import Suite, running_suite
from tests.integration.test_routing_e2e import ready

TOKEN = "tok-123"
BOOKS = [{"title": "Dune", "year": 1965}, {"title": "Solaris", "year": 1961}]


def _boom(*_: Any) -> None:
    raise ValueError("the library is closed")


BOOK = GraphQLObjectType("Book", {"title": GraphQLField(GraphQLString),
                                  "year": GraphQLField(GraphQLInt)})
SCHEMA = GraphQLSchema(GraphQLObjectType("Query", {
    "books": GraphQLField(
        GraphQLList(BOOK), args={"before": GraphQLArgument(GraphQLNonNull(GraphQLInt))},
        resolve=lambda _, info, before: [b for b in BOOKS if b["year"] < before]),
    "whoami": GraphQLField(GraphQLString,
                           resolve=lambda _, info: info.context["authorization"]),
    "closed": GraphQLField(GraphQLString, resolve=_boom),
}))


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if self.path == "/broken":
            self._answer(500, b"upstream exploded", "text/plain")
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        result = graphql_sync(SCHEMA, body["query"], variable_values=body.get("variables"),
                              context_value={"authorization": self.headers.get("Authorization")})
        status = 200 if result.data is not None or not result.errors else 400
        self._answer(status, json.dumps(result.formatted).encode(), "application/json")

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def suite(endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("suite")) as s:
        changed = s.api.set_group("native", env={
            "GRAPHQL_URL": f"{endpoint}/graphql", "GRAPHQL_TOKEN": TOKEN,
            "BROKEN_URL": f"{endpoint}/broken"})
        s.api.wait_workers(ready("native", version=changed["seq"]), timeout=60)
        yield s


def run(suite: Suite, code: str, **args: Any) -> Any:
    return suite.api.job(suite.api.submit(code, language="graphql", args=args)["id"])


def test_a_query_with_variables_returns_the_data(suite: Suite) -> None:
    query = "query Old($before: Int!) { books(before: $before) { title year } }"
    view = run(suite, query, before=1963)
    assert view["status"] == "success", view
    assert view["result"] == {"books": [{"title": "Solaris", "year": 1961}]}
    who = run(suite, "{ whoami }")
    assert who["result"] == {"whoami": f"Bearer {TOKEN}"}, who


def test_errors_from_the_server_fail_the_job_with_their_messages(suite: Suite) -> None:
    closed = run(suite, "{ closed }")
    assert closed["status"] == "failure", closed
    assert closed["error"] == "GraphQL error: the library is closed (at closed)"
    invalid = run(suite, "{ books(before: 2000) { isbn } }")
    assert invalid["status"] == "failure", invalid
    assert invalid["error"] == ("GraphQL error: Cannot query field 'isbn' on type 'Book'."
                                " (line 1, column 25)"), invalid
    broken = run(suite, "{ books(before: 1) { title } }", endpoint="BROKEN_URL")
    assert broken["status"] == "failure", broken
    assert broken["error"].startswith("the GraphQL endpoint of BROKEN_URL (http://127.0.0.1:")
    assert "answered HTTP 500 without a GraphQL response: 'upstream exploded'" in broken["error"]


def test_a_missing_endpoint_variable_is_named(suite: Suite) -> None:
    view = run(suite, "{ whoami }", endpoint="NOPE_URL")
    assert view["status"] == "failure", view
    assert view["error"].startswith("the group variable NOPE_URL is not set (group 'native')")
    bad = run(suite, "{ whoami }", endpoint="not a variable")
    assert bad["status"] == "failure" and "must name a group variable" in bad["error"], bad
