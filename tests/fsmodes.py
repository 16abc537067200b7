"""File-mode checks shared by the unit and integration tests of secrets at rest."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def loose(root: Path) -> list[str]:
    """Everything under `root` (itself included) that group or others may read, write or enter."""
    found = []
    for path in [root, *root.rglob("*")]:
        try:
            st = os.lstat(path)
        except FileNotFoundError:  # a temporary file renamed away while we walked (nats-server)
            continue
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.filemode(st.st_mode)}")
    return found
