"""python3: the script's `main(**args)` is called; its return value is the result.

Dependencies (shared/pydeps.py): a deployed script's job carries the lock its dependency job
resolved; an inline script, or a deployed one whose lock is not in yet, is locked here (cached).
Either way the job runs with the lock's cached virtual environment, mounted read-only; a script
that needs nothing runs with the worker's own interpreter, with no environment to build.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from services.worker.languages.base import Context, Launch, PrepareFailed, args_json
from services.worker.pyenv import PythonEnvs, ResolveFailed
from shared import pydeps
from shared.errors import InvalidInput
from shared.jobs import Job

# Runs the user's module; writes {"ok", "result"|"error"} as JSON to the inherited fd argv[1].
WRAPPER = r'''
import importlib.util, json, os, sys, traceback
out = os.fdopen(int(sys.argv[1]), "w")
spec = importlib.util.spec_from_file_location("main_script", "script.py")
try:
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open("args.json") as fh:
        args = json.load(fh)
    if not hasattr(mod, "main"):
        raise RuntimeError("the script defines no main() function")
    result = mod.main(**args)
    text = json.dumps({"ok": True, "result": result}, default=str)
except BaseException as exc:
    traceback.print_exc()
    text = json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
out.write(text)
out.close()
sys.exit(0 if text.startswith('{"ok": true') else 1)
'''


@functools.cache
def _envs(cache: Path) -> PythonEnvs:
    return PythonEnvs(cache)


async def lock_for(code: str, ctx: Context) -> tuple[tuple[str, ...], str | None]:
    """(requirements, their lock) of a script; no lock when it needs nothing."""
    try:
        wanted = pydeps.requirements(code)
        return wanted, (await _envs(ctx.cache).lock(wanted, ctx.timeout) if wanted else None)
    except (InvalidInput, ResolveFailed) as exc:
        raise PrepareFailed(f"the script's dependencies could not be resolved: {exc}") from exc


async def interpreter(job: Job, ctx: Context) -> tuple[str, tuple[str, ...]]:
    """The python to run `job` with, and the folder to mount for it (its environment)."""
    lock = job.lock
    if lock is None:
        _, lock = await lock_for(job.code, ctx)
    if not lock:
        return ctx.runtime, ()
    try:
        env = await _envs(ctx.cache).environment(lock, ctx.timeout)
    except ResolveFailed as exc:
        raise PrepareFailed(f"the script's dependencies could not be installed: {exc}") from exc
    return str(env / "bin" / "python"), (str(env),)


class Python:
    name = "python3"
    how_to_get = "python3 (the worker's own interpreter)"

    def find_runtime(self) -> str | None:
        return sys.executable

    async def launch(self, job: Job, ctx: Context) -> Launch:
        python, ro = await interpreter(job, ctx)
        return Launch(argv=[python, "-c", WRAPPER], ro=ro,
                      files={"script.py": job.code.encode(), "args.json": args_json(job)})

    async def resolve(self, job: Job, ctx: Context) -> dict[str, object]:
        """A dependency job: the lock of the script in `job.code` (its result)."""
        wanted, lock = await lock_for(job.code, ctx)
        return {"requirements": list(wanted), "lock": lock}
