"""docs/cli.md, generated from the argparse parser itself so the reference cannot drift from the
code (tests/unit/test_cli_docs.py checks it is current). `python -m cli.docs > docs/cli.md`."""

from __future__ import annotations

import argparse
import os
import sys

from cli.client import EXIT_FAILED, EXIT_UNKNOWN, EXIT_UNREACHABLE, EXIT_USAGE, EXIT_WAITING

HEAD = f"""# Command line reference

Generated from the parser by `python -m cli.docs > docs/cli.md`; a test keeps it current.
Every command and subcommand takes `--help`.

## Exit codes

| code | meaning |
|---|---|
| 0 | done (for `run --wait` and `job --wait`: the job succeeded) |
| {EXIT_FAILED} | the job failed or was cancelled, or a service refused the request (the reason is one line on stderr) |
| {EXIT_USAGE} | bad usage or invalid input (argparse errors, a malformed `--arg`, a field the service rejected) |
| {EXIT_UNREACHABLE} | a service could not be reached (after retries for reads) |
| {EXIT_UNKNOWN} | `run` only: the submission's outcome is unknown (the router took it and did not confirm, after `--retry-for` seconds of repeats); the job may run: the message names its key, and repeating the command with `--idempotency-key KEY` finds it and never queues a second one |
| {EXIT_WAITING} | `run --wait` and `job --wait`: `--timeout` passed and the job has not ended (still queued or running); it goes on: `getoperate job ID --wait` waits again |

Errors are one line on stderr, `getoperate: error: ...`; results go to stdout (`--json` where
offered gives one JSON document).

## Progress

Long operations report on stderr, never on stdout: `up` prints each step as it starts services;
`run --wait` and `job --wait` print a line when a job is still queued or running after 2 s and
at each change (which tag it waits on, which worker runs it, and `worker lost (<id>), waiting for
redelivery to another worker` once that worker's heartbeat is gone); `verify` says what it is checking;
`events --follow` streams as events arrive; `run` says each time it repeats a submission.
"""


def _walk(parser: argparse.ArgumentParser, path: list[str]):  # type: ignore[no-untyped-def]
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, path + [name])


def markdown() -> str:
    from cli.main import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix it for a stable file
    try:
        parts = [HEAD]
        for path, parser in _walk(build_parser(), ["getoperate"]):
            parser.prog = " ".join(path)
            parts.append(f"## `{' '.join(path)}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
        return "\n".join(parts)
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


if __name__ == "__main__":
    sys.stdout.write(markdown())
