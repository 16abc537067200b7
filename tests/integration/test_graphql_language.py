"""graphql jobs against a real GraphQL server the module starts (tests/integration/graphqlserver.py:
graphql-core behind http.server, on a free loopback port).

The seeded `native` group (tag graphql) holds the endpoint as GRAPHQL_URL with its token as
GRAPHQL_TOKEN, set with `getoperate group set native --env ...`; BROKEN_URL points at a path that
answers 500 without JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import Suite, running_suite
from tests.integration.graphqlserver import graphql_server
from tests.integration.harness import cli_json, ready, run_view

TOKEN = "tok-123"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with graphql_server() as url:
        yield url


@pytest.fixture(scope="module")
def suite(endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("suite")) as s:
        changed = cli_json("group", "set", "native", "--env", f"GRAPHQL_URL={endpoint}/graphql",
                           "--env", f"GRAPHQL_TOKEN={TOKEN}", "--env",
                           f"BROKEN_URL={endpoint}/broken", cwd=s.root)
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


def test_a_query_through_getoperate_run(suite: Suite) -> None:
    """`getoperate run --language graphql`: the --arg values are the query's variables (JSON
    when they parse, so `before=1966` is an Int); a GraphQL error exits 1 with its message."""
    query = "query Old($before: Int!) { books(before: $before) { title } }"
    view = run_view("--language", "graphql", "--code", query, "--arg", "before=1966",
                    cwd=suite.root)
    assert (view["status"], view["tag"], view["group"]) == ("success", "graphql", "native"), view
    assert view["result"] == {"books": [{"title": "Dune"}, {"title": "Solaris"}]}
    closed = run_view("--language", "graphql", "--code", "{ closed }", cwd=suite.root)
    assert closed["status"] == "failure", closed
    assert closed["error"] == "GraphQL error: the library is closed (at closed)"


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
