"""Cold round trip of the `native` group's query languages (postgresql, mysql, graphql), one job
at a time, against the same query run by a bare process in the same run.

The servers are real and local, started the way the tests start them: PostgreSQL and MariaDB from
tests/integration/dbservers.py (Debian's postgresql and mariadb-server), the graphql-core server
of tests/integration/graphqlserver.py. The `native` group holds their URLs as static variables.

A job runs the worker's interpreter in the sandbox, which imports the driver, connects, runs the
query and returns its rows. The baseline is that same work with no platform around it: a bare
`python -c` of the worker's interpreter that imports the driver (asyncpg, asyncmy, or the
standard library's HTTP client), connects and runs the same query. The overhead is
p50(job) - p50(bare), as for the other languages (bench/languages.py); bare queries and jobs
alternate, so that a busy moment of a shared machine weighs on both.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, ContextManager

from bench.languages import _jobs, _ms, _starts
from bench.suite import LocalSuite, progress

# language -> (group variable, the job's script, a bare program doing the same: argv[1] is the URL)
# DATABASE_URL and GRAPHQL_URL are their languages' defaults; a mysql job names its variable.
QUERIES: dict[str, tuple[str, str, str]] = {
    "postgresql": ("DATABASE_URL", "-- $1 x (int)\nSELECT $1 AS x", """
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1])
    print(await conn.fetch("SELECT $1::int4 AS x", 1))
    await conn.close()
asyncio.run(main())
"""),
    "mysql": ("MYSQL_URL", "-- ? x\nSELECT ? AS x", """
import asyncio, sys, urllib.parse, asyncmy
async def main():
    u = urllib.parse.urlsplit(sys.argv[1])
    conn = await asyncmy.connect(host=u.hostname, port=u.port, user=u.username,
                                 password=u.password, db=u.path.lstrip("/"))
    async with conn.cursor() as cur:
        await cur.execute("SELECT %s AS x", (1,))
        print(await cur.fetchall())
    conn.close()
asyncio.run(main())
"""),
    "graphql": ("GRAPHQL_URL", "query Q($x: Int!) { books(before: $x) { title } }", """
import json, sys, urllib.request
body = json.dumps({"query": "query Q($x: Int!) { books(before: $x) { title } }",
                   "variables": {"x": 1}}).encode()
req = urllib.request.Request(sys.argv[1], data=body, headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as resp:
    print(json.loads(resp.read())["data"])
"""),
}


def _servers() -> dict[str, Callable[[], ContextManager[str]]]:
    """language -> a context manager yielding its server's URL, for the servers installed here."""
    from tests.integration.dbservers import mariadb_server, mariadbd, postgres_bin, postgres_server
    from tests.integration.graphqlserver import graphql_server

    @contextlib.contextmanager
    def postgres() -> Any:
        with postgres_server() as urls:
            yield urls["postgres"]

    @contextlib.contextmanager
    def graphql() -> Any:
        with graphql_server() as url:
            yield f"{url}/graphql"

    found: dict[str, Callable[[], ContextManager[str]]] = {"graphql": graphql}
    if postgres_bin() is not None:
        found["postgresql"] = postgres
    if mariadbd() is not None:
        found["mysql"] = mariadb_server
    return found


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 20 if quick else 100
    servers = _servers()
    for language in QUERIES:
        if language not in servers:
            progress(f"querylanguages: {language}: no server here (.ci/run installs it), skipped")
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        progress(f"querylanguages: starting {', '.join(servers)} servers")
        urls = {language: stack.enter_context(start()) for language, start in servers.items()}
        suite = stack.enter_context(LocalSuite())
        changed = suite.http("PUT", f"{suite.config_url}/groups/native",
                             {"env": {QUERIES[lang][0]: url for lang, url in urls.items()}})
        suite.wait_workers(lambda ws: any(
            w["group"] == "native" and w["state"] == "ready"
            and w["config_version"] >= changed["seq"] for w in ws))
        for language in urls:
            variable, code, bare_code = QUERIES[language]
            args = {"x": 1} if language != "mysql" else {"x": 1, "database": variable}
            job = {"workspace": "bench", "language": language, "code": code, "args": args}
            _jobs(suite, [job] * 3)  # warm-up: the page cache, the servers' first connections
            progress(f"querylanguages: {language}: {n} bare queries and {n} jobs, alternating")
            bares: list[float] = []
            jobs: list[float] = []
            for _ in range(n):  # alternating: a busy moment of the machine costs both sides
                bares += _starts([sys.executable, "-c", bare_code, urls[language]], 1)
                jobs += _jobs(suite, [job])
            bare, cold = _ms(bares), _ms(jobs)
            rows.append({
                "name": f"cold {language} job round trip, one at a time ({n} jobs): p50",
                "value": cold, "unit": "ms", "baseline": bare,
                "baseline_name": "p50 of the same query by a bare `python -c` (import the"
                                 " driver, connect, query) against the same server",
                "ratio": round(cold / max(bare, 0.01), 2),
                "target": "overhead <= 15 ms", "met": cold - bare <= 15,
                "bound": "the sandbox (bwrap, cgroup, seccomp) and NATS round trips in series;"
                         " the worker's Python start, the driver's import and a new connection"
                         " per job",
            })
    return rows
