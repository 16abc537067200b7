"""NATS users, one per service role, and what each may publish.

`getoperate up` generates a password per role into `<data dir>/nats-credentials.json` (mode
0600) and writes the matching `authorization` block into nats-server's config with bcrypt hashes
of them, never the passwords (hashed once, cached in `nats-password-hashes.json`, mode 0600).
Services take NATS_USER / NATS_PASSWORD from the environment, else their role's entry in the
credentials file. Deployments give nats-server $NATS_<ROLE>_PASSWORD_HASH; make one with
`python -m services.common.natsauth hash` (a password on stdin) or `... env`.

The services' lists deny what a role must never do. A worker, the least trusted (it runs user
code on arbitrary machines), gets an allow list instead: exactly the subjects its work needs
(its JetStream reads, consumers and pulls, acks, heartbeats, job events, dead letters, and
submitting flow steps through a router), with the deny list on top. So it can neither publish
config events nor put jobs on a queue directly, nor create, change, purge or delete streams or
their messages, nor publish anywhere it was not meant to (another service's subjects, `$SYS`).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
from pathlib import Path

from services.common.runtime import private_dir, write_private
from shared import subjects

CREDENTIALS_FILE = "nats-credentials.json"
HASHES_FILE = "nats-password-hashes.json"
ROLES = ("config", "router", "worker", "admin")
# bcrypt cost: 11 is what `nats server passwd` uses, for passwords people choose. nats-server
# pays the cost on every connection, so `up` hashes its own passwords (192 random bits, which no
# cost makes any stronger) at the minimum the NATS docs use, 10.
BCRYPT_COST = 11
MIN_BCRYPT_COST = 10
GENERATED_BCRYPT_COST = MIN_BCRYPT_COST
# `$2a$` is the prefix nats-server's config parser takes as a hash even unquoted, as it arrives
# from an environment variable (`password: $NATS_WORKER_PASSWORD_HASH`); `$2b$` is not.
_BCRYPT = re.compile(r"^\$2a\$(\d\d)\$[./A-Za-z0-9]{53}$")

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
    private_dir(directory, recursive=False)
    creds = {role: secrets.token_urlsafe(24) for role in ROLES}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds, fh)
    return creds


def is_bcrypt_hash(value: object) -> bool:
    """A `$2a$` bcrypt hash of cost MIN_BCRYPT_COST or more, as nats-server takes it."""
    match = _BCRYPT.match(value) if isinstance(value, str) else None
    return match is not None and int(match.group(1)) >= MIN_BCRYPT_COST


def hash_password(password: str, cost: int = BCRYPT_COST) -> str:
    """bcrypt hash of a NATS password for nats-server's config (~0.1 s at cost 11)."""
    import bcrypt

    if not password:
        raise ValueError("an empty password cannot be hashed for NATS")
    if len(password.encode()) > 72:  # bcrypt's limit (nats-server's and the bcrypt package's)
        raise ValueError("a NATS password hashed with bcrypt has at most 72 bytes")
    salt = bcrypt.gensalt(rounds=max(cost, MIN_BCRYPT_COST), prefix=b"2a")
    return bcrypt.hashpw(password.encode(), salt).decode()


def _fingerprint(password: str, hashed: str) -> str:
    """Tells whether a cached hash is still the hash of `password` without paying bcrypt again
    (keyed by the hash, so salted). It is only ever stored beside nats-credentials.json, which
    holds the password itself, so it reveals nothing the data dir does not already."""
    return hmac.new(hashed.encode(), password.encode(), hashlib.sha256).hexdigest()


def password_hashes(directory: Path, creds: dict[str, str]) -> dict[str, str]:
    """role -> bcrypt hash of its password in `creds`, cached in `<directory>/HASHES_FILE`
    (mode 0600): computed once per password, so `up` restarts without paying bcrypt, and
    computed again for a role whose password changed."""
    path = directory / HASHES_FILE
    try:
        cached = json.loads(path.read_text())
        if not isinstance(cached, dict):
            cached = {}
    except (OSError, ValueError):
        cached = {}
    hashes: dict[str, str] = {}
    fresh: dict[str, dict[str, str]] = {}
    for role in ROLES:
        entry = cached.get(role)
        if (isinstance(entry, dict) and is_bcrypt_hash(entry.get("hash"))
                and hmac.compare_digest(str(entry.get("check", "")),
                                        _fingerprint(creds[role], entry["hash"]))):
            hashed = str(entry["hash"])
        else:
            hashed = hash_password(creds[role], GENERATED_BCRYPT_COST)
        hashes[role] = hashed
        fresh[role] = {"hash": hashed, "check": _fingerprint(creds[role], hashed)}
    if fresh != cached:
        private_dir(directory, recursive=False)
        write_private(path, json.dumps(fresh, indent=2) + "\n")
    return hashes


def hash_env_var(role: str) -> str:
    """The variable nats-server's deployment config reads a role's password hash from."""
    return f"NATS_{role.upper()}_PASSWORD_HASH"


def config_block(hashes: dict[str, str] | None = None) -> str:
    """nats-server `authorization` block with these bcrypt password hashes (role -> hash, see
    password_hashes); without any, nats-server reads each from $NATS_<ROLE>_PASSWORD_HASH (how
    compose.yaml and the Kubernetes example pass them). Plain passwords are refused: they would
    end up in a config file."""
    if hashes is not None:
        for role in ROLES:
            if not is_bcrypt_hash(hashes.get(role)):
                raise ValueError(f"config_block needs bcrypt hashes: {role}'s is not one")
    users = []
    for role in ROLES:
        rules = [f"{kind}: [{', '.join(json.dumps(s) for s in subjects_)}]"
                 for kind, subjects_ in (("allow", ALLOW_PUBLISH.get(role, [])),
                                         ("deny", DENY_PUBLISH[role])) if subjects_]
        perms = f"permissions: {{publish: {{{', '.join(rules)}}}}}" if rules else ""
        sep = ", " if perms else ""
        password = json.dumps(hashes[role]) if hashes else f"${hash_env_var(role)}"
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


def _read_password(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


def main(argv: list[str] | None = None) -> int:
    """`python -m services.common.natsauth hash|env`: bcrypt hashes for nats-server's config."""
    parser = argparse.ArgumentParser(
        prog="python -m services.common.natsauth",
        description="bcrypt hashes of NATS passwords, for nats-server's config"
                    " (NATS_<ROLE>_PASSWORD_HASH in compose.yaml and the Kubernetes Secret).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hash", help="print the hash of one password read from stdin (a line)")
    sub.add_parser("env", help="print NATS_<ROLE>_PASSWORD_HASH='...' lines (an .env file's"
                               " syntax) for the NATS_<ROLE>_PASSWORD variables set in the"
                               " environment")
    ns = parser.parse_args(argv)
    try:
        return _hash_command(ns.command)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2


def _hash_command(command: str) -> int:
    if command == "hash":
        password = _read_password("NATS password: ")
        if not password:
            print("no password given on stdin", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    found = 0
    for role in ROLES:
        password = os.environ.get(f"NATS_{role.upper()}_PASSWORD")
        if password:
            found += 1
            # Single quotes: compose reads them literally (a hash is full of `$`).
            print(f"{hash_env_var(role)}='{hash_password(password)}'")
    if not found:
        print("none of NATS_CONFIG_PASSWORD, NATS_ROUTER_PASSWORD, NATS_WORKER_PASSWORD,"
              " NATS_ADMIN_PASSWORD is set", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
