"""A live view of worker heartbeats (the GO_WORKERS bucket), kept current by following it.

A heartbeat is believed only as far as its key allows: the authority lets a worker write one
key, `<its NATS user>.<its id>.<nonce>` (subjects.heartbeat_key), so an entry whose status claims another
group (or tags its credentials do not cover), or another id, is ignored. A worker is live while
its last beat, as received here, is younger than the bucket's TTL: a `heartbeat_at` in the
future counts as now, so no entry can stay alive without beating.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common import bus, natsauth
from services.common.log import Logger
from services.common.streamreads import Follow, client_of
from shared.codec import decode
from shared.errors import InvalidInput
from shared import state as st
from shared import subjects
from shared.jobs import WorkerStatus
from shared.state import ConfigState


_KEYS = f"$KV.{subjects.WORKERS_BUCKET}."


class LiveWorkers:
    """Heartbeats by worker id; entries older than the bucket TTL count as gone (KV expiry is silent)."""

    def __init__(self, js: JetStreamContext, logger: Logger,
                 config: Callable[[], ConfigState] | None = None):
        self.js = js
        self.logger = logger
        self.config = config  # the folded config: a group's worker may claim its tags only
        self._workers: dict[str, WorkerStatus] = {}
        self._seen: dict[str, float] = {}  # key -> when its last beat was taken (wall clock)
        # key -> (config seq, status) it was judged at, and the verdict: judged when read, so a
        # beat that arrived before the config it reflects counts once the config is folded
        self._judged: dict[str, tuple[int, WorkerStatus, bool]] = {}
        self._follow: Follow | None = None
        self.ready = asyncio.Event()  # the heartbeats there were at the start are read

    async def start(self) -> None:
        await bus.workers_bucket(self.js)  # declared if it is not yet
        # Our own pulls, not a nats-py KV watch: each worker writes its own heartbeat, headers
        # included, and a push consumer obeys headers dressed as a server's
        # (services/common/streamreads.py).
        self._follow = Follow(client_of(self.js), f"KV_{subjects.WORKERS_BUCKET}",
                              f"{_KEYS}>", self._on_message, self.logger,
                              last_per_subject=True, caught_up=self.ready, name="live-workers")
        self._follow.start()

    async def stop(self) -> None:
        if self._follow is not None:
            await self._follow.stop()
            self._follow = None

    def _on_message(self, msg: Msg) -> None:
        key = msg.subject[len(_KEYS):]
        if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE") or not msg.data:
            self._workers.pop(key, None)
            self._seen.pop(key, None)
            self._judged.pop(key, None)
            return
        try:
            status = decode(msg.data, WorkerStatus)
        except InvalidInput as exc:
            self.logger.warning("bad_heartbeat_skipped", key=key, error=str(exc))
            return
        self._workers[key] = status
        self._seen[key] = min(time.time(), status.heartbeat_at)

    def _live(self) -> list[WorkerStatus]:
        cutoff = time.time() - bus.WORKER_TTL
        config = self.config() if self.config is not None else None
        return [w for k, w in self._workers.items()
                if self._seen.get(k, 0.0) >= cutoff and self._believed(k, w, config)]

    def _believed(self, key: str, status: WorkerStatus, config: ConfigState | None) -> bool:
        seq = config.seq if config is not None else -1
        judged = self._judged.get(key)
        if judged is not None and judged[0] == seq and judged[1] is status:
            return judged[2]
        problem = key_problem(key, status, config)
        if problem is not None and (judged is None or judged[1] is not status):
            self.logger.warning("forged_heartbeat_skipped", key=key, problem=problem)
        self._judged[key] = (seq, status, problem is None)
        return problem is None

    def all(self) -> list[WorkerStatus]:
        """Live workers, sorted for display."""
        return sorted(self._live(), key=lambda w: ((w.group or ""), w.id))

    def serving(self, tag: str) -> list[WorkerStatus]:
        """Ready workers whose current tag list includes `tag` (per submission: no sorting)."""
        return [w for w in self._live() if tag in w.tags and w.state == "ready"]


def key_problem(key: str, status: WorkerStatus, config: ConfigState | None = None) -> str | None:
    """Why a heartbeat's key does not vouch for its status (None: it does). With the config, a
    group's worker may claim only its group's tags (those the authority lets it pull)."""
    parts = subjects.heartbeat_parts(key)
    if parts is None or parts[1] != status.id:
        return "its key is not <NATS user>.<its id>.<nonce>"
    user = parts[0]
    scope = natsauth.worker_scope(user)
    if scope is None:
        return f"{user!r} is not a worker's NATS user"
    group, fixed = scope
    if status.group != group:
        return f"written with the credentials of {user!r}, it claims group {status.group!r}"
    if fixed is None:  # a group's worker: the group's tags, from the config
        if status.tags_source == "env":
            return f"written with the credentials of {user!r}, it claims tags of its own"
        if config is not None:
            found = config.groups.get(group or "")
            allowed = set(st.group_tags(config, found)) if found is not None else set()
            if not set(status.tags) <= allowed:
                return (f"written with the credentials of {user!r}, it claims tags its group"
                        f" does not have: {sorted(set(status.tags) - allowed)[:5]}")
        return None
    if not set(status.tags) - set(status.dedicated) <= set(fixed):
        return f"written with the credentials of {user!r}, it claims other tags"
    return None
