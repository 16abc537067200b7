"""NATS credentials: one secret, a password per user derived from it, the authority's key.

Every NATS password of a deployment is derived from one secret (`nats-secret` in the data dir,
mode 0600, or GETOPERATE_NATS_SECRET): HMAC-SHA256(secret, "nats-user:" + user). So the
authority (the auth callout in the config service, services/common/authority.py) checks any
password with one HMAC, without a table of them, and can hand out per-group worker credentials
(`worker:<group>`) for groups created later. nats-server's config names only the `config` user
(it hosts the authority, so it cannot go through it), with a bcrypt hash of its password, and
the authority's public key (`auth_callout.issuer`, also derived from the secret). Every other
connection is authorized by the authority, with the permissions of services/common/permissions.py.

`getoperate up` writes every static role's password and those of its groups' workers to
`<data dir>/nats-credentials.json` (mode 0600), keyed by NATS user name, so operators and tests
can act as any role. Services take NATS_USER / NATS_PASSWORD from the environment, else their
user's entry in that file (else derive it, where the data dir's secret is readable). Deployments
get the lines to set from `python -m services.common.natsauth env` (with GETOPERATE_NATS_SECRET).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
from pathlib import Path

from services.common import permissions
from services.common.natsjwt import AccountKey
from services.common.runtime import private_dir, write_private
from shared.tags import validate_group_name

CREDENTIALS_FILE = "nats-credentials.json"
HASHES_FILE = "nats-password-hashes.json"
SECRET_FILE = "nats-secret"
SECRET_ENV = "GETOPERATE_NATS_SECRET"
ROLES = permissions.STATIC_ROLES  # users with fixed rights; workers are `worker:<group>`
AUTH_USER = "config"  # hosts the authority: the only user nats-server's config names
HASHED_ROLES = (AUTH_USER,)
WORKER_USER_PREFIX = "worker:"
WORKER_TAGS_USER_PREFIX = "worker-tags:"
# bcrypt cost: 11 is what `nats server passwd` uses, for passwords people choose. nats-server
# pays the cost on every connection of the config user, so `up` hashes its own passwords (192
# random bits, which no cost makes any stronger) at the minimum the NATS docs use, 10.
BCRYPT_COST = 11
MIN_BCRYPT_COST = 10
GENERATED_BCRYPT_COST = MIN_BCRYPT_COST
# `$2a$` is the prefix nats-server's config parser takes as a hash even unquoted, as it arrives
# from an environment variable (`password: $NATS_CONFIG_PASSWORD_HASH`); `$2b$` is not.
_BCRYPT = re.compile(r"^\$2a\$(\d\d)\$[./A-Za-z0-9]{53}$")
ISSUER_ENV = "NATS_AUTH_ISSUER"


def worker_user(group: str | None = None, tags: list[str] | tuple[str, ...] | None = None) -> str:
    """The NATS user of a worker: `worker:<group>`; with WORKER_TAGS `worker-tags:<t1,t2>`, or
    `worker-tags:<t1,t2>(<group>)` when it also names a group (whose config, init script
    included, it may then read). Tags cannot hold `,`, `(` or `)`, so the name parses back."""
    if tags is None:
        return WORKER_USER_PREFIX + (group or "")
    listed = WORKER_TAGS_USER_PREFIX + ",".join(sorted(set(tags)))
    return f"{listed}({group})" if group is not None else listed


def worker_scope(user: str) -> tuple[str | None, tuple[str, ...] | None] | None:
    """(group, fixed tags) a worker's NATS user names: `worker:g` -> (g, None) (its tags follow
    the group), `worker-tags:a,b` -> (None, (a, b)), `worker-tags:a,b(g)` -> (g, (a, b)).
    None: not a worker's user."""
    if user.startswith(WORKER_USER_PREFIX):
        group = user[len(WORKER_USER_PREFIX):]
        return (group, None) if group else None
    if not user.startswith(WORKER_TAGS_USER_PREFIX):
        return None
    rest, group = user[len(WORKER_TAGS_USER_PREFIX):], None
    if rest.endswith(")") and "(" in rest:
        rest, _, group = rest[:-1].partition("(")
        if not group:
            return None
    return group, tuple(t for t in rest.split(",") if t)


def connection_options(label: str, user: str | None = None,
                       **declare: str) -> dict[str, str]:
    """nats.connect's `name` and `inbox_prefix` as the authority asks: a fresh random inbox
    token declared as `inbox=X` (and `declare`, as `key=value` words) and used as `_INBOX.X`
    (`_INBOX.config.X` for the config user, whose static rights cannot name a random prefix)."""
    token = secrets.token_hex(12)
    words = [label, f"inbox={token}", *(f"{k}={v}" for k, v in declare.items())]
    prefix = f"{permissions.CONFIG_INBOX}.{token}" if user == AUTH_USER else f"_INBOX.{token}"
    return {"name": " ".join(words), "inbox_prefix": prefix}


def declared(name: str) -> dict[str, str]:
    """The `key=value` words of a connection name (what connection_options declared)."""
    out: dict[str, str] = {}
    for word in name.split():
        key, sep, value = word.partition("=")
        if sep:
            out[key] = value
    return out


def load_secret(directory: Path, create: bool = False) -> bytes | None:
    """The deployment's NATS secret: GETOPERATE_NATS_SECRET, else `<directory>/nats-secret`
    (created once, mode 0600, when `create`)."""
    value = os.environ.get(SECRET_ENV)
    if value:
        return value.strip().encode()
    path = directory / SECRET_FILE
    try:
        return path.read_text().strip().encode()
    except FileNotFoundError:
        if not create:
            return None
    except OSError:
        return None
    private_dir(directory, recursive=False)
    write_private(path, secrets.token_hex(32) + "\n")
    return path.read_text().strip().encode()


def password(secret: bytes, user: str) -> str:
    """The password of NATS user `user` under `secret` (32 URL-safe characters, 192 bits)."""
    digest = hmac.new(secret, b"nats-user:" + user.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode()


def issuer(secret: bytes) -> AccountKey:
    """The key the authority signs connections' permissions with."""
    return AccountKey(hmac.new(secret, b"nats-issuer", hashlib.sha256).digest())


def credentials(secret: bytes, groups: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
    """user -> password for the static roles and the workers of `groups`."""
    users = [*ROLES, *(worker_user(g) for g in groups)]
    return {user: password(secret, user) for user in users}


def load_or_create(directory: Path, groups: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
    """Write `<directory>/nats-credentials.json` (mode 0600) from the data dir's secret (made
    once): the static roles and the workers of `groups`. Returns user -> password."""
    secret = load_secret(directory, create=True)
    assert secret is not None
    creds = credentials(secret, groups)
    path = directory / CREDENTIALS_FILE
    text = json.dumps(creds, indent=2) + "\n"
    try:
        unchanged = path.read_text() == text
    except OSError:
        unchanged = False
    if not unchanged:
        private_dir(directory, recursive=False)
        write_private(path, text)
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
    for role in HASHED_ROLES:
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


def worker_password_env(group: str) -> str:
    """The variable a deployment keeps group `group`'s worker password in (`env --groups`):
    NATS_WORKER_<GROUP>_PASSWORD, `-` written `_`."""
    return f"NATS_WORKER_{group.upper().replace('-', '_')}_PASSWORD"


def config_block(hashes: dict[str, str] | None = None, issuer_public: str | None = None) -> str:
    """nats-server's `authorization` block: the `config` user (bcrypt hash of its password, see
    password_hashes) with its static permissions, and the auth callout that authorizes every
    other connection, issued by `issuer_public`. Without arguments, nats-server reads both from
    $NATS_CONFIG_PASSWORD_HASH and $NATS_AUTH_ISSUER (compose.yaml, the Kubernetes example).
    A plain password is refused: it would end up in a config file."""
    if hashes is not None and not is_bcrypt_hash(hashes.get(AUTH_USER)):
        raise ValueError(f"config_block needs a bcrypt hash: {AUTH_USER}'s is not one")
    pw = json.dumps(hashes[AUTH_USER]) if hashes else f"${hash_env_var(AUTH_USER)}"
    key = issuer_public or f"${ISSUER_ENV}"
    return ("authorization {\n"
            f"  users: [\n    {{user: {AUTH_USER}, password: {pw},"
            f" permissions: {permissions.static(AUTH_USER).conf()}}}\n  ]\n"
            f"  auth_callout {{\n    issuer: {key}\n    auth_users: [{AUTH_USER}]\n  }}\n"
            "}")


def credentials_for(user: str) -> tuple[str | None, str | None]:
    """NATS_USER/NATS_PASSWORD, else `user`'s entry in the data dir's credentials file, else
    its password derived from the data dir's secret (readable by the deployment's owner only:
    a worker started in the folder of `getoperate up` for a group created since)."""
    env_user, env_password = os.environ.get("NATS_USER"), os.environ.get("NATS_PASSWORD")
    if env_user:
        return env_user, env_password
    directory = Path(os.environ.get("GETOPERATE_DATA_DIR") or ".getoperate")
    try:
        known = json.loads((directory / CREDENTIALS_FILE).read_text())
        if isinstance(known, dict) and isinstance(known.get(user), str):
            return user, known[user]
    except (OSError, ValueError):
        pass
    secret = load_secret(directory) if os.environ.get(SECRET_ENV) is None else None
    if secret is not None:
        return user, password(secret, user)
    return None, None


def _read_password(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


def main(argv: list[str] | None = None) -> int:
    """`python -m services.common.natsauth env|worker|hash`: what a deployment configures."""
    parser = argparse.ArgumentParser(
        prog="python -m services.common.natsauth",
        description="NATS credentials of a deployment, derived from its secret"
                    " (GETOPERATE_NATS_SECRET, else ./.getoperate/nats-secret).")
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("env", help="print the variables of a deployment, an .env file's syntax:"
                                   " NATS_AUTH_ISSUER and NATS_CONFIG_PASSWORD_HASH for"
                                   " nats-server, NATS_<ROLE>_PASSWORD for each service")
    e.add_argument("--groups", default="", metavar="G1,G2",
                   help="also NATS_WORKER_<GROUP>_PASSWORD for the workers of these groups"
                        " (compose.yaml and the Kubernetes example: default,native,gpu)")
    w = sub.add_parser("worker", help="print the NATS user and password of a group's workers")
    w.add_argument("group", nargs="?", help="the group (WORKER_GROUP); omit with --tags alone")
    w.add_argument("--tags", metavar="T1,T2",
                   help="workers started with WORKER_TAGS (and the group, if given, for its"
                        " init script): the user is `worker-tags:<tags>[(<group>)]`")
    sub.add_parser("hash", help="print the bcrypt hash of one password read from stdin (a line)")
    ns = parser.parse_args(argv)
    try:
        return _command(ns)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2


def _command(ns: argparse.Namespace) -> int:
    if ns.command == "hash":
        password_ = _read_password("NATS password: ")
        if not password_:
            print("no password given on stdin", file=sys.stderr)
            return 2
        print(hash_password(password_))
        return 0
    secret = load_secret(Path(os.environ.get("GETOPERATE_DATA_DIR") or ".getoperate"))
    if secret is None:
        print(f"no secret: set {SECRET_ENV} (e.g. to the output of `openssl rand -hex 32`)",
              file=sys.stderr)
        return 2
    if ns.command == "worker":
        tags = sorted({t.strip() for t in ns.tags.split(",") if t.strip()}) if ns.tags else None
        if ns.group is None and not tags:
            raise ValueError("name a group, or --tags T1,T2 (or both)")
        if ns.group is not None:
            validate_group_name(ns.group, field="group")
        user = worker_user(ns.group, tags)
        print(f"NATS_USER='{user}'\nNATS_PASSWORD='{password(secret, user)}'")
        return 0
    groups = [validate_group_name(g.strip(), field="--groups")
              for g in ns.groups.split(",") if g.strip()]
    named: dict[str, str] = {}
    for group in groups:
        if named.setdefault(worker_password_env(group), group) != group:
            raise ValueError(f"groups {named[worker_password_env(group)]!r} and {group!r} would"
                             f" share the variable {worker_password_env(group)}: rename one")
    creds = credentials(secret)
    # Single quotes: compose reads them literally (a hash is full of `$`).
    print(f"{ISSUER_ENV}='{issuer(secret).public}'")
    print(f"{hash_env_var(AUTH_USER)}='{hash_password(creds[AUTH_USER])}'")
    for role in ROLES:
        print(f"NATS_{role.upper()}_PASSWORD='{creds[role]}'")
    for var, group in named.items():
        print(f"{var}='{password(secret, worker_user(group))}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
