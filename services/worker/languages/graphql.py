"""graphql: the job's code is a GraphQL document, its arguments the variables; the result is
the response's `data`, and its `errors` fail the job (docs/languages.md).

The request is made in the sandbox by the worker's own interpreter running graphql_wrapper.py
(the standard library's HTTP client: nothing to install). The endpoint is a group variable, so
a group's admin decides which services its jobs may query, and with which token.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

from services.worker.languages.base import Context, Launch, PrepareFailed, args_json
from shared.jobs import Job

ENDPOINT_ARG = "endpoint"
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@functools.cache
def wrapper_source() -> str:
    return (Path(__file__).parent / "graphql_wrapper.py").read_text()


class GraphQL:
    name = "graphql"
    how_to_get = "python3 (the worker's own interpreter)"

    def find_runtime(self) -> str | None:
        return sys.executable

    async def launch(self, job: Job, ctx: Context) -> Launch:
        variable = job.args.get(ENDPOINT_ARG, "GRAPHQL_URL")
        if not isinstance(variable, str) or not _VARIABLE.match(variable):
            raise PrepareFailed(f"the argument {ENDPOINT_ARG!r} must name a group variable"
                                f" (like GRAPHQL_URL), got {variable!r}")
        if not job.code.strip():
            raise PrepareFailed("the GraphQL document is empty")
        return Launch(argv=[ctx.runtime or sys.executable, "-c", wrapper_source()],
                      files={"query.graphql": job.code.encode(), "args.json": args_json(job)})
