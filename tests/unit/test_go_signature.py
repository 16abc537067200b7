"""The Go signature parser (services/worker/languages/gowrap.py): names and types of `main`'s
parameters as Go groups them, and a clear error for every `main` that cannot take named
arguments."""

from __future__ import annotations

import pytest

from services.worker.languages.gowrap import (
    BadSignature,
    Param,
    Signature,
    call_file,
    go_mod,
    parse,
)


def sig(params: str, results: str = "(interface{}, error)", before: str = "") -> Signature:
    return parse(f"package inner\n\n{before}func main({params}) {results} {{\n\treturn nil, nil\n}}\n")


def test_simple_parameters_and_result() -> None:
    assert sig("x string, n int") == Signature(
        (Param("x", "string"), Param("n", "int")), "interface{}")
    assert sig("") == Signature((), "interface{}")
    assert sig("x string", "(map[string]int, error)").result == "map[string]int"


def test_grouped_names_share_the_next_type() -> None:
    assert sig("a, b int, c string").params == (
        Param("a", "int"), Param("b", "int"), Param("c", "string"))


def test_composite_and_qualified_types_keep_their_commas_and_spaces() -> None:
    params = sig("m map[string][]int, f func(a, b int) (int, error), p *big.Int,"
                 " s struct{ A, B int `json:\"a,b\"` }, c chan int, t time.Duration").params
    assert [p.name for p in params] == ["m", "f", "p", "s", "c", "t"]
    assert params[1].type == "func(a, b int) (int, error)"
    assert params[3].type == 'struct{ A, B int `json:"a,b"` }'
    assert params[4].type == "chan int"


def test_variadic_last_parameter() -> None:
    assert sig("prefix string, rest ...string").params[-1] == Param("rest", "string", True)


def test_comments_strings_and_multiline_lists() -> None:
    code = '''// Package inner: a comment with func main(bad) in it.
package inner

/* func main(nope) */
const doc = `
func main(not, this) error {
`

func main(
	name string, // the name (a, b)
	n int, /* count */
) (res interface{}, err error) {
	return name, nil
}
'''
    assert parse(code) == Signature((Param("name", "string"), Param("n", "int")), "interface{}")


def test_methods_called_main_are_not_main() -> None:
    code = ("package inner\n\ntype T struct{}\n\nfunc (T) main(z int) error { return nil }\n\n"
            "func main(x int) (int, error) {\n\treturn x, nil\n}\n")
    assert parse(code).params == (Param("x", "int"),)


@pytest.mark.parametrize(("code", "says"), [
    ("package main\n\nfunc main(x int) (int, error) { return x, nil }\n", "package inner"),
    ("func main(x int) (int, error) { return x, nil }\n", "no package clause"),
    ("package inner\n\nfunc Main(x int) (int, error) { return x, nil }\n", "no top-level"),
    ("package inner\n\nfunc main(string, int) (int, error) { return 0, nil }\n", "no names"),
    ("package inner\n\nfunc main(x int) int { return x }\n", "must return (result, error)"),
    ("package inner\n\nfunc main(x int) error { return nil }\n", "it returns error"),
    ("package inner\n\nfunc main(x int) { }\n", "it returns nothing"),
    ("package inner\n\nfunc main(x int) (int, string) { return x, \"\" }\n", "must return"),
    ("package inner\n\nfunc main[T any](x T) (T, error) { return x, nil }\n",
     "type parameters"),
    ("package inner\n\nfunc main(a ...int, b int) (int, error) { return 0, nil }\n",
     "last parameter may be variadic"),
    ("package inner\n\nfunc main(a int, a string) (int, error) { return 0, nil }\n",
     "two parameters named 'a'"),
    ("package inner\n\nfunc main(a, b) (int, error) { return 0, nil }\n", "no names"),
    ("package inner\n\nfunc main(a int, string) (int, error) { return 0, nil }\n",
     "have no type"),
    ("package inner\n\nfunc main(a int, []string) (int, error) { return 0, nil }\n",
     "mix named and unnamed"),
    ("package inner\n\nfunc main(a map[string]int (int, error) { return 0, nil }\n",
     "unclosed"),
    ("package inner\n\nfunc main(a int,, b int) (int, error) { return 0, nil }\n",
     "empty entry"),
])
def test_bad_signatures_say_what_is_wrong(code: str, says: str) -> None:
    with pytest.raises(BadSignature) as err:
        parse(code)
    assert says in str(err.value)
    assert isinstance(err.value, ValueError)  # the suite's InvalidInput


def test_the_generated_caller_names_every_parameter_and_spreads_a_variadic() -> None:
    text = call_file(sig("x string, rest ...int"))
    assert "func getoperateCall[P0, P1, R any](f func(P0, ...P1) (R, error)," in text
    assert 'getoperateArg(args, "x", &a0)' in text and "var a1 []P1" in text
    assert "return f(a0, a1...)" in text
    assert "getoperateCall[R any](f func() (R, error)," in call_file(sig(""))


def test_go_mod_follows_the_toolchain() -> None:
    assert go_mod("go1.19.8").endswith("go 1.19\n")
    assert go_mod("go1.27.3").endswith("go 1.27\n")
    assert go_mod("devel").endswith("go 1.18\n")
