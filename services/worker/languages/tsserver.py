"""TypeScript shared by the deno, nativets and bun languages: how `main`'s parameters are named,
and the warm (dedicated) server. Each runtime supplies only its I/O (a prelude); the rest is one
program, so the two runtimes cannot drift apart in how they call a script.
"""

from __future__ import annotations

# `main`'s parameter names, read from its source (TypeScript's types are gone at run time), so
# arguments are passed by name: `main(name: string, n = 2)` gets args.name and args.n.
PARAM_NAMES = r'''
const paramNames = (fn: (...a: unknown[]) => unknown): string[] => {
  const src = fn.toString();
  return src.slice(src.indexOf("(") + 1, src.indexOf(")")).split(",")
    .map((p: string) => p.trim().replace(/^\.\.\./, "").split(/[\s=:?]/)[0]).filter(Boolean);
};
'''

# The warm server (protocol: services/worker/warm.py). The prelude defines `writeAll(bytes)` (to
# the answer fd), `inspect(value)`, `input` (stdin as a stream of byte chunks) and `exit(code)`.
# Console output is kept per job and sent with its answer; stdout itself is not read.
_SERVER = PARAM_NAMES + r'''
const encoder = new TextEncoder();
const send = (value: { id?: string }) => {
  let text: string;
  try { text = JSON.stringify(value); } catch (e) {
    text = JSON.stringify({ id: value.id, ok: false, error: `result is not JSON: ${e}`, logs: "" });
  }
  writeAll(encoder.encode(text + "\n"));
};
let logs: string[] = [];
const keep = (...parts: unknown[]) => {
  logs.push(parts.map((p) => typeof p === "string" ? p : inspect(p)).join(" "));
};
console.log = console.info = console.warn = console.error = console.debug = keep;
const taken = () => {
  const t = logs.length ? logs.join("\n") + "\n" : "";
  logs = [];
  return t.slice(-262144);
};
const failure = (e: unknown) => e instanceof Error ? `${e.name}: ${e.message}` : String(e);
let main: (...args: unknown[]) => unknown = () => null;
let names: string[] = [];
try {
  const mod = await import("./script.ts");
  if (typeof mod.main !== "function") throw new Error("the script exports no main() function");
  main = mod.main;
  names = paramNames(main);
  send({ ready: true, logs: taken() } as { id?: string });
} catch (e) {
  send({ ready: false, error: failure(e), logs: taken() + String((e as Error)?.stack ?? "") } as { id?: string });
  exit(1);
}
const decoder = new TextDecoder();
let pending = "";
for await (const chunk of input) {
  pending += decoder.decode(chunk, { stream: true });
  let end;
  while ((end = pending.indexOf("\n")) >= 0) {
    const request = JSON.parse(pending.slice(0, end));
    pending = pending.slice(end + 1);
    logs = [];
    try {
      const result = await main(...names.map((n) => request.args[n]));
      send({ id: request.id, ok: true, result: result === undefined ? null : result, logs: taken() } as { id?: string });
    } catch (e) {
      keep(String((e as Error)?.stack ?? e));
      send({ id: request.id, ok: false, error: failure(e), logs: taken() } as { id?: string });
    }
  }
}
'''


def server(prelude: str) -> bytes:
    """The warm server's source for a runtime whose I/O `prelude` defines."""
    return (prelude + _SERVER).encode()
