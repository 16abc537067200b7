"""Where the config signing keys come from: the environment, else files in the data dir.

The private key is the config service's alone: GETOPERATE_CONFIG_SIGNING_KEY (deployments, from
a secret store), else `<data dir>/config-signing.key` (mode 0600), created on its first start.
The public key reaches routers and workers out of band: GETOPERATE_CONFIG_PUBLIC_KEY, else
`<data dir>/config-signing.pub`, which the config service (and `getoperate up`) writes beside
the private key, so a service started in the folder of `getoperate up` finds it like it finds
`nats-credentials.json`. Nothing reads a key from NATS: a key that came over the channel it
protects would protect nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.common.runtime import data_dir, private_dir, write_private
from shared.errors import InvalidInput
from shared.signing import (
    Signer, Verifier, new_private_key, parse_private_key, parse_public_keys, private_text,
    public_text,
)

PRIVATE_KEY_VAR = "GETOPERATE_CONFIG_SIGNING_KEY"
PUBLIC_KEY_VAR = "GETOPERATE_CONFIG_PUBLIC_KEY"
PRIVATE_KEY_FILE = "config-signing.key"
PUBLIC_KEY_FILE = "config-signing.pub"


class MissingKey(InvalidInput):
    """Raised when a service that must verify configuration has no public key to do it with."""

    code = "missing_key"


def load_verifier(directory: Path | None = None) -> Verifier:
    """The public keys a router, worker or CLI follower accepts; refuses to go on without one."""
    text = os.environ.get(PUBLIC_KEY_VAR, "").strip()
    if text:
        return Verifier(parse_public_keys(text, field=PUBLIC_KEY_VAR))
    path = (directory or data_dir()) / PUBLIC_KEY_FILE
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    if not text:
        raise MissingKey(
            f"no public key to verify the configuration with: set {PUBLIC_KEY_VAR} (a pair comes"
            " from `python -m services.config.signing keygen`), or start this service in the"
            f" folder of `getoperate up` ({path} not found)", field=PUBLIC_KEY_VAR)
    return Verifier(parse_public_keys(text, field=str(path)))


def load_signer(directory: Path, *, create: bool = True) -> Signer:
    """The config service's key: GETOPERATE_CONFIG_SIGNING_KEY, else the data dir's key file
    (created 0600 when `create`). Either way `config-signing.pub` is (re)written beside it."""
    text = os.environ.get(PRIVATE_KEY_VAR, "").strip()
    path = Path(directory) / PRIVATE_KEY_FILE
    if text:
        signer = Signer(parse_private_key(text, field=PRIVATE_KEY_VAR))
    elif path.exists():
        signer = Signer(parse_private_key(path.read_text(), field=str(path)))
    elif create:
        private_dir(Path(directory), recursive=False)
        key = new_private_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(private_text(key) + "\n")
        signer = Signer(key)
    else:
        raise MissingKey(f"no config signing key: set {PRIVATE_KEY_VAR} or create {path}",
                         field=PRIVATE_KEY_VAR)
    public = Path(directory) / PUBLIC_KEY_FILE
    line = public_text(signer.public_key) + "\n"
    try:
        current = public.read_text()
    except OSError:
        current = None
    if current != line:
        try:
            private_dir(Path(directory), recursive=False)
            write_private(public, line)
        except OSError:  # a read-only data dir: followers then need GETOPERATE_CONFIG_PUBLIC_KEY
            pass
    return signer


def accepted_keys(signer: Signer) -> Verifier:
    """What the config service accepts when it reads its stream back: its own key, plus those
    of GETOPERATE_CONFIG_PUBLIC_KEY (the previous key, during a rotation). Set and not listing
    its own key, followers would refuse every event: that is refused here, at start."""
    text = os.environ.get(PUBLIC_KEY_VAR, "").strip()
    if not text:
        return Verifier([signer.public_key])
    listed = parse_public_keys(text, field=PUBLIC_KEY_VAR)
    if signer.key_id not in Verifier(listed).key_ids:
        raise InvalidInput(
            f"{PUBLIC_KEY_VAR} does not list the public key of {PRIVATE_KEY_VAR} (key id"
            f" {signer.key_id}): routers and workers given it would reject every event",
            field=PUBLIC_KEY_VAR)
    return Verifier([signer.public_key, *listed])
