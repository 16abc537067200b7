"""A worker's own folder: what it keeps of each run, and removing what a job left, however odd."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from shared.errors import InvalidInput


class Workspace:
    """A worker's folders: `jobs/<run>` (a job's own, the only thing it sees) and `out/<run>`
    (the worker's log and result files of that run, never visible to it)."""

    def __init__(self, root: Path, uid: int | None):
        self.root = root
        self.uid = uid
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = root.lstat()
        if root.is_symlink() or info.st_uid != os.geteuid():
            raise InvalidInput(f"WORKER_DIR {root} is a symlink or belongs to another user;"
                               " the worker keeps its jobs only in a folder of its own",
                               field="WORKER_DIR")
        for d in (root, root / "jobs", root / "out"):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)

    def job_dir(self, name: str, files: dict[str, bytes]) -> Path:
        """A host folder for an unsandboxed run (bwrap runs get a tmpfs instead)."""
        d = self.root / "jobs" / name
        d.mkdir(mode=0o700)
        for file, data in files.items():
            (d / file).write_bytes(data)
        return d

    def out(self, name: str) -> Path:
        return self.root / "out" / name

    def clean(self, name: str) -> None:
        """Remove a run's folder and files, however deep or odd what the job left there."""
        for suffix in (".log",):
            try:
                (self.root / "out" / f"{name}{suffix}").unlink()
            except OSError:
                pass
        remove_tree(self.root / "jobs" / name)


def remove_tree(path: Path) -> None:
    """rmtree, falling back to `rm -rf` where Python cannot (a tree deeper than its recursion
    limit: a job can make one)."""
    if not path.exists():
        return
    try:
        shutil.rmtree(path)
    except Exception:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)],
                       stdin=subprocess.DEVNULL, capture_output=True)
