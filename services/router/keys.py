"""The routers' signing key for flow grants (shared/grants.py): held by routers, never by workers.

`GETOPERATE_ROUTER_KEY` when set (deployments: every router replica must have the same value,
from a secret store), else `<data dir>/router.key` (mode 0600), created by the first router that
finds none (`getoperate up`: routers of one data dir share it). Losing or changing the key only
refuses the remaining steps of flows that were running; nothing else depends on it.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from services.common.runtime import private_dir
from shared.errors import InvalidInput

KEY_ENV = "GETOPERATE_ROUTER_KEY"
KEY_FILE = "router.key"
MIN_KEY_CHARS = 32


class RouterKeyError(InvalidInput):
    """Raised when the router key is set but too short to sign with."""


def router_key(directory: Path) -> bytes:
    """The key from the environment, else from (or into) `directory/router.key`."""
    text = os.environ.get(KEY_ENV, "").strip()
    source = KEY_ENV
    if not text:
        path = directory / KEY_FILE
        text, source = _read_or_create(path), str(path)
    if len(text) < MIN_KEY_CHARS:
        raise RouterKeyError(
            f"the router key in {source} is {len(text)} characters long; use at least"
            f" {MIN_KEY_CHARS}, e.g. from"
            " python3 -c 'import secrets; print(secrets.token_urlsafe(32))'", field=KEY_ENV)
    return text.encode()


def _read_or_create(path: Path) -> str:
    """Read the key file, or create it atomically (two routers starting together agree: the
    second's link fails and it reads the first's)."""
    if path.exists():
        return path.read_text().strip()
    private_dir(path.parent, recursive=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path.read_text().strip()
