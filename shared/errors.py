"""The suite's error types: one root, and subclasses that also inherit the standard type callers expect."""

from __future__ import annotations


class GetOperateError(Exception):
    """Root of every error the suite raises on purpose."""

    #: HTTP status a service answers with when this error reaches the edge.
    status = 400
    #: Short machine-readable code for JSON error bodies.
    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidInput(GetOperateError, ValueError):
    """Raised when a request, tag, group name or message fails validation."""

    code = "invalid"


class NotFound(GetOperateError, LookupError):
    """Raised when a group, job or other named thing does not exist."""

    status = 404
    code = "not_found"


class Conflict(GetOperateError):
    """Raised when an optimistic-concurrency check fails (someone else changed it first)."""

    status = 409
    code = "conflict"


class Unauthorized(GetOperateError, PermissionError):
    """Raised when a request carries no valid token."""

    status = 401
    code = "unauthorized"


class Forbidden(GetOperateError, PermissionError):
    """Raised when a valid token is not allowed to do what it asks."""

    status = 403
    code = "forbidden"


class TooBusy(GetOperateError):
    """Raised when one identity already has as many waiting reads as it may (a limit per caller,
    so that nobody can take every router's capacity)."""

    status = 429
    code = "too_busy"


class Unavailable(GetOperateError):
    """Raised when a dependency (NATS, JetStream) cannot do its part now; the caller may retry.
    What was asked was not done: see OutcomeUnknown for when that is not known."""

    status = 503
    code = "unavailable"


class OutcomeUnknown(Unavailable):
    """Raised when a router could not learn in time whether it queued a job: the job may still
    run. The answer carries the job's id, so the caller can look it up (or repeat the
    submission with the same idempotency key, which never queues it twice)."""

    code = "outcome_unknown"

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "id": self.job_id}


class DependenciesFailed(Conflict):
    """A deployed script whose dependency job failed cannot run until it is deployed again:
    the message is the resolver's."""

    code = "dependencies_failed"


class StorageFull(GetOperateError):
    """Raised when JetStream refuses a write for want of storage (a stream at its max_bytes,
    the server's store used up): nothing was stored, the request can be repeated once space
    returns."""

    status = 507
    code = "storage_full"
