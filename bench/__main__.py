"""`python -m bench [--quick] [--json] [--only NAME]`: run the benchmarks, print a table, and (full
runs) write docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench import (authz, batch, coldbash, dedicated, drain, endtoend, flows, history, idle,
                   languages, querylanguages, reads, reload, router, sandbox, scale)

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
    "querylanguages": querylanguages.run,
    "drain": drain.run,
    "reads": reads.run,
    "batch": batch.run,
    "flows": flows.run,
    "scale": scale.run,
}
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| what | measured (median, min-max) | baseline (same run) | ratio | target | met |"
             " bounded by |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        spread = f" ({r['min']}-{r['max']})" if r.get("repeats", 1) > 1 else ""
        # A row compared with a fixed figure says so: it has no baseline from the same run.
        base = (f"{r['baseline']} ({r['baseline_name']})" if r.get("same_run", True)
                else f"none: compared with {r['baseline_name']} ({r['baseline']})")
        lines.append(
            f"| {r['name']} | {r['value']} {r['unit']}{spread} | {base} "
            f"| {r['ratio']} | {r['target']} | {'yes' if r['met'] else 'no'} | {r['bound']} |")
    return "\n".join(lines)


def median_rows(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Row i of each repeat, as the repeat whose value is the median (its name, baseline, ratio
    and met go with it), plus the min and max of the values and how many repeats there were."""
    out = []
    for same in zip(*runs):
        ordered = sorted(same, key=lambda r: r["value"])
        row = dict(ordered[(len(ordered) - 1) // 2])
        row.update(min=ordered[0]["value"], max=ordered[-1]["value"], repeats=len(ordered))
        out.append(row)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a few minutes at most)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs of each group, reported as the median with min-max (default 3,"
                             " 1 with --quick)")
    ns = parser.parse_args()
    repeats = ns.repeats or (1 if ns.quick else 3)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    failed = False
    for name in ns.only or BENCHES:
        try:
            rows += median_rows([BENCHES[name](quick=ns.quick) for _ in range(repeats)])
        except Exception as exc:  # the other groups' results still count, and this shows
            failed = True
            print(f"[bench] {name}: FAILED: {exc!r}", file=sys.stderr, flush=True)
            rows.append(failed_row(name, exc))
    if ns.json:
        print(json.dumps({"quick": ns.quick, "seconds": round(time.monotonic() - started, 1),
                          "commit": commit(), "rows": rows}))
    else:
        print(table(rows))
    if not ns.quick and not ns.only:
        write_doc(rows)
    return 1 if failed else 0


def failed_row(name: str, exc: BaseException) -> dict[str, Any]:
    """A group that raised: a row that says so, in the table and the JSON (met: false)."""
    return {"name": f"{name}: the benchmark failed", "value": 0, "unit": "", "baseline": "-",
            "baseline_name": f"error: {exc!r}"[:300], "ratio": 0, "target": "-", "met": False,
            "bound": "see the run's output"}


def commit() -> str:
    """The commit measured (with `+` when the tree had changes), stamped on the results."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")


def write_doc(rows: list[dict[str, Any]]) -> None:
    text = DOC.read_text() if DOC.exists() else ""
    marker = "<!-- bench:results -->"
    machine = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    block = (f"{marker}\nLast full run: {time.strftime('%Y-%m-%d')} on {machine}, commit"
             f" {commit()}, command `python -m bench` (each group run {rows[0].get('repeats', 1)}"
             f" times: the median, and min-max).\n\n{table(rows)}\n{marker}")
    if text.count(marker) == 2:
        head, _, rest = text.partition(marker)
        _, _, tail = rest.partition(marker)
        DOC.write_text(head + block + tail)
    else:
        DOC.write_text(text + ("\n" if text else "") + block + "\n")


if __name__ == "__main__":
    sys.exit(main())
