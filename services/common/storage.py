"""Whether JetStream has room: what a service learned from its last writes, for /readyz and /metrics.

A service learns that storage is full when JetStream refuses one of its writes
(`bus.storage_full`), and that it is not when a write to the same stream succeeds. Between
writes it looks again: a stream at its own `max_bytes` says how full it is (`STREAM.INFO`);
a server whose whole store is used up says nothing readable, so that verdict is kept for
HOLD seconds after the last refusal. Either way /readyz stops saying "full" once space returns,
without a restart and without waiting for the next submission.
"""

from __future__ import annotations

import time

from nats.js import JetStreamContext
from nats.js.errors import APIError

HOLD = 10.0  # seconds a refusal keeps a stream "full" when its fill cannot be read
ROOM = 1024 * 1024  # a stream with less room than one message (max_payload) is full


class StorageWatch:
    """Streams that refused a write for want of storage, with JetStream's reason."""

    def __init__(self) -> None:
        self._full: dict[str, tuple[float, str]] = {}

    def refused(self, stream: str, exc: BaseException) -> None:
        reason = getattr(exc, "description", None) or repr(exc)
        self._full[stream] = (time.monotonic(), str(reason))

    def stored(self, stream: str) -> None:
        self._full.pop(stream, None)

    async def full(self, js: JetStreamContext) -> dict[str, str]:
        """stream -> reason, for every stream still full (looked at again now)."""
        for stream, (when, reason) in list(self._full.items()):
            room = await _has_room(js, stream)
            if room or (room is None and time.monotonic() - when > HOLD):
                self._full.pop(stream, None)
        return {stream: reason for stream, (_, reason) in self._full.items()}


async def _has_room(js: JetStreamContext, stream: str) -> bool | None:
    """Whether the stream has room under its byte limit; None when that says nothing (no limit:
    the server's store is what is full, or the stream could not be read)."""
    try:
        info = await js.stream_info(stream)
    except (APIError, TimeoutError, OSError):
        return None
    limit = info.config.max_bytes or -1
    if limit <= 0:
        return None
    return (info.state.bytes or 0) + ROOM <= limit
