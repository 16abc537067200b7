"""Who a submission comes from, and what that identity may submit: one rule for HTTP `POST /jobs`
and NATS `go.router.submit`, so the two doors cannot drift apart."""

from __future__ import annotations

import msgspec

from shared.errors import Forbidden, Unauthorized
from shared.jobs import JobSubmit

BEARER = "Bearer "


class Identity(msgspec.Struct, frozen=True):
    """Who a request comes from: the token's name, its workspace (None for admins), and the
    sequence of the `token.created` event that issued it (0 for the bootstrap admin token), so a
    flow grant dies with a revoked token even if a new one gets the same name."""

    name: str
    workspace: str | None = None
    token_seq: int = 0

    @property
    def admin(self) -> bool:
        return self.workspace is None


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; Unauthorized when there is none."""
    token = header[len(BEARER):].strip() if header and header.startswith(BEARER) else ""
    if not token:
        raise Unauthorized("missing token: send 'Authorization: Bearer <token>'")
    if not token.isascii() or not token.isprintable():  # tokens are printable ASCII
        raise Unauthorized("malformed token: a token is printable ASCII")
    return token


def authorize_submit(who: Identity, sub: JobSubmit, *, workspace_given: bool) -> JobSubmit:
    """Apply the submitter's rights to a submission (its tags are checked when it is routed).

    A workspace token submits only in its workspace (a body without `workspace` means its
    own) and never a flow step: steps come from the worker running the flow, with that flow's
    grant (shared/grants.py). An admin may do both.
    """
    if who.admin:
        return sub
    if not workspace_given:
        sub.workspace = who.workspace  # type: ignore[assignment]
    if sub.workspace != who.workspace:
        raise Forbidden(f"token {who.name!r} may only submit jobs in workspace"
                        f" {who.workspace!r}, not {sub.workspace!r}", field="workspace")
    if sub.parent is not None:
        raise Forbidden("only workers submit flow steps", field="parent")
    return sub
