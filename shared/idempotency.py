"""Idempotent submission: a client's key names one job, whichever router answers and however often.

A submission may carry an idempotency key (`Idempotency-Key`, on HTTP and on
`go.router.submit`). The job's id is then not drawn at random but derived from the key and the
workspace, `HMAC(router key, workspace, key)`, so every router computes the same id for a
repeat. That makes a repeat safe at two levels:

- within JetStream's duplicate window (GO_JOBS, GO_JOB_EVENTS: `DUPLICATE_WINDOW`), a repeat
  publishes the same `Nats-Msg-Id`s and the server stores nothing twice, even when two routers
  race or the first router died between its publish and its answer; the repeat also completes
  a submission whose first attempt did not reach the stream;
- for as long as job history is kept (GETOPERATE_JOB_HISTORY_SECONDS), a router that finds the
  job's `job.queued` answers with the original job instead of queueing another.

The request's digest is stored in `job.queued`: the same key with a different request is a
conflict, never a silent second job nor the first job passed off as the second. The HMAC (not
a plain hash) keeps ids unpredictable, as random ids are: a key a client chose, like `order-42`,
must not let anyone who guesses it compute the job's id.
"""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from shared.errors import Conflict, InvalidInput

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
# JetStream's duplicate window on the job streams, in seconds: a repeat within it is stored
# once by the server itself. Set on GO_JOBS and GO_JOB_EVENTS (services/common/bus.py).
DUPLICATE_WINDOW = 120.0
# A key whose job JetStream refused (storage full: it never ran) moves to its next generation,
# a new id; a key refused this many times in a row is a conflict (use a new key).
MAX_GENERATIONS = 16
_ID_CONTEXT = b"getoperate idempotent job id v1\0"
_STEP_CONTEXT = b"getoperate idempotent flow step id v1\0"


class IdempotencyConflict(Conflict):
    """Raised when a key already named a job submitted with a different request."""

    code = "idempotency_conflict"


def check_key(key: str) -> str:
    """A key is 1..255 printable ASCII characters (it travels in a header); anything else is a
    400 naming the header, never truncated or normalised into another client's key."""
    if not key or len(key) > MAX_KEY_CHARS or not all(" " <= c <= "~" for c in key):
        raise InvalidInput(f"{HEADER} must be 1 to {MAX_KEY_CHARS} printable ASCII characters",
                           field=HEADER)
    return key


def job_id(router_key: bytes, workspace: str, key: str, generation: int = 0, *,
           planned: bool = False) -> str:
    """The id of the job that `key` names in `workspace`: 32 hex digits, like a random id.
    `generation` counts the jobs of the key that JetStream refused to queue (they never ran).
    `planned`: a flow's step, submitted with the flow's grant; its keys are apart from the
    keys clients send (a client sending `flow <id> step 1` names another job)."""
    context = _STEP_CONTEXT if planned else _ID_CONTEXT
    message = context + workspace.encode() + b"\0" + key.encode()
    if generation:
        message += b"\0" + str(generation).encode()
    return hmac.new(router_key, message, hashlib.sha256).hexdigest()[:32]


def digest(request: object) -> str:
    """What a repeat must match: the submission as authorized (its workspace filled in), with
    every object's keys sorted, so the same request spelled differently in JSON (fields or
    arguments in another order) matches."""
    return hashlib.sha256(msgspec.json.encode(request, order="sorted")).hexdigest()


def check_repeat(key: str, stored: str | None, request: str) -> None:
    """A repeat of `key` must be the request that first used it. A job recorded without a digest
    (its job.queued was not stored) cannot be compared and is taken as the same."""
    if stored is not None and not hmac.compare_digest(stored, request):
        raise IdempotencyConflict(
            f"{HEADER} {key!r} was already used for a different request in this workspace; use"
            " a new key for a new job", field=HEADER)
