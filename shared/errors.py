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
