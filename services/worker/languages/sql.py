"""postgresql and mysql: a SQL script with declared arguments, run against a group's database.

The worker binds the job's arguments to the script (sqlscript.py: a missing or unknown argument
fails the job before anything starts); in the sandbox, the worker's own interpreter runs
sql_wrapper.py, which connects with the URL in the group variable the `database` argument names
(DATABASE_URL by default) and returns the last statement's rows as JSON (docs/languages.md).
The job's folder holds the script as written (`query.sql`), its arguments (`args.json`) and what
the wrapper runs: the statements with their values bound (`plan.json`).

The MySQL driver is asyncmy rather than aiomysql: both speak asyncio with the same cursor API,
but asyncmy is the one still released regularly (wheels for current Pythons, MariaDB fixes),
while aiomysql's releases are rare and it trails PyMySQL.
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

import msgspec

from services.worker.languages.base import Context, Launch, PrepareFailed, args_json
from services.worker.languages.sqlscript import Dialect, ScriptError, plan
from shared.jobs import Job

LANGUAGES_EXTRA = "pip install 'getoperate[languages]'"


@functools.cache
def wrapper_source() -> str:
    return (Path(__file__).parent / "sql_wrapper.py").read_text()


class _Sql:
    name: str
    dialect: Dialect
    driver: str  # the module the worker's interpreter must import
    how_to_get: str

    def find_runtime(self) -> str | None:
        """The worker's interpreter, when it can import the driver (it runs in the sandbox)."""
        try:
            importlib.import_module(self.driver)
        except ImportError:
            return None
        return sys.executable

    async def launch(self, job: Job, ctx: Context) -> Launch:
        try:
            bound = plan(job.code, job.args, self.dialect)
        except ScriptError as exc:
            raise PrepareFailed(str(exc)) from exc
        return Launch(argv=[ctx.runtime or sys.executable, "-c", wrapper_source()],
                      files={"query.sql": job.code.encode(), "args.json": args_json(job),
                             "plan.json": msgspec.json.encode(bound)})


class Postgresql(_Sql):
    name = "postgresql"
    dialect: Dialect = "postgresql"
    driver = "asyncpg"
    how_to_get = f"{LANGUAGES_EXTRA} (asyncpg, for the worker's own Python)"


class Mysql(_Sql):
    name = "mysql"
    dialect: Dialect = "mysql"
    driver = "asyncmy"
    how_to_get = f"{LANGUAGES_EXTRA} (asyncmy, for the worker's own Python)"
