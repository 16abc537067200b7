"""Language runtimes a worker can run jobs with: found once at start, reported in its heartbeat.

bash and python3 are always there (python3 is the worker's own interpreter). Others come from a
registry package installed next to the worker (`pip install '.[languages]'`: the `deno` wheel
ships the deno binary) or from PATH. A worker without a runtime still takes the language's jobs
from its tags and fails them naming what to install (runner.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ALWAYS = {"bash": "bash", "python3": sys.executable}
HOW_TO_GET = {"deno": "pip install deno (or getoperate's [languages] extra), or deno on PATH"}


def _deno() -> str | None:
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


def find() -> dict[str, str]:
    """language -> the runtime's executable, for every language this worker can run."""
    found = dict(ALWAYS)
    deno = _deno()
    if deno:
        found["deno"] = deno
    return found
