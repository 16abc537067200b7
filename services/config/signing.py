"""`python -m services.config.signing keygen`: an Ed25519 key pair for a deployment.

Prints GETOPERATE_CONFIG_SIGNING_KEY (the config service's secret: give it to the config service
only) and GETOPERATE_CONFIG_PUBLIC_KEY (give it to routers and workers) as env lines. `getoperate
up` needs neither: the config service makes its key in the data dir on first start.
"""

from __future__ import annotations

import argparse
import sys

from services.common.signingkeys import PRIVATE_KEY_VAR, PUBLIC_KEY_VAR
from shared.signing import Signer, new_private_key, private_text, public_text


def keygen() -> tuple[str, str]:
    """(private, public) as base64 of their 32 bytes."""
    key = new_private_key()
    return private_text(key), public_text(Signer(key).public_key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.config.signing",
        description="Ed25519 keys that sign the configuration (docs/security.md, Signed"
                    " configuration).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("keygen", help=f"print {PRIVATE_KEY_VAR}='...' and {PUBLIC_KEY_VAR}='...'"
                                  " lines (an .env file's syntax) for a new key pair")
    parser.parse_args(argv)
    private, public = keygen()
    print(f"{PRIVATE_KEY_VAR}='{private}'")
    print(f"{PUBLIC_KEY_VAR}='{public}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
