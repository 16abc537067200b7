"""postgresql and mysql jobs against real servers the module starts (tests/integration/dbservers.py).

The seeded `native` group (whose tags include postgresql and mysql) holds the connection URLs as
static variables, set as a user would, with `getoperate group set native --env ...`: DATABASE_URL
(PostgreSQL, the default), ANALYTICS_URL (another PostgreSQL database) and MYSQL_URL (MariaDB).
Jobs run in the sandbox, on the host network, like any job; one test per language submits through
`getoperate run`, the others over HTTP (faster).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import Suite, running_suite
from tests.integration.dbservers import (
    REQUIRED,
    mariadb_server,
    mariadbd,
    needs_mariadb,
    needs_postgres,
    postgres_bin,
    postgres_server,
)
from tests.integration.harness import cli_json, ready, run_view


@pytest.fixture(scope="module")
def pg() -> Iterator[dict[str, str] | None]:
    if postgres_bin() is None and not REQUIRED:
        yield None  # the postgresql tests skip; the mysql ones still run
        return
    with postgres_server(databases=("shop", "analytics")) as urls:
        yield urls


@pytest.fixture(scope="module")
def my() -> Iterator[str | None]:
    if mariadbd() is None and not REQUIRED:
        yield None  # the mysql tests skip; the postgresql ones still run
        return
    with mariadb_server() as url:
        yield url


@pytest.fixture(scope="module")
def suite(pg: dict[str, str] | None, my: str | None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("suite")) as s:
        env = {"DATABASE_URL": pg["shop"], "ANALYTICS_URL": pg["analytics"]} if pg else {}
        if my:
            env["MYSQL_URL"] = my
        if env:  # as a user would: the CLI (the variables replace the group's set)
            changed = cli_json("group", "set", "native",
                               *[f"--env={name}={url}" for name, url in env.items()], cwd=s.root)
            s.api.wait_workers(ready("native", version=changed["seq"]), timeout=60)
        yield s


def run(suite: Suite, language: str, code: str, **args: Any) -> Any:
    return suite.api.job(suite.api.submit(code, language=language, args=args)["id"])


def ok(view: Any) -> Any:
    assert view["status"] == "success", view
    return view["result"]


def failed(view: Any) -> str:
    assert view["status"] == "failure", view
    return str(view["error"])


SUM_PG = "-- $1 a (int)\n-- $2 b (int)\nSELECT $1 + $2 AS sum, current_database() AS db"


@needs_postgres
def test_postgresql_through_getoperate_run(suite: Suite) -> None:
    """`getoperate run --language postgresql`: --arg values fill the `-- $1 name` header, the
    connection is DATABASE_URL, which `group set --env` gave the group, and a failure shows the
    error (its hint names that command)."""
    view = run_view("--language", "postgresql", "--code", SUM_PG, "--arg", "a=40",
                    "--arg", "b=2", cwd=suite.root)
    assert (view["status"], view["tag"], view["group"]) == ("success", "postgresql", "native"), view
    assert view["result"] == [{"sum": 42, "db": "shop"}]
    unset = run_view("--language", "postgresql", "--code", "SELECT 1", "--arg",
                     "database=NOPE_URL", cwd=suite.root)
    assert unset["status"] == "failure", unset
    assert "set it with `getoperate group set native --env NOPE_URL=" in unset["error"], unset


PG_SETUP = """
-- $1 first_customer
CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL, placed date NOT NULL,
                     total numeric(10, 2) NOT NULL, ref uuid, notes jsonb, raw bytea);
INSERT INTO orders (customer, placed, total, ref, notes, raw) VALUES
  ($1, '2024-01-31', 12.50, '00000000-0000-0000-0000-000000000001', '{"gift": true}', '\\x00ff'),
  ('bob', '2023-12-01', 99.99, NULL, NULL, NULL);
"""

PG_SELECT = """-- $1 customer
-- $2 since (date) = "2024-01-01"
SELECT id, customer, placed, total, ref, notes, raw, placed + interval '1 hour' AS later
FROM orders WHERE customer = $1 AND placed >= $2 ORDER BY id
"""


@needs_postgres
def test_postgresql_select_with_named_arguments_returns_rows_as_json(suite: Suite) -> None:
    """A script of two statements runs in one transaction; the result is the last one's. A
    select's rows are objects, dates ISO 8601, numerics exact strings, bytes base64."""
    assert ok(run(suite, "postgresql", PG_SETUP, first_customer="ada")) == {
        "status": "INSERT 0 2", "rows_affected": 2}
    rows = ok(run(suite, "postgresql", PG_SELECT, customer="ada"))
    assert rows == [{"id": 1, "customer": "ada", "placed": "2024-01-31", "total": "12.50",
                     "ref": "00000000-0000-0000-0000-000000000001", "notes": {"gift": True},
                     "raw": "AP8=", "later": "2024-01-31T01:00:00"}]
    # The typed default is overridden by an argument, and a string becomes the date it names.
    assert ok(run(suite, "postgresql", PG_SELECT, customer="bob", since="2020-01-01"))[0][
        "total"] == "99.99"
    assert ok(run(suite, "postgresql", PG_SELECT, customer="bob")) == []


@needs_postgres
def test_postgresql_insert_then_select(suite: Suite) -> None:
    insert = ("-- $1 customer\n-- $2 total\n"
              "INSERT INTO orders (customer, placed, total) VALUES ($1, '2024-05-01', $2)")
    assert ok(run(suite, "postgresql", insert, customer="cy", total=7.25)) == {
        "status": "INSERT 0 1", "rows_affected": 1}
    returning = insert + " RETURNING customer, total"
    assert ok(run(suite, "postgresql", returning, customer="cy", total="1.5")) == [
        {"customer": "cy", "total": "1.50"}]
    count = "-- $1 who\nSELECT count(*) AS n, sum(total) AS sum FROM orders WHERE customer = $1"
    assert ok(run(suite, "postgresql", count, who="cy")) == [{"n": 2, "sum": "8.75"}]


@needs_postgres
def test_postgresql_a_failing_statement_rolls_back_the_script(suite: Suite) -> None:
    script = ("INSERT INTO orders (customer, placed, total) VALUES ('ghost', now(), 1);\n"
              "SELECT nosuch FROM orders;")
    error = failed(run(suite, "postgresql", script))
    assert error == ('statement at line 2: UndefinedColumnError: column "nosuch" does not'
                     " exist"), error
    assert ok(run(suite, "postgresql", "SELECT count(*) AS n FROM orders WHERE customer ="
                                        " 'ghost'")) == [{"n": 0}]


@needs_postgres
def test_postgresql_the_database_argument_names_another_variable(suite: Suite) -> None:
    code = "SELECT current_database() AS db"
    assert ok(run(suite, "postgresql", code)) == [{"db": "shop"}]
    assert ok(run(suite, "postgresql", code, database="ANALYTICS_URL")) == [{"db": "analytics"}]


@needs_postgres
def test_postgresql_errors_name_the_variable_or_carry_the_servers_message(suite: Suite) -> None:
    missing = failed(run(suite, "postgresql", "SELECT 1", database="NOPE_URL"))
    assert missing.startswith("the group variable NOPE_URL is not set (group 'native'): set it"
                              " with `getoperate group set native --env NOPE_URL="), missing
    bad_url = failed(run(suite, "postgresql", "SELECT 1", database="MYSQL_URL"))
    if "MYSQL_URL is not set" not in bad_url:  # MariaDB may be absent: then only its name
        assert bad_url.startswith("MYSQL_URL is not a usable PostgreSQL URL"), bad_url
        assert "s3cret" not in bad_url
    syntax = failed(run(suite, "postgresql", "SELEC 1"))
    assert syntax == 'PostgresSyntaxError: syntax error at or near "SELEC"', syntax
    zero = failed(run(suite, "postgresql", "-- $1 id (int)\nSELECT 1 / ($1 - 1) AS x", id="1"))
    assert zero == "DivisionByZeroError: division by zero", zero
    typed = failed(run(suite, "postgresql", "-- $1 n (int)\nSELECT $1 AS n", n="many"))
    assert "the argument 'n' ('many') is not a valid int4" in typed, typed
    assert "the argument 'customer' is missing" in failed(run(suite, "postgresql", PG_SELECT))


MY_SETUP = """-- ? name
-- ? total
CREATE TABLE IF NOT EXISTS items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40),
                                  added DATE, price DECIMAL(8, 2));
INSERT INTO items (name, added, price) VALUES (?, '2024-02-29', ?);
"""


@needs_mariadb
def test_mysql_insert_then_select_with_the_database_argument(suite: Suite) -> None:
    assert ok(run(suite, "mysql", MY_SETUP, database="MYSQL_URL", name="lamp",
                  total=19.9)) == {"rows_affected": 1, "last_insert_id": 1}
    select = ("-- ? name\n-- ? cheaper_than (decimal(8,2)) = 100\n"
              "SELECT id, name, added, price, price * 2 AS twice, '100%' AS pct FROM items"
              " WHERE name = ? AND price < ?")
    assert ok(run(suite, "mysql", select, database="MYSQL_URL", name="lamp")) == [
        {"id": 1, "name": "lamp", "added": "2024-02-29", "price": "19.90", "twice": "39.80",
         "pct": "100%"}]
    listed = "-- ? names\nSELECT count(*) AS n FROM items WHERE name IN ?"
    assert ok(run(suite, "mysql", listed, database="MYSQL_URL", names=["lamp", "x"])) == [
        {"n": 1}]


@needs_mariadb
def test_mysql_through_getoperate_run(suite: Suite) -> None:
    """`getoperate run --language mysql`: `-- ? name` lines take the --arg values in order;
    the connection is MYSQL_URL, which `group set --env` gave the group."""
    code = "-- ? a\n-- ? b\nSELECT ? + ? AS sum, DATABASE() AS db"
    view = run_view("--language", "mysql", "--code", code, "--arg", "a=40", "--arg", "b=2",
                    "--arg", "database=MYSQL_URL", cwd=suite.root)
    assert (view["status"], view["tag"], view["group"]) == ("success", "mysql", "native"), view
    assert view["result"] == [{"sum": 42, "db": "app"}]


@needs_mariadb
def test_mysql_errors(suite: Suite, pg: dict[str, str] | None) -> None:
    error = failed(run(suite, "mysql", "SELECT * FROM nosuch", database="MYSQL_URL"))
    assert error == "MySQL error 1146: Table 'app.nosuch' doesn't exist", error
    if pg:  # DATABASE_URL holds a PostgreSQL URL: its name is said, its password never
        wrong = failed(run(suite, "mysql", "SELECT 1"))
        assert wrong.startswith("DATABASE_URL is not a usable MySQL URL"), wrong
        assert "its scheme is 'postgresql'" in wrong and "s3cret" not in wrong
    missing = failed(run(suite, "mysql", "SELECT 1", database="NOPE_URL"))
    assert "the group variable NOPE_URL is not set" in missing
    count = failed(run(suite, "mysql", "-- ? a\nSELECT ?, ?", database="MYSQL_URL", a=1))
    assert "2 `?` placeholder(s) but 1 `-- ? name` line(s)" in count
