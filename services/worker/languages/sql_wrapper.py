"""Runs a postgresql or mysql job's statements inside the job sandbox (python -c this file).

It reads `plan.json` (what services/worker/languages/sqlscript.py bound on the worker), connects
with the URL in the group variable the plan names, runs the statements (several: in one
transaction) and writes `{"ok", "result"|"error"}` as JSON to the inherited fd in the last
argument. The standard library and the driver only: the worker's packages are not in the sandbox.
The result is the last statement's: its rows as a list of objects, or what it changed.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import decimal
import json
import math
import os
import sys
import traceback
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

EXAMPLES = {"postgresql": "postgresql://user:password@host:5432/dbname",
            "mysql": "mysql://user:password@host:3306/dbname"}
MYSQL_JSON = 245  # the column type of MySQL's JSON (MariaDB's JSON is text)
MYSQL_UNREACHABLE = (2002, 2003, 2005, 2006, 2013)  # client errors: no server answered


class JobError(Exception):
    """Raised for a failure whose message is the whole story (no traceback in the log)."""


def jsonable(value: Any) -> Any:
    """A column's value as JSON: numerics exact as strings, times in ISO 8601, intervals in
    seconds, bytes in base64, UUIDs as strings; composites, arrays and JSON columns nested."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, dict) or hasattr(value, "items"):  # an asyncpg Record (a composite)
        return {str(k): jsonable(v) for k, v in value.items()}
    if hasattr(value, "lower_inc"):  # an asyncpg Range
        return {"lower": jsonable(value.lower), "upper": jsonable(value.upper),
                "lower_inc": value.lower_inc, "upper_inc": value.upper_inc,
                "empty": value.isempty}
    return str(value)  # addresses, geometric types, bit strings: their text form


def connection_url(variable: str, dialect: str) -> str:
    url = os.environ.get(variable, "").strip()
    if not url:
        group = os.environ.get("GO_WORKER_GROUP") or "<group>"
        raise JobError(f"the group variable {variable} is not set (group {group!r}): set it"
                       f" with `getoperate group set {group} --env"
                       f" {variable}={EXAMPLES[dialect]}`, or name another variable with the"
                       " `database` argument")
    return url


def where(url: str) -> str:
    """host:port of a URL, never its password (for messages)."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    except ValueError:
        return "?"


# --- postgresql (asyncpg) -------------------------------------------------------------------

def to_postgres(value: Any, pgtype: Any, name: str) -> Any:
    """A JSON argument as the Python value asyncpg encodes for the parameter's type."""
    if value is None:
        return None
    kind, tname = pgtype.kind, pgtype.name
    try:
        if kind == "array" and isinstance(value, list):
            element = _Element(tname.removesuffix("[]").lstrip("_"))
            return [to_postgres(v, element, name) for v in value]
        if tname in ("json", "jsonb"):
            return value  # the codec set on the connection dumps it
        if tname in ("int2", "int4", "int8", "oid"):
            return int(value)
        if tname in ("float4", "float8"):
            return float(value)
        if tname == "numeric":
            return decimal.Decimal(str(value))
        if tname == "bool":
            return _bool(value)
        if tname == "date":
            return datetime.date.fromisoformat(value) if isinstance(value, str) else value
        if tname in ("timestamp", "timestamptz"):
            stamp = datetime.datetime.fromisoformat(value) if isinstance(value, str) else value
            if tname == "timestamptz" and stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=datetime.UTC)
            return stamp
        if tname in ("time", "timetz"):
            return datetime.time.fromisoformat(value) if isinstance(value, str) else value
        if tname == "interval":
            return datetime.timedelta(seconds=float(value))
        if tname == "uuid":
            return uuid.UUID(str(value))
        if tname == "bytea":
            return base64.b64decode(value, validate=True)
        if tname in ("text", "varchar", "bpchar", "name", "char", "unknown"):
            return value if isinstance(value, str) else json.dumps(value)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise JobError(f"the argument {name!r} ({value!r}) is not a valid {tname}: {exc}"
                       ) from exc
    return value


class _Element:
    """The element type of an array parameter (asyncpg names arrays `int4[]`)."""

    def __init__(self, name: str):
        self.name, self.kind = name, "scalar"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "t", "yes", "y", "on", "1"):
        return True
    if text in ("false", "f", "no", "n", "off", "0"):
        return False
    raise ValueError("expected true or false")


def _status_count(status: str | None) -> int | None:
    last = (status or "").rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else None


async def run_postgresql(plan: dict[str, Any], url: str) -> Any:
    import asyncpg  # type: ignore[import-untyped, import-not-found, unused-ignore]

    variable = plan["variable"]
    try:
        conn = await asyncpg.connect(url, timeout=30)
    except (ValueError, asyncpg.ClientConfigurationError) as exc:
        raise JobError(f"{variable} is not a usable PostgreSQL URL ({EXAMPLES['postgresql']}):"
                       f" {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise JobError(f"the database of {variable} ({where(url)}) refused the connection:"
                       f" {exc}") from exc
    except (TimeoutError, OSError) as exc:
        raise JobError(f"could not connect to the database of {variable} ({where(url)}):"
                       f" {exc or type(exc).__name__}") from exc
    try:
        for codec in ("json", "jsonb"):
            await conn.set_type_codec(codec, schema="pg_catalog", encoder=json.dumps,
                                      decoder=json.loads)
        statements = plan["statements"]
        if len(statements) == 1:
            return await _pg_statement(conn, statements[0], statements)
        async with conn.transaction():
            result = None
            for st in statements:
                result = await _pg_statement(conn, st, statements)
            return result
    finally:
        await conn.close()


async def _pg_statement(conn: Any, st: dict[str, Any], all_: list[Any]) -> Any:
    import asyncpg  # type: ignore[import-untyped, import-not-found, unused-ignore]

    try:
        prepared = await conn.prepare(st["sql"])
        values = [to_postgres(v, t, n) for v, t, n in
                  zip(st["args"], prepared.get_parameters(), st["names"])]
        rows = await prepared.fetch(*values)
    except asyncpg.PostgresError as exc:
        raise JobError(_where_in(st, all_) + _pg_message(exc)) from exc
    except JobError as exc:
        raise JobError(_where_in(st, all_) + str(exc)) from exc
    if prepared.get_attributes():
        return [{k: jsonable(v) for k, v in row.items()} for row in rows]
    status = prepared.get_statusmsg()
    return {"status": status, "rows_affected": _status_count(status)}


def _pg_message(exc: Any) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if getattr(exc, "detail", None):
        text += f" (DETAIL: {exc.detail})"
    if getattr(exc, "hint", None):
        text += f" (HINT: {exc.hint})"
    return text


def _where_in(st: dict[str, Any], all_: list[Any]) -> str:
    return f"statement at line {st['line']}: " if len(all_) > 1 else ""


# --- mysql (asyncmy) ------------------------------------------------------------------------

def mysql_options(url: str, variable: str) -> dict[str, Any]:
    """asyncmy's connect() arguments from a `mysql://user:password@host:port/db?charset=...`."""
    bad = f"{variable} is not a usable MySQL URL ({EXAMPLES['mysql']})"
    try:
        parts = urlsplit(url)
        port = parts.port or 3306
    except ValueError as exc:
        raise JobError(f"{bad}: {exc}") from exc
    if parts.scheme not in ("mysql", "mariadb"):
        raise JobError(f"{bad}: its scheme is {parts.scheme!r}, not mysql or mariadb")
    if not parts.hostname:
        raise JobError(f"{bad}: it names no host")
    options: dict[str, Any] = {"host": parts.hostname, "port": port,
                               "user": unquote(parts.username or ""),
                               "password": unquote(parts.password or ""),
                               "database": unquote(parts.path.lstrip("/")) or None,
                               "connect_timeout": 30, "autocommit": False}
    for key, _, value in (q.partition("=") for q in parts.query.split("&") if q):
        if key == "charset":
            options["charset"] = value
        elif key == "ssl" and value.lower() in ("true", "1", "required"):
            import ssl

            options["ssl"] = ssl.create_default_context()
        elif not (key == "ssl" and value.lower() in ("false", "0", "disabled")):
            raise JobError(f"{bad}: unknown option {key!r} (known: charset, ssl=true)")
    return options


async def run_mysql(plan: dict[str, Any], url: str) -> Any:
    import asyncmy  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from asyncmy.errors import MySQLError  # type: ignore[import-untyped, import-not-found, unused-ignore]

    variable = plan["variable"]
    options = mysql_options(url, variable)
    try:
        conn = await asyncmy.connect(**options)
    except MySQLError as exc:
        if exc.args and exc.args[0] in MYSQL_UNREACHABLE:
            raise JobError(f"could not connect to the database of {variable} ({where(url)}):"
                           f" {_my_message(exc)}") from exc
        raise JobError(f"the database of {variable} ({where(url)}) refused the connection:"
                       f" {_my_message(exc)}") from exc
    except (TimeoutError, OSError) as exc:
        raise JobError(f"could not connect to the database of {variable} ({where(url)}):"
                       f" {exc or type(exc).__name__}") from exc
    try:
        result = None
        statements = plan["statements"]
        async with conn.cursor() as cur:
            for st in statements:
                try:
                    await cur.execute(st["sql"], tuple(_to_mysql(v) for v in st["args"]))
                    result = await _my_result(cur)
                except MySQLError as exc:
                    raise JobError(_where_in(st, statements) + _my_message(exc)) from exc
        await conn.commit()
        return result
    finally:
        conn.close()


def _to_mysql(value: Any) -> Any:
    """JSON objects go as their JSON text; a list as the driver's tuple (`IN ?` gets
    `(a, b, c)`)."""
    if isinstance(value, dict):
        return json.dumps(value)
    return tuple(_to_mysql(v) for v in value) if isinstance(value, list) else value


async def _my_result(cur: Any) -> Any:
    if cur.description is None:
        return {"rows_affected": cur.rowcount, "last_insert_id": cur.lastrowid or None}
    names = [d[0] for d in cur.description]
    decode = [d[1] == MYSQL_JSON for d in cur.description]
    return [{n: (json.loads(v) if j and isinstance(v, (str, bytes)) else jsonable(v))
             for n, j, v in zip(names, decode, row)} for row in await cur.fetchall()]


def _my_message(exc: Exception) -> str:
    if len(exc.args) >= 2 and isinstance(exc.args[0], int):
        return f"MySQL error {exc.args[0]}: {exc.args[1]}"
    return f"{type(exc).__name__}: {exc}"


# --- the job --------------------------------------------------------------------------------

async def run(plan: dict[str, Any]) -> Any:
    url = connection_url(plan["variable"], plan["dialect"])
    if plan["dialect"] == "postgresql":
        return await run_postgresql(plan, url)
    return await run_mysql(plan, url)


def main() -> int:
    out = os.fdopen(int(sys.argv[-1]), "w")
    try:
        with open("plan.json") as fh:
            plan = json.load(fh)
        reply = {"ok": True, "result": asyncio.run(run(plan))}
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
