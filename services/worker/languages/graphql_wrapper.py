"""Runs a graphql job inside the job sandbox (python -c this file): one POST, its `data` back.

It reads `query.graphql` and `args.json`, POSTs `{"query", "variables"}` to the URL in the group
variable the `endpoint` argument names (GRAPHQL_URL by default), with `Authorization` from the
matching token variable when it is set (GRAPHQL_URL -> GRAPHQL_TOKEN), and writes `{"ok",
"result"|"error"}` as JSON to the inherited fd in the last argument. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

ENDPOINT_ARG = "endpoint"
DEFAULT_VARIABLE = "GRAPHQL_URL"
EXCERPT = 300


class JobError(Exception):
    """Raised for a failure whose message is the whole story (no traceback in the log)."""


def token_variable(endpoint_variable: str) -> str:
    """GRAPHQL_URL -> GRAPHQL_TOKEN, GITHUB_URL -> GITHUB_TOKEN, OTHER -> OTHER_TOKEN: each
    endpoint has its own token, so no job can send one service's token to another."""
    stem = endpoint_variable.removesuffix("_URL")
    return f"{stem}_TOKEN"


def authorization(token: str) -> str:
    """A bare token is a bearer token; a value with a scheme (`Basic ...`) is used as is."""
    return token if " " in token else f"Bearer {token}"


def error_text(errors: Any) -> str:
    """The messages of a GraphQL `errors` list, with their paths and locations."""
    if not isinstance(errors, list):
        return str(errors)
    parts = []
    for e in errors:
        if not isinstance(e, dict):
            parts.append(str(e))
            continue
        text = str(e.get("message", e))
        if e.get("path"):
            text += f" (at {'.'.join(map(str, e['path']))})"
        elif e.get("locations"):
            loc = e["locations"][0]
            text += f" (line {loc.get('line')}, column {loc.get('column')})"
        parts.append(text)
    return "; ".join(parts)


def request(query: str, args: dict[str, Any]) -> Any:
    variable = args.pop(ENDPOINT_ARG, DEFAULT_VARIABLE)
    url = os.environ.get(variable, "").strip()
    if not url:
        group = os.environ.get("GO_WORKER_GROUP") or "<group>"
        raise JobError(f"the group variable {variable} is not set (group {group!r}): set it with"
                       f" `getoperate group set {group} --env {variable}=https://host/graphql`,"
                       f" or name another variable with the `{ENDPOINT_ARG}` argument")
    try:
        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}" \
                f"{parts.path}"
    except ValueError as exc:
        raise JobError(f"{variable} is not a usable URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JobError(f"{variable} is not an http(s) URL (scheme {parts.scheme!r})")
    req = urllib.request.Request(
        url, method="POST", data=json.dumps({"query": query, "variables": args}).encode(),
        headers={"Content-Type": "application/json",
                 "Accept": "application/graphql-response+json, application/json"})
    token = os.environ.get(token_variable(variable), "").strip()
    if token:  # never sent on to wherever a redirect points
        req.add_unredirected_header("Authorization", authorization(token))
    try:
        with urllib.request.urlopen(req) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise JobError(f"could not reach the GraphQL endpoint of {variable} ({where}):"
                       f" {reason}") from exc
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        text = body[:EXCERPT].decode("utf-8", errors="replace")
        raise JobError(f"the GraphQL endpoint of {variable} ({where}) answered HTTP {status}"
                       f" without a GraphQL response: {text!r}")
    if answer.get("errors"):
        raise JobError(f"GraphQL error: {error_text(answer['errors'])}")
    if status >= 400:
        raise JobError(f"the GraphQL endpoint of {variable} ({where}) answered HTTP {status}")
    return answer.get("data")


def main() -> int:
    out = os.fdopen(int(sys.argv[-1]), "w")
    try:
        with open("query.graphql") as fh:
            query = fh.read()
        with open("args.json") as fh:
            args = json.load(fh)
        reply = {"ok": True, "result": request(query, args)}
    except JobError as exc:
        print(exc, file=sys.stderr)
        reply = {"ok": False, "error": str(exc)}
    except BaseException as exc:
        traceback.print_exc()
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out.write(json.dumps(reply))
    out.close()
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
