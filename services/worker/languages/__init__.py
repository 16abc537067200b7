"""Languages a worker runs jobs in: one module per language, and plugins.

A language turns a job into a `Launch` (the argv, the files of the job's folder, and how the
result comes back); the runner (runner.py) runs every launch the same way: in the sandbox, with
the group's limits, logs to the same place. Packages add languages through the entry-point group
`getoperate.languages` (docs/languages.md): each entry point names a `Language` class or instance.
Only languages whose runtime this worker found are offered; the others are reported with what to
install, and their jobs fail saying so.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

from services.worker.languages.base import Context, Language, Launch, PrepareFailed
from shared.tags import DEFAULT_GROUP_TAGS, LANGUAGE_TAGS, NATIVE_GROUP_TAGS

ENTRY_POINT_GROUP = "getoperate.languages"
# Languages the seeded groups listen to that getOperate does not bundle: plugins provide them.
NOT_BUNDLED: tuple[str, ...] = ("powershell", "mssql", "snowflake", "bigquery")
# Every other language with a default tag is built in (tests/unit/test_language_registry.py
# checks this against `_builtin()`), in the seeded groups' order.
BUILTIN: tuple[str, ...] = tuple(t for t in DEFAULT_GROUP_TAGS + NATIVE_GROUP_TAGS
                                 if t in LANGUAGE_TAGS and t not in NOT_BUNDLED)

__all__ = ["Context", "Language", "Launch", "PrepareFailed", "Registry", "registry",
           "ENTRY_POINT_GROUP", "NOT_BUNDLED", "BUILTIN"]


def _builtin() -> list[Language]:
    from services.worker.languages import bash, deno, graphql, python, sql
    from services.worker.languages import bun, go

    return [bash.Bash(), python.Python(), deno.Deno(), deno.NativeTs(),
            sql.Postgresql(), sql.Mysql(), graphql.GraphQL(), go.Go(), bun.Bun()]


class Registry:
    """The languages this worker knows: `found` (language -> its runtime's executable) and
    `missing` (language -> what to install), plus plugin load errors to log."""

    def __init__(self, languages: list[Language], errors: list[str] | None = None):
        self.languages: dict[str, Language] = {}
        self.found: dict[str, str] = {}
        self.missing: dict[str, str] = {}
        self.errors = list(errors or [])
        for lang in languages:
            if lang.name in self.languages:
                self.errors.append(f"language {lang.name!r} is provided twice; the first wins")
                continue
            self.languages[lang.name] = lang
            try:
                runtime = lang.find_runtime()
            except Exception as exc:  # a plugin's bug must not stop the worker
                self.errors.append(f"language {lang.name!r}: finding its runtime failed: {exc!r}")
                runtime = None
            if runtime:
                self.found[lang.name] = runtime
            else:
                self.missing[lang.name] = lang.how_to_get

    def get(self, name: str) -> Language | None:
        return self.languages.get(name) if name in self.found else None

    def unavailable(self, name: str) -> str:
        """Why a job in `name` cannot run here, naming what to install."""
        runs = ", ".join(sorted(self.found))
        why = f"no executor for language {name!r} on this worker (it runs {runs})"
        plugin = (f"a package that adds it (entry-point group {ENTRY_POINT_GROUP!r}:"
                  " docs/languages.md)")
        if name in self.missing:
            return f"{why}; install {self.missing[name]}"
        if name in NOT_BUNDLED:
            return f"{why}: {name} is not bundled with getOperate; install {plugin}"
        return f"{why}; install {plugin}"


def plugins() -> tuple[list[Language], list[str]]:
    """Languages that installed packages add, and why any failed to load."""
    found: list[Language] = []
    errors: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj: Any = ep.load()
            lang = obj() if isinstance(obj, type) else obj
            if not isinstance(getattr(lang, "name", None), str):
                raise TypeError("it has no `name`")
            found.append(lang)
        except Exception as exc:
            errors.append(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc!r}")
    return found, errors


@functools.cache
def registry() -> Registry:
    """Found once per worker process: built-in languages first, then plugins."""
    extra, errors = plugins()
    return Registry([*_builtin(), *extra], errors)
