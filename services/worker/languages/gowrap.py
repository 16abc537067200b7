"""A Go script's `main` signature, read in Python, and the wrapper program generated around it.

The job's arguments are matched to `main`'s parameters by name, so the names must be read from
the source (a compiled Go function keeps no parameter names). The parser is a small tokenizer,
not a Go parser: it blanks comments and string literals, finds the top-level `func main(`, and
splits the parameter list at top-level commas, following Go's grouping rule (`a, b int`).

The generated code never restates the parameter types: a generic helper takes `main` itself and
Go infers each parameter's type, so a type from an imported package (`time.Duration`) or one the
script declares needs no import or declaration of ours, and the compiler checks it all. That
needs Go 1.18 (type parameters).
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from shared.errors import InvalidInput

MODULE = "getoperate.job"  # the generated program's module path; the script is MODULE/inner
_IDENT = re.compile(r"[^\W\d]\w*")
_NAMED = re.compile(r"([^\W\d]\w*)\s+(\S.*)", re.DOTALL)
_KEYWORDS = frozenset({"chan", "func", "map", "struct", "interface"})  # start a type, not a name
_OPEN, _CLOSE = "([{", ")]}"
EXAMPLE = "func main(name string, n int) (interface{}, error)"


class BadSignature(InvalidInput):
    """Raised when a Go script has no `main` that the job's arguments can be passed to by name."""


class Param(NamedTuple):
    name: str
    type: str  # as written; for a variadic parameter, the element type (`...T` gives `T`)
    variadic: bool = False


class Signature(NamedTuple):
    params: tuple[Param, ...]
    result: str  # the type of main's first result (its second is `error`)


def mask(code: str, strings: bool = True) -> str:
    """`code` with comments blanked and (with `strings`) string/rune literals' contents too (the
    quotes kept), offsets and newlines unchanged: brackets and commas in them no longer count."""
    out = list(code)
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if code.startswith("//", i):
            end = code.find("\n", i)
            end = n if end < 0 else end
            _blank(out, i, end)
            i = end
        elif code.startswith("/*", i):
            end = code.find("*/", i + 2)
            end = n if end < 0 else end + 2
            _blank(out, i, end)
            i = end
        elif c == "`":
            end = code.find("`", i + 1)
            end = n if end < 0 else end
            if strings:
                _blank(out, i + 1, end)
            i = end + 1
        elif c in "\"'":
            j = i + 1
            while j < n and code[j] != c and code[j] != "\n":
                j += 2 if code[j] == "\\" else 1
            if strings:
                _blank(out, i + 1, min(j, n))
            i = j + 1
        else:
            i += 1
    return "".join(out)


def _blank(out: list[str], start: int, end: int) -> None:
    for k in range(start, end):
        if out[k] != "\n":
            out[k] = " "


def _closing(masked: str, start: int) -> int:
    """The index of the bracket closing the one at `start`."""
    depth = 0
    for i in range(start, len(masked)):
        if masked[i] in _OPEN:
            depth += 1
        elif masked[i] in _CLOSE:
            depth -= 1
            if depth == 0:
                return i
    raise BadSignature(f"main's signature has an unclosed {masked[start]!r}")


def _split(text: str, masked: str) -> list[str]:
    """`text` split at the commas outside brackets (found in `masked`, its masked twin)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(masked):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    last = text[start:].strip()
    if last or parts:  # a trailing comma (`a int,\n`) leaves an empty last part: not a param
        parts.append(last)
    if parts and not parts[-1]:
        parts.pop()
    if any(not p for p in parts):
        raise BadSignature("main's parameter list has an empty entry (two commas in a row)")
    return parts


def _fields(entries: list[str], what: str) -> list[tuple[str | None, str]]:
    """(name, type) of each entry of a Go parameter list, with Go's grouping (`a, b int`);
    name None where the list names none."""
    named = [m for e in entries if (m := _NAMED.fullmatch(e)) and m.group(1) not in _KEYWORDS]
    if not named:
        return [(None, e) for e in entries]
    out: list[tuple[str | None, str]] = []
    waiting: list[str] = []
    for entry in entries:
        m = _NAMED.fullmatch(entry)
        if m and m.group(1) not in _KEYWORDS:
            for name in (*waiting, m.group(1)):
                out.append((name, m.group(2).strip()))
            waiting = []
        elif _IDENT.fullmatch(entry):
            waiting.append(entry)
        else:
            raise BadSignature(f"main's {what} mix named and unnamed entries ({entry!r} has no"
                               " name); name every one")
    if waiting:
        raise BadSignature(f"main's {what} {', '.join(waiting)} have no type")
    return out


def parse(code: str) -> Signature:
    """The parameters (names and types) and result type of the script's `main`, or
    BadSignature saying what is wrong and what is expected."""
    masked, code = mask(code), mask(code, strings=False)  # `code` keeps struct tags' text
    package = re.search(r"^\s*package\s+(\S+)", masked)
    if package is None or package.group(1) != "inner":
        found = f"it is `package {package.group(1)}`" if package else "it has no package clause"
        raise BadSignature(f"a Go script is `package inner` ({found}), with `{EXAMPLE}`")
    head = re.search(r"^func\s+main\b\s*", masked, re.MULTILINE)
    if head is None:
        raise BadSignature(f"the script has no top-level `func main`: write `{EXAMPLE}`")
    start = head.end()
    if masked.startswith("[", start):
        raise BadSignature("main must not have type parameters: the job's arguments decide no"
                           " types")
    if not masked.startswith("(", start):
        raise BadSignature(f"main's parameter list is missing: write `{EXAMPLE}`")
    close = _closing(masked, start)
    entries = _split(code[start + 1:close], masked[start + 1:close])
    params = _params(_fields(entries, "parameters"))
    return Signature(params, _result(code, masked, close + 1))


def _params(fields: list[tuple[str | None, str]]) -> tuple[Param, ...]:
    if fields and fields[0][0] is None:
        raise BadSignature("main's parameters have no names, so no argument can be matched to"
                           f" them: write `{EXAMPLE}`")
    params: list[Param] = []
    for i, (name, type_) in enumerate(fields):
        assert name is not None
        variadic = type_.startswith("...")
        if variadic and i != len(fields) - 1:
            raise BadSignature(f"only main's last parameter may be variadic, not {name!r}")
        if name != "_" and any(p.name == name for p in params):
            raise BadSignature(f"main has two parameters named {name!r}")
        params.append(Param(name, type_[3:].strip() if variadic else type_, variadic))
    return tuple(params)


def _result(code: str, masked: str, at: int) -> str:
    rest = masked[at:].lstrip()
    at = len(masked) - len(rest)
    if rest.startswith("("):
        close = _closing(masked, at)
        results = _fields(_split(code[at + 1:close], masked[at + 1:close]), "results")
    else:
        body = masked.find("{", at)
        text = code[at:body if body >= 0 else len(code)].strip()
        results = [(None, text)] if text else []
    if len(results) != 2 or results[1][1] != "error":
        shown = ", ".join(t for _, t in results) or "nothing"
        raise BadSignature(f"main must return (result, error), e.g. `{EXAMPLE}`; it returns"
                           f" {shown}")
    return results[0][1]


def go_mod(version: str) -> str:
    """go.mod of the generated program: the toolchain's own language version (`go1.22.3` gives
    `go 1.22`), so the script may use every feature of the Go that compiles it."""
    m = re.match(r"go(\d+)\.(\d+)", version)
    lang = f"{m.group(1)}.{m.group(2)}" if m else "1.18"
    return f"module {MODULE}\n\ngo {lang}\n"


# Package inner's generated file: `GetoperateMain(args)` decodes each argument into its
# parameter's type (inferred from `main` by the generic `getoperateCall`) and calls `main`.
# `__TYPES__`, `__FORMALS__`, `__DECODE__` and `__CALL__` are filled in from the signature.
_CALL = '''// Code generated by getOperate (services/worker/languages/gowrap.py). DO NOT EDIT.

package inner

import getoperateJSON "encoding/json"

// GetoperateMain calls the script's main with the job's arguments, matched by name.
func GetoperateMain(args map[string]getoperateJSON.RawMessage) (interface{}, error) {
	return getoperateCall(main, args)
}

func getoperateCall[__TYPES__ any](f func(__FORMALS__) (R, error), args map[string]getoperateJSON.RawMessage) (interface{}, error) {
__DECODE__	return f(__CALL__)
}

type getoperateArgError struct {
	name string
	err  error
}

func (e getoperateArgError) Error() string {
	return "argument " + e.name + ": " + e.err.Error()
}

func getoperateArg(args map[string]getoperateJSON.RawMessage, name string, into interface{}) error {
	raw, ok := args[name]
	if !ok {
		return nil // a missing argument leaves its parameter's zero value
	}
	if err := getoperateJSON.Unmarshal(raw, into); err != nil {
		return getoperateArgError{name, err}
	}
	return nil
}
'''
_DECODE = '''	var a__I__ __TYPE__
	if err := getoperateArg(args, __NAME__, &a__I__); err != nil {
		return nil, err
	}
'''


def call_file(sig: Signature) -> str:
    """The generated file of package inner that calls `main` (see _CALL)."""
    ps = sig.params
    decode = "".join(
        _DECODE.replace("__I__", str(i))
        .replace("__TYPE__", ("[]" if p.variadic else "") + f"P{i}")
        .replace("__NAME__", json.dumps(p.name, ensure_ascii=False))  # a Go string literal
        for i, p in enumerate(ps))
    return (_CALL.replace("__TYPES__", ", ".join([*(f"P{i}" for i in range(len(ps))), "R"]))
            .replace("__FORMALS__", ", ".join(("..." if p.variadic else "") + f"P{i}"
                                              for i, p in enumerate(ps)))
            .replace("__DECODE__", decode)
            .replace("__CALL__", ", ".join(f"a{i}" + ("..." if p.variadic else "")
                                           for i, p in enumerate(ps))))


# package main: reads args.json, calls the script, writes {"ok", "result"|"error"} as JSON to
# the inherited fd named by its last argument; a panic fails the job, its stack in the logs.
MAIN = '''// Code generated by getOperate (services/worker/languages/gowrap.py). DO NOT EDIT.

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"

	"''' + MODULE + '''/inner"
)

func run() (result interface{}, err error) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "panic: %v\\n\\n%s", r, debug.Stack())
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	data, err := os.ReadFile("args.json")
	if err != nil {
		return nil, err
	}
	var args map[string]json.RawMessage
	if err := json.Unmarshal(data, &args); err != nil {
		return nil, fmt.Errorf("the job's arguments are not a JSON object: %w", err)
	}
	return inner.GetoperateMain(args)
}

func main() {
	fd, err := strconv.Atoi(os.Args[len(os.Args)-1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage: main <result fd>")
		os.Exit(2)
	}
	out := os.NewFile(uintptr(fd), "result")
	result, err := run()
	var text []byte
	if err == nil {
		text, err = json.Marshal(map[string]interface{}{"ok": true, "result": result})
		if err != nil {
			err = fmt.Errorf("the result is not JSON: %w", err)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		text, _ = json.Marshal(map[string]interface{}{"ok": false, "error": err.Error()})
	}
	out.Write(text)
	out.Close()
	if err != nil {
		os.Exit(1)
	}
}
'''


def sources(code: str, version: str) -> dict[str, str]:
    """Every file of the program that runs `code` (path -> text), or BadSignature."""
    sig = parse(code)
    return {"go.mod": go_mod(version), "main.go": MAIN, "inner/script.go": code,
            "inner/zz_getoperate.go": call_file(sig)}
