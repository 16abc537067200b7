"""Language runtimes a worker can run jobs with: found once at start, reported in its heartbeat.

bash and python3 are always there (python3 is the worker's own interpreter). Others come from a
registry package installed next to the worker (`pip install '.[languages]'`: the `deno` wheel
ships the deno binary) or from PATH. A worker without a runtime still takes the language's jobs
from its tags and fails them naming what to install (runner.py).
"""

from __future__ import annotations

import shutil
import sys

ALWAYS = {"bash": "bash", "python3": sys.executable}
HOW_TO_GET = {"deno": "pip install deno (or getoperate's [languages] extra), or deno on PATH"}


def _deno() -> str | None:
    try:
        from deno import find_deno_bin  # the `deno` wheel

        return find_deno_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("deno")


def find() -> dict[str, str]:
    """language -> the runtime's executable, for every language this worker can run."""
    found = dict(ALWAYS)
    deno = _deno()
    if deno:
        found["deno"] = deno
    return found
