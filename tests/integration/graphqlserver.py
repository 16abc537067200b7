"""A real GraphQL server for tests and benchmarks: graphql-core executing a small schema behind
http.server, on a free loopback port, in a thread.

`POST /graphql` answers queries (`books(before:)`, `whoami` echoing the Authorization header,
`closed` raising an error); `POST /broken` answers 500 without JSON.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


@contextlib.contextmanager
def graphql_server() -> Iterator[str]:
    """The server, running; yields its base URL (`http://127.0.0.1:PORT`)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
