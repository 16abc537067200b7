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
  const src = mod.main.toString();
  const names = src.slice(src.indexOf("(") + 1, src.indexOf(")")).split(",")
    .map((p: string) => p.trim().replace(/^\.\.\./, "").split(/[\s=:?]/)[0]).filter(Boolean);
  const result = await mod.main(...names.map((n: string) => args[n]));
  out(JSON.stringify({ ok: true, result: result === undefined ? null : result }));
} catch (e) {
  console.error(e);
  out(JSON.stringify({ ok: false, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) }));
  Deno.exit(1);
}
'''
# The warm (dedicated) server: services/worker/warm.py has the protocol. Console output is kept
# per job and sent with its answer; stdout and stderr themselves are not read.
_SERVER = r'''
const [kind, fdNumber] = Deno.args.slice(-2);
const out = Deno.openSync(`/dev/fd/${fdNumber}`, { write: true });
const encoder = new TextEncoder();
const send = (value: unknown) => {
  let text: string;
  try { text = JSON.stringify(value); } catch (e) {
    const v = value as { id?: string };
    text = JSON.stringify({ id: v.id, ok: false, error: `result is not JSON: ${e}`, logs: "" });
  }
  let bytes = encoder.encode(text + "\n");
  while (bytes.length) bytes = bytes.subarray(out.writeSync(bytes));
};
let logs: string[] = [];
const keep = (...parts: unknown[]) => {
  logs.push(parts.map((p) => typeof p === "string" ? p : Deno.inspect(p)).join(" "));
};
console.log = console.info = console.warn = console.error = console.debug = keep;
const text = () => { const t = logs.length ? logs.join("\n") + "\n" : ""; logs = []; return t.slice(-262144); };
const failure = (e: unknown) => e instanceof Error ? `${e.name}: ${e.message}` : String(e);
let main: (...args: unknown[]) => unknown;
let names: string[];
try {
  const mod = await import("./script.ts");
  if (typeof mod.main !== "function") throw new Error("the script exports no main() function");
  main = mod.main;
  const src = main.toString();
  names = src.slice(src.indexOf("(") + 1, src.indexOf(")")).split(",")
    .map((p: string) => p.trim().replace(/^\.\.\./, "").split(/[\s=:?]/)[0]).filter(Boolean);
  send({ ready: true, logs: text() });
} catch (e) {
  send({ ready: false, error: failure(e), logs: text() + String((e as Error)?.stack ?? "") });
  Deno.exit(1);
}
const decoder = new TextDecoder();
let pending = "";
for await (const chunk of Deno.stdin.readable) {
  pending += decoder.decode(chunk, { stream: true });
  let end;
  while ((end = pending.indexOf("\n")) >= 0) {
    const request = JSON.parse(pending.slice(0, end));
    pending = pending.slice(end + 1);
    logs = [];
    try {
      const result = await main(...names.map((n) => request.args[n]));
      send({ id: request.id, ok: true, result: result === undefined ? null : result, logs: text() });
    } catch (e) {
      keep(String((e as Error)?.stack ?? e));
      send({ id: request.id, ok: false, error: failure(e), logs: text() });
    }
  }
}
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
    return _WRAPPER.replace("__ARGS__", json.dumps(json.dumps(job.args))).encode()


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
            files={"script.ts": job.code.encode(), "server.ts": _SERVER.encode()},
            env=dict(_ENV))


class NativeTs(Deno):
    """TypeScript for network calls only: no file, environment or subprocess access (writing
    its own result pipe aside), so a native worker can run many at once."""

    name = "nativets"
    permissions = ("--allow-net", "--allow-write=/dev/fd")
