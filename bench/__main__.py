"""`python -m bench [--quick] [--json] [--only NAME]`: run the benchmarks, print a table, and (full
runs) write docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench import (authz, coldbash, dedicated, drain, endtoend, history, idle, languages, reads,
                   reload, router, sandbox)

BENCHES: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "router": router.run,
    "authz": authz.run,
    "coldbash": coldbash.run,
    "endtoend": endtoend.run,
    "dedicated": dedicated.run,
    "history": history.run,
    "idle": idle.run,
    "reload": reload.run,
    "sandbox": sandbox.run,
    "languages": languages.run,
    "drain": drain.run,
    "reads": reads.run,
}
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| what | measured | baseline (same run) | ratio | target | met | bounded by |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['value']} {r['unit']} | {r['baseline']} ({r['baseline_name']}) "
            f"| {r['ratio']} | {r['target']} | {'yes' if r['met'] else 'no'} | {r['bound']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a few minutes at most)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    ns = parser.parse_args()
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    for name in ns.only or BENCHES:
        rows += BENCHES[name](quick=ns.quick)
    if ns.json:
        print(json.dumps({"quick": ns.quick, "seconds": round(time.monotonic() - started, 1),
                          "rows": rows}))
    else:
        print(table(rows))
    if not ns.quick and not ns.only:
        write_doc(rows)
    return 0


def write_doc(rows: list[dict[str, Any]]) -> None:
    text = DOC.read_text() if DOC.exists() else ""
    marker = "<!-- bench:results -->"
    machine = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    block = (f"{marker}\nLast full run: {time.strftime('%Y-%m-%d')} on {machine}, "
             f"command `python -m bench`.\n\n{table(rows)}\n{marker}")
    if text.count(marker) == 2:
        head, _, rest = text.partition(marker)
        _, _, tail = rest.partition(marker)
        DOC.write_text(head + block + tail)
    else:
        DOC.write_text(text + ("\n" if text else "") + block + "\n")


if __name__ == "__main__":
    sys.exit(main())
