"""bun: TypeScript whose exported `main` is called with the job's arguments, as deno's is.

Arguments are matched to `main`'s parameters by name (read from its source, as deno.py does) and
embedded in the wrapper, so they never reach a command line. The result goes back through the
inherited fd, reopened by path (`/dev/fd/N`) with Bun.write. bun keeps its install cache
(auto-installed npm packages) and its transpiler cache under $HOME/.bun unless told otherwise:
both are pointed into the job's own folder, or off, so a job writes nothing outside it even
without the sandbox (whose HOME is the job's folder anyway).

The runtime is `bun` on PATH, else $BUN_INSTALL/bin/bun (~/.bun/bin/bun, the official
installer's place), resolved to the real binary: npm's `bun` package links PATH to
node_modules/bun/bin/bun.exe, which its postinstall script replaces with the binary of the
optional dependency @oven/bun-linux-<arch>; where that script did not run, the binary is still
in the optional dependency's folder, and is used from there.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from services.worker.languages import tsserver
from services.worker.languages.base import Context, Launch
from shared.jobs import Job

# Imports the user's module, calls main() and writes {"ok", "result"|"error"} as JSON to the
# inherited fd named by the last argument. `__ARGS__` is a JSON string literal of the arguments.
_WRAPPER = r'''
const out = (text: string) => Bun.write(`/dev/fd/${process.argv[process.argv.length - 1]}`, text);
try {
  const mod = await import("./script.ts");
  if (typeof mod.main !== "function") throw new Error("the script exports no main() function");
  const args = JSON.parse(__ARGS__);
  const result = await mod.main(...paramNames(mod.main).map((n: string) => args[n]));
  await out(JSON.stringify({ ok: true, result: result === undefined ? null : result }));
} catch (e) {
  console.error(e);
  await out(JSON.stringify({ ok: false, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) }));
  process.exit(1);
}
'''
# Relative paths are the job's folder (its working directory). No transpiler cache: a job's
# folder goes with the job, so caching there would only cost writes.
_ENV = {"BUN_INSTALL_CACHE_DIR": ".bun", "BUN_RUNTIME_TRANSPILER_CACHE_PATH": "0",
        "DO_NOT_TRACK": "1", "NO_COLOR": "1"}


def _exec_path(candidate: str) -> str | None:
    """The binary `candidate` runs as (what bun itself says), or None if it does not run."""
    try:
        with tempfile.TemporaryDirectory() as where:
            out = subprocess.run([candidate, "-e", "console.log(process.execPath)"], cwd=where,
                                 capture_output=True, text=True, timeout=30,
                                 check=False, env={**os.environ, **_ENV})
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = out.stdout.strip()
    return path if out.returncode == 0 and os.path.isfile(path) else None


def _npm_binaries(link: str) -> list[str]:
    """The optional dependency's binary beside npm's bun package (nested or hoisted)."""
    package = Path(os.path.realpath(link)).parent.parent  # node_modules/bun/bin/bun.exe
    if package.name != "bun":
        return []
    return sorted(glob.glob(str(package / "node_modules" / "@oven" / "bun-linux-*" / "bin" / "bun"))
                  + glob.glob(str(package.parent / "@oven" / "bun-linux-*" / "bin" / "bun")))


def find_bun() -> str | None:
    home = os.environ.get("BUN_INSTALL") or os.path.expanduser("~/.bun")
    for candidate in (shutil.which("bun"), os.path.join(home, "bin", "bun")):
        if not candidate or not os.path.isfile(candidate):
            continue
        for binary in (candidate, *_npm_binaries(candidate)):
            found = _exec_path(binary)
            if found:
                return os.path.realpath(found)
    return None


def wrapper(job: Job) -> bytes:
    return (tsserver.PARAM_NAMES + _WRAPPER).replace(
        "__ARGS__", json.dumps(json.dumps(job.args))).encode()


# The warm server's I/O in bun (tsserver.py has the rest): the answer fd written directly.
_SERVER_IO = r'''
import { writeSync } from "node:fs";
const answerFd = Number(process.argv[process.argv.length - 1]);
const writeAll = (bytes: Uint8Array) => {
  let done = 0;
  while (done < bytes.length) done += writeSync(answerFd, bytes, done);
};
const inspect = (value: unknown) => Bun.inspect(value);
const input = Bun.stdin.stream();
const exit = (code: number) => process.exit(code);
'''



class Bun:
    name = "bun"
    how_to_get = "bun on PATH (npm install -g bun), or in $BUN_INSTALL/bin"

    def find_runtime(self) -> str | None:
        return find_bun()

    async def launch(self, job: Job, ctx: Context) -> Launch:
        return Launch(argv=[ctx.runtime, "run", "wrapper.ts"], env=dict(_ENV),
                      files={"script.ts": job.code.encode(), "wrapper.ts": wrapper(job)})

    async def warm_launch(self, job: Job, ctx: Context) -> Launch:
        """A dedicated script's long-lived server: loaded once, one `main` call per job."""
        return Launch(argv=[ctx.runtime, "run", "server.ts"], env=dict(_ENV),
                      files={"script.ts": job.code.encode(),
                             "server.ts": tsserver.server(_SERVER_IO)})
