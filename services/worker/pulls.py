"""Job pulls per tag through nats-py's fetch, each answered before the next: no job lost or held.

One request is open at a time per tag, and its answer is awaited (settled) before the next one,
so a job delivered after the client stopped waiting is never lost.

`PullSubscription.fetch(1, timeout=t)` sends one request, `{"batch":1,"expires":t-0.1ms}` in
nanoseconds, and gives up client-side at `t`: the server's answer (the job, or a 408 once the
request expires) usually lands a moment after that. So after a fetch that timed out, the answer
still due is awaited (`SETTLE`); a job in it is returned like any other (its slot is still held).
An answer that does not come in time (NATS away) may come later: `late()` hands it over before the
next request, and the dispatcher returns it (nak) if no slot is free by then.
"""

from __future__ import annotations

import asyncio
import time

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from services.common import bus
from services.common.log import Logger
from shared import subjects

NOW = 0.001  # "a job now?": the server answers 408 after 0.9 ms when the tag has none
SOON = 0.3  # where a job is known to wait (a wake-up; not stored yet?): wait for it a little
SETTLE = 2.0  # how long the answer to a request the client stopped waiting for may take
UNSETTLED_FOR = 30.0  # after that, an answer still missing is taken as lost (NATS restarted)


def _is_status(msg: Msg) -> bool:
    return bool(msg.headers and msg.headers.get("Status"))


class TagPull:
    """Pulls of one tag's durable consumer into one private inbox."""

    def __init__(self, nc: NATS, js: JetStreamContext, tag: str, ensure: bool = True) -> None:
        self.nc = nc
        self.js = js
        self.tag = tag
        self.consumer = subjects.tag_consumer(tag)
        self._due_until = 0.0  # until then an answer to a request may still come
        # Under the authority a worker may not create consumers: it made them before it let
        # the worker connect. Without one (a bare nats-server), the worker ensures its own.
        self.ensure = ensure
        self._ensured = not ensure
        self._sub: Subscription | None = None
        self._psub: JetStreamContext.PullSubscription | None = None

    async def _bind(self) -> tuple[Subscription, JetStreamContext.PullSubscription]:
        """What `js.pull_subscribe_bind` does, keeping the inbox subscription at hand to await
        the answer of a request whose fetch gave up."""
        if self._sub is None or self._psub is None:
            inbox = self.nc.new_inbox()
            self._sub = await self.nc.subscribe(inbox)
            self._psub = JetStreamContext.PullSubscription(
                js=self.js, sub=self._sub, stream=subjects.JOBS_STREAM, consumer=self.consumer,
                deliver=inbox.encode())
        return self._sub, self._psub

    @property
    def unsettled(self) -> bool:
        """An answer is still due for a request (its pull gave up on it, or was cancelled)."""
        return self._due_until > time.monotonic()

    @property
    def pending(self) -> int:
        """Answers waiting in the inbox (a late job, or a late status)."""
        return self._sub.pending_msgs if self._sub is not None else 0

    async def pull(self, wait: float) -> Msg | None:
        """One job of the tag, or None when it has none within `wait` seconds. Raises when the
        consumer is gone or NATS is away (the consumer is ensured again on the next pull)."""
        late = await self.late()
        if late is not None:
            return late
        sub, psub = await self._bind()
        try:
            if not self._ensured:
                await bus.ensure_tag_consumer(self.js, self.tag)
                self._ensured = True
            before = sub.delivered
            self._due_until = time.monotonic() + wait + UNSETTLED_FOR
            try:
                msg = (await psub.fetch(1, timeout=wait))[0]
                self._due_until = 0.0
                return msg
            except TimeoutError:  # a 404/408/409 status, or no answer yet
                pass
        except asyncio.CancelledError:
            raise  # the answer may still come: see `settle`
        except Exception:  # an error status answered the request, or none was sent
            self._ensured = not self.ensure  # ensured again next time, where it may
            self._due_until = 0.0
            raise
        if sub.pending_msgs == 0 and sub.delivered != before:
            self._due_until = 0.0
            return None  # the fetch consumed the answer: a status
        try:
            msg = await sub.next_msg(timeout=SETTLE)
        except nats.errors.TimeoutError:
            return None  # still due (NATS away?): `late` takes it if it comes
        self._due_until = 0.0
        return None if _is_status(msg) else msg

    async def late(self) -> Msg | None:
        """A job that arrived after its request was given up on, if one waits (statuses are
        dropped). Never sends a request."""
        while self._sub is not None and self._sub.pending_msgs:
            msg = await self._sub.next_msg(timeout=1.0)
            self._due_until = 0.0
            if not _is_status(msg):
                return msg
        return None

    async def settle(self, timeout: float) -> None:
        """Wait (up to `timeout`) for an answer still due to reach the inbox (then `late`)."""
        deadline = time.monotonic() + timeout
        while self.unsettled and not self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                pass
            self._sub = self._psub = None


class TagPulls:
    """The pulls of the tags listened to, and of tags let go whose last answer may still come."""

    def __init__(self, nc: NATS, js: JetStreamContext, logger: Logger, ensure: bool = True) -> None:
        self.nc = nc
        self.js = js
        self.logger = logger
        self.ensure = ensure
        self.active: dict[str, TagPull] = {}
        self.retired: dict[str, TagPull] = {}

    def get(self, tag: str) -> TagPull:
        pull = (self.active.get(tag) or self.retired.pop(tag, None)
                or TagPull(self.nc, self.js, tag, self.ensure))
        self.active[tag] = pull
        return pull

    def revive(self, tag: str) -> None:
        """The tag is listened to again: its pull (and any answer still due) is back."""
        if tag in self.retired:
            self.active[tag] = self.retired.pop(tag)

    def retire(self, tag: str) -> None:
        """The tag is let go (hot reload): a job still coming for it will be returned."""
        if tag in self.active:
            self.retired[tag] = self.active.pop(tag)

    def with_late(self) -> set[str]:
        """Tags listened to with an answer waiting in their inbox."""
        return {tag for tag, pull in self.active.items() if pull.pending}

    def watching(self) -> bool:
        """Is an answer to a pull still due (or waiting in an inbox)?"""
        pulls = (*self.active.values(), *self.retired.values())
        return any(p.unsettled or p.pending for p in pulls)

    async def return_late(self, retired_only: bool = False) -> None:
        """Jobs that arrived after their pull was given up on, while no slot is free (or for a
        tag let go): nak them so another worker (or this one, later) takes them at once."""
        pulls = list(self.retired.items()) + ([] if retired_only else list(self.active.items()))
        for tag, pull in pulls:
            while (msg := await pull.late()) is not None:
                self.logger.info("late_job_returned", tag=tag)
                try:
                    await msg.nak()
                except Exception:  # JetStream redelivers it after ack_wait
                    pass
            if self.retired.get(tag) is pull and not pull.unsettled:
                del self.retired[tag]
                await pull.close()

    async def close(self, settle: float) -> None:
        """Stopping: wait (up to `settle`) for answers still due, return their jobs, unsubscribe."""
        for pull in [*self.active.values(), *self.retired.values()]:
            await pull.settle(settle)
        await self.return_late()
        for pull in [*self.active.values(), *self.retired.values()]:
            await pull.close()
        self.active.clear()
        self.retired.clear()
