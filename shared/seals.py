"""Job seals: who may write a job's lifecycle events, proven without a NATS permission per job.

Workers write job events (`job.started`, `job.finished`) on `go.jobev.<id>`, a subject NATS
cannot narrow to the jobs one worker holds: permissions are per connection, jobs come and go
by the thousand. So the right to write is a key instead. When a router queues a job it derives
the job's *hold key*, `HMAC(router key, job id)`, and puts it in the queued message's
`Go-Job-Hold` header: only a worker that pulled the job (its holder) ever sees it, since
workers may not read queues or other workers' inboxes. Every job event carries `Go-Job-Seal`,
`HMAC(hold key, event body)`. Readers that hold the router key (the routers) re-derive the hold
key and fold an event only if its seal matches; anything else on the subject (a forged
`job.finished`, a `job.queued` pre-written under a predictable id) is skipped and logged.

HMAC, not signatures: the writer and the checker are the routers and the job's holder, which
share the hold key by construction; a stored seal reveals nothing about the key, so reading a
job's events does not let anyone write more of them.
"""

from __future__ import annotations

import hashlib
import hmac

# Domain separation: the router key also signs flow grants (shared/grants.py).
_HOLD_CONTEXT = b"getoperate job hold v1\0"
_SEAL_CONTEXT = b"getoperate job event seal v1\0"
_MSG_ID_CONTEXT = b"getoperate job event msg id v1\0"
_ROUTER_CONTEXT = b"getoperate job queued by a router v1\0"


def hold_key(router_key: bytes, job_id: str) -> str:
    """The key that lets the holder of `job_id` write its events (hex, fits a NATS header)."""
    return hmac.new(router_key, _HOLD_CONTEXT + job_id.encode("utf-8"), hashlib.sha256).hexdigest()


def seal(hold: str, body: bytes) -> str:
    """The seal of one event body, written by whoever holds the job's key."""
    return hmac.new(hold.encode("ascii"), _SEAL_CONTEXT + body, hashlib.sha256).hexdigest()


def msg_id(hold: str, name: str) -> str:
    """The `Nats-Msg-Id` of a job event: `name` (`<id>:queued`, `<id>:<attempt>:finished`...)
    and a tag only the job's holder can compute. A guessable id would let anyone who may write
    on the subject write junk under it first, and JetStream would drop the real event as a
    duplicate; a repeat by the holder (a retry) still is one."""
    tag = hmac.new(hold.encode("ascii"), _MSG_ID_CONTEXT + name.encode("utf-8"), hashlib.sha256)
    return f"{name}:{tag.hexdigest()[:16]}"


def sealed(hold: str, body: bytes, given: str | None) -> bool:
    """Whether `given` is the seal of `body` under `hold` (constant time)."""
    if not given:
        return False
    return hmac.compare_digest(seal(hold, body), given.strip())


def holds(router_key: bytes, job_id: str, given: str | None) -> bool:
    """Whether `given` is `job_id`'s hold key: a worker proving it holds the job (constant time)."""
    if not given:
        return False
    return hmac.compare_digest(hold_key(router_key, job_id), given.strip())


def router_seal(router_key: bytes, body: bytes) -> str:
    """A `job.queued` body sealed with the router key itself (header `Go-Router-Seal`): what
    only a router can write, not the job's holder. The job board (services/router/board.py)
    starts following a job only from such an event: a holder could otherwise write a second
    `job.queued` (moving its job to another workspace) where the board never saw the first."""
    return hmac.new(router_key, _ROUTER_CONTEXT + body, hashlib.sha256).hexdigest()


def router_sealed(router_key: bytes, body: bytes, given: str | None) -> bool:
    """Whether `given` is the router seal of `body` (constant time)."""
    if not given or len(given) > 128:
        return False
    return hmac.compare_digest(router_seal(router_key, body), given.strip())
