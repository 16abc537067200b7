"""SQL scripts' argument declarations, statements and placeholders (sqlscript.py), and how the
in-sandbox wrappers turn values into JSON and URLs into connections (pure parts only)."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.worker.languages import graphql_wrapper, sql_wrapper
from services.worker.languages.sqlscript import (
    Param,
    ScriptError,
    declarations,
    plan,
)

PG = """-- $1 name
-- $2 since (date) = "2024-01-01"
-- $3 amount (numeric(10,2)) = 0
SELECT * FROM orders WHERE customer = $1 AND placed >= $2 AND total > $3
"""


def test_postgresql_declarations_with_types_and_defaults() -> None:
    assert declarations(PG, "postgresql") == [
        Param(name="name", position=1, line=1),
        Param(name="since", position=2, type="date", has_default=True, default="2024-01-01",
              line=2),
        Param(name="amount", position=3, type="numeric(10,2)", has_default=True, default=0,
              line=3),
    ]


def test_postgresql_binding_casts_typed_placeholders_and_applies_defaults() -> None:
    bound = plan(PG, {"name": "ada"}, "postgresql")
    assert bound.variable == "DATABASE_URL" and len(bound.statements) == 1
    st0 = bound.statements[0]
    assert st0.sql.endswith("WHERE customer = $1 AND placed >= CAST($2 AS date)"
                            " AND total > CAST($3 AS numeric(10,2))")
    assert (st0.args, st0.names, st0.line) == (["ada", "2024-01-01", 0],
                                               ["name", "since", "amount"], 4)


def test_each_statement_gets_its_own_placeholders_renumbered() -> None:
    code = ("-- $1 a\n-- $2 b\nINSERT INTO t VALUES ($2);\n"
            "SELECT $1, $2, $1 + 1;\nSELECT 1")
    sts = plan(code, {"a": 1, "b": "x"}, "postgresql").statements
    assert [s.sql.splitlines()[-1] for s in sts] == [
        "INSERT INTO t VALUES ($1)", "SELECT $1, $2, $1 + 1", "SELECT 1"]
    assert [s.args for s in sts] == [["x"], [1, "x"], []]
    assert [s.line for s in sts] == [3, 4, 5]


def test_quotes_comments_and_dollar_bodies_hide_semicolons_and_placeholders() -> None:
    code = ("-- $1 a\n"
            "SELECT '$2; x', \"col;$3\", E'it\\'s; $4', $$ $5; $$, $fn$ ; $6 $fn$, a$1, $1"
            " /* ; $7 /* nested ; */ still; */ -- $8; comment\n;")
    (only,) = plan(code, {"a": 5}, "postgresql").statements
    body = only.sql.split("\n", 1)[1]
    assert only.args == [5] and body.count("$1") == 2  # `a$1` is a name, not a placeholder
    assert "still; */" in only.sql


def test_mysql_placeholders_bind_in_declaration_order_and_percent_is_doubled() -> None:
    code = ("-- ? name (char(20))\n-- ? name\n-- ? ids\n"
            "SELECT * FROM t WHERE a = ? OR b = ? AND c LIKE 'x%' AND `odd?` = '?' # ?\n"
            ";\nDELETE FROM t WHERE id IN ? -- ?")
    first, second = plan(code, {"name": "n", "ids": [1, 2]}, "mysql").statements
    assert "a = CAST(%s AS char(20)) OR b = %s AND c LIKE 'x%%' AND `odd?` = '?' # ?" in first.sql
    assert (first.args, first.names) == (["n", "n"], ["name", "name"])
    assert second.sql.endswith("IN %s -- ?") and second.args == [[1, 2]]


def test_mysql_dash_dash_needs_a_space_to_be_a_comment() -> None:
    code = "-- ? x\nSELECT 1--?\n"  # `1--?` is 1 minus minus the placeholder, as MySQL reads it
    (only,) = plan(code, {"x": 2}, "mysql").statements
    assert only.sql.endswith("SELECT 1--%s") and only.args == [2]


def test_mysql_backslash_escapes_in_strings() -> None:
    (only,) = plan("SELECT 'a\\';?', \"b\\\";?\"", {}, "mysql").statements
    assert only.args == [] and only.sql == "SELECT 'a\\';?', \"b\\\";?\""


@pytest.mark.parametrize("code, args, message", [
    ("-- $1 name\nSELECT $1", {}, "the argument 'name' is missing (line 1"),
    ("-- $1 name\nSELECT $1", {"name": 1, "nmae": 2}, "unknown argument(s) 'nmae'"),
    ("SELECT $2", {}, "line 1: $2 is used but no `-- $2 name` line declares it"),
    ("-- $1 a\n-- $1 b\nSELECT $1", {"a": 1, "b": 1}, "line 2: $1 is declared twice"),
    ("-- $1 a\n-- $2 a\nSELECT $1", {"a": 1}, "'a' is declared twice"),
    ("-- $1 name int\nSELECT $1", {}, "line 1: '-- $1 name int' does not declare an argument"),
    ("-- $1 database\nSELECT $1", {}, "the argument 'database' names the group variable"),
    ("-- just a comment;\n  ;", {}, "the script has no SQL statement"),
    ("SELECT 1", {"database": "not a name"}, "must name a group variable"),
])
def test_postgresql_errors_name_the_problem(code: str, args: dict[str, Any],
                                            message: str) -> None:
    with pytest.raises(ScriptError) as err:
        plan(code, args, "postgresql")
    assert message in str(err.value)


def test_mysql_placeholder_count_must_match_the_declarations() -> None:
    with pytest.raises(ScriptError, match=r"2 `\?` placeholder\(s\) but 1 `-- \? name` line"):
        plan("-- ? a\nSELECT ?, ?", {"a": 1}, "mysql")


def test_the_database_argument_names_the_variable() -> None:
    bound = plan("-- ? a\nSELECT ?", {"a": 1, "database": "REPORTING_DB"}, "mysql")
    assert bound.variable == "REPORTING_DB" and bound.statements[0].args == [1]


def test_a_default_is_json_when_it_parses_else_text() -> None:
    params = declarations("-- $1 a = null\n-- $2 b = [1, 2]\n-- $3 c = hello world\n",
                          "postgresql")
    assert [p.default for p in params] == [None, [1, 2], "hello world"]


@given(st.text(alphabet="ab $?;'\"`-#/*\n\\1", max_size=60))
def test_any_text_tokenizes_back_to_itself(code: str) -> None:
    """Cutting a script into tokens never loses or invents a character, whatever its quotes."""
    from services.worker.languages.sqlscript import _tokens

    for dialect in ("postgresql", "mysql"):
        assert "".join(t.text for t in _tokens(code, dialect)) == code  # type: ignore[arg-type]


def test_column_values_become_json() -> None:
    j = sql_wrapper.jsonable
    assert j(decimal.Decimal("12.50")) == "12.50"
    assert j(datetime.date(2024, 1, 31)) == "2024-01-31"
    assert j(datetime.datetime(2024, 1, 31, 10, 0, tzinfo=datetime.UTC)) == \
        "2024-01-31T10:00:00+00:00"
    assert j(datetime.timedelta(hours=1, seconds=1)) == 3601.0
    assert j(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert j(b"\x00\xff") == "AP8="
    assert j(float("nan")) == "nan" and j({"a": [decimal.Decimal(1)]}) == {"a": ["1"]}
    assert j({"b", "a"}) == ["a", "b"]


def test_mysql_urls() -> None:
    opts = sql_wrapper.mysql_options("mysql://us%40er:p%3Ass@db.local:3307/app?charset=utf8mb4",
                                     "DATABASE_URL")
    assert {k: opts[k] for k in ("host", "port", "user", "password", "database", "charset")} == {
        "host": "db.local", "port": 3307, "user": "us@er", "password": "p:ss",
        "database": "app", "charset": "utf8mb4"}
    for url, message in [("postgresql://h/db", "its scheme is 'postgresql'"),
                         ("mysql:///db", "it names no host"),
                         ("mysql://h:99999/db", "not a usable MySQL URL"),
                         ("mysql://h/db?pool=3", "unknown option 'pool'")]:
        with pytest.raises(sql_wrapper.JobError, match=message):
            sql_wrapper.mysql_options(url, "DATABASE_URL")


def test_graphql_token_variable_and_errors() -> None:
    assert graphql_wrapper.token_variable("GRAPHQL_URL") == "GRAPHQL_TOKEN"
    assert graphql_wrapper.token_variable("GITHUB_API") == "GITHUB_API_TOKEN"
    assert graphql_wrapper.authorization("abc") == "Bearer abc"
    assert graphql_wrapper.authorization("Basic eDp5") == "Basic eDp5"
    assert graphql_wrapper.error_text([{"message": "boom", "path": ["user", 0, "name"]},
                                       {"message": "bad", "locations": [{"line": 2,
                                                                         "column": 3}]}]) == \
        "boom (at user.0.name); bad (line 2, column 3)"
