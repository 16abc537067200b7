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

# What both the wrapper and the warm server call main with: the job's arguments, less a flow's
# `previous_result` where main does not take it (services/worker/flows.py passes it to every
# step from the second on).
_ACCEPTED = r'''
def accepted(fn, args):
    # A flow step gets `previous_result`; a main that does not take it is called without it.
    if "previous_result" not in args:
        return args
    code = getattr(fn, "__code__", None)
    if code is not None:  # a plain function: its code says (importing inspect costs 13 ms)
        names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        if "previous_result" in names or code.co_flags & 0x08:  # CO_VARKEYWORDS: **kwargs
            return args
        return {k: v for k, v in args.items() if k != "previous_result"}
    import inspect
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return args
    if any(p.name == "previous_result" or p.kind == p.VAR_KEYWORD for p in params):
        return args
    return {k: v for k, v in args.items() if k != "previous_result"}
'''

# JSON for the cold wrapper without importing json (whose `re` costs 9 ms a cold job): json's own
# C scanner and encoder, set up as json.loads and json.dumps(default=str) set them up; any
# interpreter where that does not hold (no `_json`, another signature) uses json itself.
_CODEC = r'''
def _codec():
    try:
        import _json

        class _Scanning:
            strict = True
            object_hook = object_pairs_hook = None
            parse_float, parse_int = float, int
            parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                              "NaN": float("nan")}.__getitem__

        scan = _json.make_scanner(_Scanning())
        blank = " \t\n\r"

        def loads(text):
            value, end = scan(text, len(text) - len(text.lstrip(blank)))
            if text[end:].strip(blank):
                raise ValueError("extra data after the JSON value")
            return value

        def dumps(value):
            encode = _json.make_encoder({}, str, _json.encode_basestring_ascii, None, ": ",
                                        ", ", False, False, True)
            return "".join(encode(value, 0))

        probe = {"a": [1.5, None, True, "\u00e9", float("inf")]}
        if (dumps(probe) != '{"a": [1.5, null, true, "\\u00e9", Infinity]}'
                or loads(' {"a": [1, 2.5]} ') != {"a": [1, 2.5]}):
            raise ValueError("not json's behaviour")
        return loads, dumps
    except Exception:
        import json
        return json.loads, lambda value: json.dumps(value, default=str)

loads, dumps = _codec()
'''

# Runs the user's module; writes {"ok", "result"|"error"} as JSON to the inherited fd argv[1].
# It imports as little as it can: every module is paid by every cold job (importlib.util,
# inspect, traceback and json's `re` cost 37 ms together on the bench machine, python itself
# 12 ms), so the script runs as a plain module, JSON goes through json's C core (`_json`, the
# same scanner and encoder json.loads/json.dumps use) and the rest is imported where needed.
WRAPPER = r'''
import os, sys
''' + _ACCEPTED + _CODEC + r'''
out = os.fdopen(int(sys.argv[1]), "w")
try:
    mod = type(sys)("main_script")
    mod.__file__ = "script.py"
    sys.modules["main_script"] = mod  # as an imported module: pickle, dataclasses find it
    with open("script.py", "rb") as fh:
        code = compile(fh.read(), "script.py", "exec")
    exec(code, mod.__dict__)
    with open("args.json") as fh:
        args = loads(fh.read())
    if not hasattr(mod, "main"):
        raise RuntimeError("the script defines no main() function")
    result = mod.main(**accepted(mod.main, args))
    text = dumps({"ok": True, "result": result})
except BaseException as exc:
    import traceback
    traceback.print_exc()
    text = dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
out.write(text)
out.close()
sys.exit(0 if text.startswith('{"ok": true') else 1)
'''

# The warm (dedicated) server: services/worker/warm.py has the protocol.
SERVER = r'''
import contextlib, importlib.util, inspect, io, json, os, signal, sys, threading, traceback
''' + _ACCEPTED + r'''
out = os.fdopen(int(sys.argv[-1]), "w", buffering=1)
own_namespace = sys.argv[-2] == "bwrap"
MAX_LOGS, MAX_REPLY = 256 * 1024, 8 * 1024 * 1024

def kill_leftovers():
    # In its own PID namespace every process but bwrap's init (1) and this one is something a
    # job started: end it with the job, as a cold job's would be (and reap our own children).
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (1, os.getpid()):
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
    reap()

def reap():
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass

spec = importlib.util.spec_from_file_location("main_script", "script.py")
mod = importlib.util.module_from_spec(spec)
buf = io.StringIO()
try:
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        spec.loader.exec_module(mod)
    if not hasattr(mod, "main"):
        raise RuntimeError("the script defines no main() function")
    out.write(json.dumps({"ready": True, "logs": buf.getvalue()[-MAX_LOGS:]}) + "\n")
    base_threads = threading.active_count()
except BaseException as exc:
    out.write(json.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}",
                          "logs": (buf.getvalue() + traceback.format_exc())[-MAX_LOGS:]}) + "\n")
    sys.exit(1)
base_env = dict(os.environ)
for line in sys.stdin:
    req = json.loads(line)
    os.environ.clear()  # what one job set in its environment is not the next job's
    os.environ.update(base_env)
    os.environ.update(req.get("env", {}))
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            result = mod.main(**accepted(mod.main, req["args"]))
        logs = buf.getvalue()[-MAX_LOGS:]
        try:
            text = json.dumps({"id": req["id"], "ok": True, "result": result, "logs": logs},
                              default=str)
        except ValueError as exc:
            text = json.dumps({"id": req["id"], "ok": False,
                               "error": f"result is not JSON: {exc}", "logs": logs})
    except BaseException as exc:
        text = json.dumps({"id": req["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}",
                           "logs": (buf.getvalue() + traceback.format_exc())[-MAX_LOGS:]})
    if len(text) > MAX_REPLY:
        text = json.dumps({"id": req["id"], "ok": False, "error": f"the result is {len(text)}"
                           f" bytes of JSON; the limit is {MAX_REPLY}",
                           "logs": buf.getvalue()[-65536:]})
    if own_namespace:
        kill_leftovers()
    # A thread the job left would run on after it (and see later jobs): end this runtime instead.
    ending = threading.active_count() > base_threads
    if ending:
        text = text[:-1] + ', "ending": true}'
    out.write(text + "\n")
    if ending:
        out.flush()
        os._exit(0)
'''


@functools.cache
def _envs(cache: Path) -> PythonEnvs:
    return PythonEnvs(cache)


async def lock_for(job: Job, ctx: Context) -> tuple[tuple[str, ...], str | None]:
    """(requirements, their lock) of a job's script; no lock when it needs nothing. Cached per
    workspace, except for a dependency job, whose lock is resolved afresh."""
    try:
        wanted = pydeps.requirements(job.code)
        if not wanted:
            return wanted, None
        return wanted, await _envs(ctx.cache).lock(
            wanted, ctx.timeout, scope=job.workspace, fresh=job.kind == "dependency",
            network=ctx.network)
    except (InvalidInput, ResolveFailed) as exc:
        raise PrepareFailed(f"the script's dependencies could not be resolved: {exc}") from exc


async def interpreter(job: Job, ctx: Context) -> tuple[str, tuple[str, ...]]:
    """The python to run `job` with, and the folder to mount for it (its environment)."""
    lock = job.lock
    if lock is None:
        _, lock = await lock_for(job, ctx)
    if not lock:
        return ctx.runtime, ()
    try:
        env = await _envs(ctx.cache).environment(lock, ctx.timeout, network=ctx.network)
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
        # A script that needs no package gets the standard library only (-S: no site-packages,
        # no .pth start-up work, about 20 ms less per job; -I: nothing from the environment or
        # the working directory on its path). One that needs packages gets its environment's.
        flags = ["-I", "-S"] if not ro else ["-I"]
        return Launch(argv=[python, *flags, "-c", WRAPPER], ro=ro,
                      files={"script.py": job.code.encode(), "args.json": args_json(job)})

    async def warm_launch(self, job: Job, ctx: Context) -> Launch:
        """A dedicated script's long-lived server, in the script's environment."""
        python, ro = await interpreter(job, ctx)
        return Launch(argv=[python, "-c", SERVER], ro=ro, files={"script.py": job.code.encode()})

    async def resolve(self, job: Job, ctx: Context) -> dict[str, object]:
        """A dependency job: the lock of the script in `job.code` (its result)."""
        wanted, lock = await lock_for(job, ctx)
        return {"requirements": list(wanted), "lock": lock}
