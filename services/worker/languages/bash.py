"""bash: the script runs as is; its positional arguments are the job's argument values in
order, and its result is the last line it writes to stdout."""

from __future__ import annotations

import json
from typing import Any

from services.worker.languages.base import Context, Launch
from shared.jobs import Job

# Positional arguments come from a NUL-separated file in the job's folder, never from argv (where
# every process of the machine could read them).
_WRAPPER = ('mapfile -d "" -t __go_args < .args; set -- "${__go_args[@]}"; unset __go_args;'
            ' . ./script.sh')


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class Bash:
    name = "bash"
    how_to_get = "bash (Debian package bash)"

    def find_runtime(self) -> str | None:
        return "bash"

    async def launch(self, job: Job, ctx: Context) -> Launch:
        args = b"".join(_text(v).encode().replace(b"\0", b"") + b"\0" for v in job.args.values())
        return Launch(argv=[ctx.runtime, "-c", _WRAPPER, "script.sh"],
                      files={"script.sh": job.code.encode(), ".args": args}, result="stdout")
