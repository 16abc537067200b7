"""SQL scripts of the postgresql and mysql languages, bound to a job's arguments before any run.

A script declares its arguments in `--` comments: `-- $1 name`, `-- $1 name (type)`,
`-- $1 name (type) = default` (postgresql: `$1` is the argument `name` wherever it appears) or
`-- ? name ...` (mysql: the declarations bind the `?` placeholders in order). The script is cut
into statements at top-level `;` (never inside a string, a quoted name, a comment or a
dollar-quoted body), and each statement gets the values of the placeholders it uses, in the
driver's own form: asyncpg's `$1..$n` renumbered per statement, or `%s` for asyncmy (with every
other `%` doubled, as its formatting wants). Pure: no driver, no I/O (docs/languages.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Literal

import msgspec

from shared.errors import InvalidInput

Dialect = Literal["postgresql", "mysql"]
CONNECTION_ARG = "database"  # names the group variable holding the connection URL
DEFAULT_VARIABLE = "DATABASE_URL"
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = r"([A-Za-z_][A-Za-z0-9_]*)"
# A type may hold one level of parentheses: `numeric(10,2)`, `varchar(20)`.
_TAIL = r"(?:\s*\(\s*((?:[^()]|\([^()]*\))+?)\s*\))?(?:\s*=\s*(.*?))?\s*$"
_DECLARATION = {
    "postgresql": (re.compile(r"^--\s*\$(\d+)(?=\s|$)"),
                   re.compile(r"^--\s*\$(\d+)\s+" + _NAME + _TAIL)),
    "mysql": (re.compile(r"^--\s*\?(?=\s|$)"), re.compile(r"^--\s*\?()\s+" + _NAME + _TAIL)),
}
_SYNTAX = {"postgresql": "`-- $1 name`, `-- $1 name (type)` or `-- $1 name (type) = default`",
           "mysql": "`-- ? name`, `-- ? name (type)` or `-- ? name (type) = default`"}


class ScriptError(InvalidInput):
    """Raised when a SQL script's declarations, placeholders or arguments do not fit together."""


class Param(msgspec.Struct, frozen=True, kw_only=True):
    """One declared argument. `position` is n of `$n` (postgresql) or the declaration's rank
    among the `-- ?` lines (mysql)."""

    name: str
    position: int
    type: str | None = None
    has_default: bool = False
    default: Any = None
    line: int = 0


class Statement(msgspec.Struct, frozen=True, kw_only=True):
    """One statement as the driver takes it, with its placeholders' values in order (and the
    arguments they came from, to name in errors)."""

    sql: str
    args: list[Any]
    names: list[str]
    line: int


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """What the in-sandbox wrapper runs: the group variable holding the URL, and the statements
    (several run in one transaction)."""

    dialect: Dialect
    variable: str
    statements: list[Statement]


class _Token(msgspec.Struct, frozen=True):
    kind: Literal["code", "quoted", "comment", "placeholder", "end"]
    text: str
    start: int


_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$\x80-\U0010ffff]")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_PG_PARAM = re.compile(r"\$(\d+)")


def _tokens(code: str, dialect: Dialect) -> Iterator[_Token]:
    """The script as code, quoted text, comments, placeholders and `;` (kind "end")."""
    i, n, start = 0, len(code), 0
    mysql = dialect == "mysql"

    def flush(upto: int) -> Iterator[_Token]:
        if upto > start:
            yield _Token("code", code[start:upto], start)

    while i < n:
        c = code[i]
        nxt = code[i + 1] if i + 1 < n else ""
        end = -1
        kind: Literal["quoted", "comment", "placeholder", "end"] = "quoted"
        if c == "-" and nxt == "-" and (not mysql or i + 2 >= n or code[i + 2].isspace()) or c == "#" and mysql:
            kind, end = "comment", _line_end(code, i)
        elif c == "/" and nxt == "*":
            kind, end = "comment", _block_comment_end(code, i, nested=not mysql)
        elif c in "'\"" or (c == "`" and mysql):
            backslash = mysql and c != "`" or (
                c == "'" and i > 0 and code[i - 1] in "eE"
                and (i < 2 or not _IDENT_CHAR.match(code[i - 2])))
            end = _quote_end(code, i, backslash)
        elif c == "$" and not mysql and (i == 0 or not _IDENT_CHAR.match(code[i - 1])):
            if m := _PG_PARAM.match(code, i):
                kind, end = "placeholder", m.end()
            elif m := _DOLLAR_TAG.match(code, i):
                close = code.find(m.group(), m.end())
                end = n if close < 0 else close + len(m.group())
        elif c == "?" and mysql:
            kind, end = "placeholder", i + 1
        elif c == ";":
            kind, end = "end", i + 1
        if end < 0:
            i += 1
            continue
        yield from flush(i)
        yield _Token(kind, code[i:end], i)
        i = start = end
    yield from flush(n)


def _line_end(code: str, i: int) -> int:
    j = code.find("\n", i)
    return len(code) if j < 0 else j


def _block_comment_end(code: str, i: int, nested: bool) -> int:
    depth, j = 0, i
    while j < len(code):
        if code.startswith("/*", j):
            depth, j = (depth + 1 if nested or depth == 0 else depth), j + 2
        elif code.startswith("*/", j):
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    return len(code)


def _quote_end(code: str, i: int, backslash: bool) -> int:
    q, j = code[i], i + 1
    while j < len(code):
        if backslash and code[j] == "\\":
            j += 2
        elif code[j] == q:
            if code.startswith(q, j + 1):  # a doubled quote stands for itself
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return len(code)  # unterminated: the server says so


def _own_line(code: str, offset: int) -> bool:
    """Whether only blanks come before `offset` on its line (a declaration is a line of its
    own; a comment after code is just a comment)."""
    return not code[code.rfind("\n", 0, offset) + 1:offset].strip()


def _line(code: str, offset: int) -> int:
    return code.count("\n", 0, offset) + 1


def declarations(code: str, dialect: Dialect) -> list[Param]:
    """The arguments a script declares, in its order; raise naming a malformed line."""
    looks, full = _DECLARATION[dialect]
    params: list[Param] = []
    for tok in _tokens(code, dialect):
        if tok.kind != "comment" or not looks.match(tok.text) or not _own_line(code, tok.start):
            continue
        line = _line(code, tok.start)
        m = full.match(tok.text.rstrip())
        if m is None:
            raise ScriptError(f"line {line}: {tok.text.strip()!r} does not declare an argument;"
                              f" write {_SYNTAX[dialect]}")
        number, name, type_, default = m.groups()
        position = int(number) if dialect == "postgresql" else len(params) + 1
        if name == CONNECTION_ARG:
            raise ScriptError(f"line {line}: the argument {CONNECTION_ARG!r} names the group"
                              " variable of the connection; give the query's argument another"
                              " name")
        for p in params:
            if dialect == "postgresql" and p.position == position:
                raise ScriptError(f"line {line}: ${position} is declared twice (line {p.line}"
                                  f" names it {p.name!r})")
            if dialect == "postgresql" and p.name == name:
                raise ScriptError(f"line {line}: {name!r} is declared twice (line {p.line}"
                                  f" makes it ${p.position}); use ${p.position} again instead")
        params.append(Param(name=name, position=position, type=type_ or None, line=line,
                            has_default=default is not None, default=_default(default)))
    return params


def _default(text: str | None) -> Any:
    """`= 10` is the number 10, `= null` is NULL, `= abc` the string: like `--arg` values."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def plan(code: str, args: dict[str, Any], dialect: Dialect) -> Plan:
    """The statements of a script with the job's arguments bound; raise naming what is wrong
    (an argument missing or unknown, a placeholder nobody declared)."""
    variable = args.get(CONNECTION_ARG, DEFAULT_VARIABLE)
    if not isinstance(variable, str) or not _VARIABLE.match(variable):
        raise ScriptError(f"the argument {CONNECTION_ARG!r} must name a group variable (like"
                          f" {DEFAULT_VARIABLE}), got {variable!r}", field=CONNECTION_ARG)
    params = declarations(code, dialect)
    declared = {p.name for p in params}
    unknown = sorted(set(args) - declared - {CONNECTION_ARG})
    if unknown:
        raise ScriptError(f"unknown argument(s) {', '.join(map(repr, unknown))}: the script"
                          f" declares {_listing(params)}")
    values: dict[str, Any] = {}
    for p in params:
        if p.name in args:
            values[p.name] = args[p.name]
        elif p.has_default:
            values[p.name] = p.default
        else:
            raise ScriptError(f"the argument {p.name!r} is missing (line {p.line} declares it,"
                              " with no default)", field=p.name)
    pieces = list(_statements(code, dialect))
    if not pieces:
        raise ScriptError("the script has no SQL statement")
    bind = _bind_postgresql if dialect == "postgresql" else _bind_mysql
    return Plan(dialect=dialect, variable=variable,
                statements=bind(code, pieces, params, values))


def _listing(params: list[Param]) -> str:
    names = list(dict.fromkeys(p.name for p in params))
    return ", ".join(map(repr, names)) if names else "no arguments"


def _statements(code: str, dialect: Dialect) -> Iterator[list[_Token]]:
    """The script's statements as tokens, without the `;`; statements of only comments and
    blanks are dropped."""
    current: list[_Token] = []
    for tok in [*_tokens(code, dialect), _Token("end", "", len(code))]:
        if tok.kind != "end":
            current.append(tok)
            continue
        if any(t.kind != "comment" and t.text.strip() for t in current):
            yield current
        current = []


def _first_line(code: str, toks: list[_Token]) -> int:
    for t in toks:
        if t.kind != "comment" and t.text.strip():
            return _line(code, t.start + len(t.text) - len(t.text.lstrip()))
    return _line(code, toks[0].start)


def _cast(placeholder: str, type_: str | None) -> str:
    return f"CAST({placeholder} AS {type_})" if type_ else placeholder


def _bind_postgresql(code: str, pieces: list[list[_Token]], params: list[Param],
                     values: dict[str, Any]) -> list[Statement]:
    by_position = {p.position: p for p in params}
    out = []
    for toks in pieces:
        used = sorted({int(t.text[1:]) for t in toks if t.kind == "placeholder"})
        for n in used:
            if n not in by_position:
                raise ScriptError(f"line {_first_line(code, toks)}: ${n} is used but no"
                                  f" `-- ${n} name` line declares it")
        renumber = {n: i + 1 for i, n in enumerate(used)}  # the statement's own $1..$k
        sql = "".join(_cast(f"${renumber[int(t.text[1:])]}", by_position[int(t.text[1:])].type)
                      if t.kind == "placeholder" else t.text for t in toks).strip()
        names = [by_position[n].name for n in used]
        out.append(Statement(sql=sql, args=[values[name] for name in names], names=names,
                             line=_first_line(code, toks)))
    return out


def _bind_mysql(code: str, pieces: list[list[_Token]], params: list[Param],
                values: dict[str, Any]) -> list[Statement]:
    count = sum(t.kind == "placeholder" for toks in pieces for t in toks)
    if count != len(params):
        raise ScriptError(f"the script has {count} `?` placeholder(s) but {len(params)}"
                          " `-- ? name` line(s): declare one per `?`, in order")
    queue = iter(params)
    out = []
    for toks in pieces:
        parts, names = [], []
        for t in toks:
            if t.kind == "placeholder":
                p = next(queue)
                parts.append(_cast("%s", p.type))
                names.append(p.name)
            else:  # the driver formats the statement with `%`: every other `%` is doubled
                parts.append(t.text.replace("%", "%%"))
        out.append(Statement(sql="".join(parts).strip(), args=[values[n] for n in names],
                             names=names, line=_first_line(code, toks)))
    return out
