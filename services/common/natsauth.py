"""NATS users, one per service role, and what each may publish.

`getoperate up` generates a password per role into `<data dir>/nats-credentials.json` (mode
0600) and writes the matching `authorization` block into nats-server's config. Services take
NATS_USER / NATS_PASSWORD from the environment, else their role's entry in that file.

The lists deny what a role must never do; everything else (JetStream API calls, inboxes) is
allowed. A worker, the least trusted (it runs user code on arbitrary machines), can neither
publish config events nor put jobs on a queue directly, nor create, change, purge or delete
streams or their messages; it submits flow steps through a router like any client.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from shared import subjects

CREDENTIALS_FILE = "nats-credentials.json"
ROLES = ("config", "router", "worker", "admin")

_STREAM_ADMIN = [
    "$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>",
]
DENY_PUBLISH: dict[str, list[str]] = {
    "config": [subjects.JOBS_SUBJECTS, subjects.JOB_EVENTS_SUBJECTS, subjects.DEAD_SUBJECTS],
    "router": [subjects.CONFIG_SUBJECTS, subjects.DEAD_SUBJECTS],
    "worker": [subjects.CONFIG_SUBJECTS, subjects.JOBS_SUBJECTS, *_STREAM_ADMIN,
               "$KV.GO_CANCELS.>", "$O.>"],
    "admin": [],
}


def load_or_create(directory: Path) -> dict[str, str]:
    """The role -> password map of a data dir (created once, mode 0600)."""
    path = directory / CREDENTIALS_FILE
    if path.exists():
        return dict(json.loads(path.read_text()))
    directory.mkdir(parents=True, exist_ok=True)
    creds = {role: secrets.token_urlsafe(24) for role in ROLES}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds, fh)
    return creds


def config_block(creds: dict[str, str] | None = None) -> str:
    """nats-server `authorization` block for these credentials; without any, passwords are
    read by nats-server from $NATS_<ROLE>_PASSWORD (how compose.yaml passes them)."""
    users = []
    for role in ROLES:
        deny = ", ".join(json.dumps(s) for s in DENY_PUBLISH[role])
        perms = f"permissions: {{publish: {{deny: [{deny}]}}}}" if deny else ""
        sep = ", " if perms else ""
        password = json.dumps(creds[role]) if creds else f"$NATS_{role.upper()}_PASSWORD"
        users.append(f"    {{user: {role}, password: {password}{sep}{perms}}}")
    return "authorization {\n  users: [\n" + "\n".join(users) + "\n  ]\n}"


def credentials_for(role: str) -> tuple[str | None, str | None]:
    """NATS_USER/NATS_PASSWORD, else the role's entry in the data dir's credentials file."""
    user, password = os.environ.get("NATS_USER"), os.environ.get("NATS_PASSWORD")
    if user:
        return user, password
    directory = Path(os.environ.get("GETOPERATE_DATA_DIR") or ".getoperate")
    path = directory / CREDENTIALS_FILE
    if path.exists():
        try:
            return role, json.loads(path.read_text())[role]
        except (OSError, ValueError, KeyError):
            return None, None
    return None, None
