"""Flow grants: how a flow's steps are submitted with the identity of the flow's submitter.

Workers hold no token, yet the worker running a flow submits each step to a router. When a
router routes a flow it signs a grant into the job: who submitted it (workspace, admin or not, the
token), the flow job's id, and each planned step's tag and code digest. HMAC-SHA256 with a key
only routers hold (services/router/keys.py), so a worker can present the grant but neither forge
one nor widen it: the grant admits exactly the planned steps of its own flow, in its workspace,
with its submitter's rights (and only while that token is not revoked). Arguments are not bound
(a step receives the previous step's result, which the worker reads).

Wire form: `<base64url(JSON of FlowGrant)>.<base64url(HMAC)>`, in the `Go-Flow-Grant` header of a
step's `go.router.submit` request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import msgspec

from shared.errors import Forbidden, Unauthorized
from shared.jobs import JobSubmit

# Domain separation: this key signs flow grants and nothing else.
_CONTEXT = b"getoperate flow grant v1\0"
MAX_GRANT_CHARS = 512 * 1024  # a grant lists each step; a flow job fits one NATS message


class GrantRefused(Unauthorized):
    """Raised when a flow grant is missing, malformed, not signed by a router key, or does not
    cover the step it comes with."""


class StepGrant(msgspec.Struct, frozen=True, array_like=True):
    """One planned step: its resolved tag and `step_digest` of its language and code."""

    tag: str
    code: str


class FlowGrant(msgspec.Struct, frozen=True, kw_only=True):
    """What a router vouches for: this flow job, submitted by `by` in `workspace`, may run these
    steps (step N is `steps[N-1]`)."""

    v: int = 1
    flow: str
    workspace: str
    admin: bool
    by: str
    token_seq: int = 0
    steps: tuple[StepGrant, ...] = ()


_decoder = msgspec.json.Decoder(FlowGrant)


def step_digest(language: str, code: str) -> str:
    """SHA-256 (hex) of a step's language and code: what the grant binds a step to."""
    return hashlib.sha256(language.encode() + b"\0" + code.encode()).hexdigest()


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, _CONTEXT + body, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, grant: FlowGrant) -> str:
    """The grant in its wire form."""
    body = msgspec.json.encode(grant)
    return f"{_b64(body)}.{_b64(_mac(key, body))}"


def verify(key: bytes, text: str | None) -> FlowGrant:
    """The grant a router signed with `key`; GrantRefused for anything else."""
    if not text:
        raise GrantRefused("missing flow grant: a flow step is submitted with its flow's"
                           " 'Go-Flow-Grant' header", field="parent")
    if len(text) > MAX_GRANT_CHARS:
        raise GrantRefused(f"the flow grant is {len(text)} characters long; the limit is"
                           f" {MAX_GRANT_CHARS}", field="parent")
    body_text, dot, mac_text = text.partition(".")
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (binascii.Error, ValueError):
        body, mac = b"", b""
    if not dot or not body:
        raise GrantRefused("the flow grant is malformed (expected <payload>.<signature> in"
                           " base64url)", field="parent")
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise GrantRefused("the flow grant's signature does not match: no router of this suite"
                           " issued it, or it was changed", field="parent")
    try:
        return _decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:  # signed but unreadable
        raise GrantRefused(f"the flow grant cannot be read: {exc}", field="parent") from exc


def check_step(grant: FlowGrant, sub: JobSubmit) -> None:
    """Refuse a submission the grant does not cover: another flow, another workspace, a step it
    did not plan, or a planned step with another tag or other code."""
    if sub.parent != grant.flow:
        raise Forbidden(f"the flow grant is for flow {grant.flow!r}, not for parent"
                        f" {sub.parent!r}", field="parent")
    if sub.workspace != grant.workspace:
        raise Forbidden(f"the flow grant is for workspace {grant.workspace!r}, not"
                        f" {sub.workspace!r}", field="workspace")
    if sub.step is None or not 1 <= sub.step <= len(grant.steps):
        raise Forbidden(f"flow {grant.flow!r} has no step {sub.step!r} (it has"
                        f" {len(grant.steps)})", field="step")
    planned = grant.steps[sub.step - 1]
    if sub.path is not None or sub.language is None or sub.code is None:
        raise Forbidden("a flow step is submitted as the language and code it was planned"
                        " with", field="code")
    if sub.tag != planned.tag:
        raise Forbidden(f"step {sub.step} of flow {grant.flow!r} was planned on tag"
                        f" {planned.tag!r}, not {sub.tag!r}", field="tag")
    if not hmac.compare_digest(step_digest(sub.language, sub.code), planned.code):
        raise Forbidden(f"step {sub.step} of flow {grant.flow!r} is not the code it was planned"
                        " with", field="code")
