"""deno and nativets: TypeScript whose exported `main` is called with the job's arguments.

Arguments are matched to `main`'s parameters by name (read from its source: TypeScript's types
are gone at run time) and are embedded in the wrapper, so a nativets job needs no file access at
all. deno jobs may read their own folder and use the network; nativets jobs only the network
(docs/languages.md). The runtime is the `deno` wheel's binary, else a deno on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from services.worker.languages import tsserver
from services.worker.languages.base import Context, Launch
from shared.jobs import Job

# Imports the user's module, calls main() and writes {"ok", "result"|"error"} as JSON to the
# inherited fd Deno.args[0]. `__ARGS__` is replaced by a JSON string literal of the arguments.
_WRAPPER = r'''
const out = (text: string) => Deno.writeTextFileSync(`/dev/fd/${Deno.args[0]}`, text);
try {
  const mod = await import("./script.ts");
  if (typeof mod.main !== "function") throw new Error("the script exports no main() function");
  const args = JSON.parse(__ARGS__);
  const result = await mod.main(...paramNames(mod.main).map((n: string) => args[n]));
  out(JSON.stringify({ ok: true, result: result === undefined ? null : result }));
} catch (e) {
  console.error(e);
  out(JSON.stringify({ ok: false, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) }));
  Deno.exit(1);
}
'''
# The warm server's I/O in deno (tsserver.py has the rest): the answer fd reopened by path.
_SERVER_IO = r'''
const fdNumber = Deno.args[Deno.args.length - 1];
const answers = Deno.openSync(`/dev/fd/${fdNumber}`, { write: true });
const writeAll = (bytes: Uint8Array) => {
  while (bytes.length) bytes = bytes.subarray(answers.writeSync(bytes));
};
const inspect = (value: unknown) => Deno.inspect(value);
const input = Deno.stdin.readable;
const exit = (code: number) => Deno.exit(code);
'''
_ENV = {"DENO_DIR": ".deno", "DENO_NO_UPDATE_CHECK": "1", "NO_COLOR": "1"}


def find_deno() -> str | None:
    try:
        from deno import find_deno_bin  # the `deno` wheel

        return find_deno_bin()
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("deno")
    if found is None:
        return None
    # What PATH names may be a wrapper (a version manager's shim) that cannot run in the
    # sandbox: ask deno for its own binary.
    try:
        out = subprocess.run([found, "eval", "console.log(Deno.execPath())"], capture_output=True,
                             text=True, timeout=30, env={**os.environ, "NO_COLOR": "1"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = out.stdout.strip()
    return path if out.returncode == 0 and os.path.isfile(path) else None


def wrapper(job: Job) -> bytes:
    return (tsserver.PARAM_NAMES + _WRAPPER).replace(
        "__ARGS__", json.dumps(json.dumps(job.args))).encode()


class Deno:
    name = "deno"
    how_to_get = "pip install deno (or getoperate's [languages] extra), or deno on PATH"
    permissions = ("--allow-read=.", "--allow-net", "--allow-write=/dev/fd")

    def find_runtime(self) -> str | None:
        return find_deno()

    async def launch(self, job: Job, ctx: Context) -> Launch:
        return Launch(
            argv=[ctx.runtime, "run", "--quiet", "--no-prompt", "--no-config", "--no-lock",
                  *self.permissions, "wrapper.ts"],
            files={"script.ts": job.code.encode(), "wrapper.ts": wrapper(job)}, env=dict(_ENV))

    async def warm_launch(self, job: Job, ctx: Context) -> Launch:
        """A dedicated script's long-lived server: loaded once, one `main` call per job."""
        return Launch(
            argv=[ctx.runtime, "run", "--quiet", "--no-prompt", "--no-config", "--no-lock",
                  *self.permissions, "server.ts"],
            files={"script.ts": job.code.encode(), "server.ts": tsserver.server(_SERVER_IO)},
            env=dict(_ENV))


class NativeTs(Deno):
    """TypeScript for network calls only: no file, environment or subprocess access (writing
    its own result pipe aside), so a native worker can run many at once."""

    name = "nativets"
    permissions = ("--allow-net", "--allow-write=/dev/fd")
