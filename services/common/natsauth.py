"""NATS users, one per service role, and what each may publish.

`getoperate up` generates a password per role into `<data dir>/nats-credentials.json` (mode
0600) and writes the matching `authorization` block into nats-server's config. Services take
NATS_USER / NATS_PASSWORD from the environment, else their role's entry in that file.

The services' lists deny what a role must never do. A worker, the least trusted (it runs user
code on arbitrary machines), gets an allow list instead: exactly the subjects its work needs
(its JetStream reads, consumers and pulls, acks, heartbeats, job events, dead letters, and
submitting flow steps through a router), with the deny list on top. So it can neither publish
config events nor put jobs on a queue directly, nor create, change, purge or delete streams or
their messages, nor publish anywhere it was not meant to (another service's subjects, `$SYS`).
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
# The worker's whole publish surface; anything else is a permissions violation.
ALLOW_PUBLISH: dict[str, list[str]] = {
    "worker": [
        "$JS.API.INFO", "$JS.API.STREAM.INFO.>", "$JS.API.STREAM.MSG.GET.>",
        "$JS.API.DIRECT.GET.>",  # waiting for streams, bucket lookups, a job's last event
        "$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>",
        "$JS.API.CONSUMER.INFO.>",  # tag consumers, config follow, bucket watches
        f"$JS.API.CONSUMER.DELETE.{subjects.CONFIG_STREAM}.>",
        f"$JS.API.CONSUMER.DELETE.{subjects.JOB_EVENTS_STREAM}.>",
        f"$JS.API.CONSUMER.DELETE.KV_{subjects.WORKERS_BUCKET}.>",
        "$JS.API.CONSUMER.DELETE.KV_GO_CANCELS.>",  # its own ephemeral consumers, on unsubscribe
        f"$JS.API.CONSUMER.MSG.NEXT.{subjects.JOBS_STREAM}.>",  # pulls of jobs,
        f"$JS.API.CONSUMER.MSG.NEXT.{subjects.JOB_EVENTS_STREAM}.>",  # of a job's history
        "$JS.ACK.>", "$JS.FC.>",  # acks, in-progress, naks; flow control of push consumers
        f"$KV.{subjects.WORKERS_BUCKET}.>",  # heartbeats
        subjects.JOB_EVENTS_SUBJECTS, subjects.DEAD_SUBJECTS, subjects.SUBMIT_SUBJECT,
    ],
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
        rules = [f"{kind}: [{', '.join(json.dumps(s) for s in subjects_)}]"
                 for kind, subjects_ in (("allow", ALLOW_PUBLISH.get(role, [])),
                                         ("deny", DENY_PUBLISH[role])) if subjects_]
        perms = f"permissions: {{publish: {{{', '.join(rules)}}}}}" if rules else ""
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
