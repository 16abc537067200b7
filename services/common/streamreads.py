"""Reading streams that other parties write, through our own pulls on an ephemeral consumer.

Why not nats-py's push consumers (`js.subscribe`, ordered consumers, KV watches) or `fetch`:
whoever may write a message chooses its headers, and nats-py takes a stored message with the
headers of a server status for that status. A message with an empty body, `Status: 100`,
`Description: Idle Heartbeat` and `Nats-Consumer-Stalled: <subject>` made a router publish on
`<subject>` with the router's rights (a cancel of any job, from a stolen worker credential), and
reset its consumer for ever; with another status, `fetch` raises. Here the rule is the
protocol's: a message delivered with a `$JS.ACK.` reply subject is a stored message, whatever
its headers say; only one without is the server speaking (404 and 408 end a pull).

Used where a writer may be hostile: the job board (GO_JOB_EVENTS, written by workers) and the
cancellation watches (GO_CANCELS, where workers delete their tags' marks).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Awaitable, Callable

from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from services.common import tasks
from services.common.log import Logger

ACK_PREFIX = "$JS.ACK."
BATCH = 256
PULL_BYTES = 8 * 1024 * 1024  # at most this much per pull: a writer's 1 MB messages times BATCH
# would overrun the client's buffer (nats-server cuts a slow consumer, messages in flight lost)
EXPIRES = 5.0  # seconds a pull waits before the server ends it (408)


def client_of(js: JetStreamContext) -> NATS:
    """The connection a JetStream context speaks through (nats-py keeps it as `_nc`)."""
    return js._nc  # type: ignore[attr-defined,no-any-return]


def stored(msg: Msg) -> bool:
    """Whether `msg` is a stored message (not a status from the server)."""
    return (msg.reply or "").startswith(ACK_PREFIX)


async def _consumer(nc: NATS, stream: str, subject: str, start_seq: int | None,
                    last_per_subject: bool, headers_only: bool,
                    named: bool = False) -> tuple[str, int]:
    """A new ephemeral consumer: its name, and how many messages it holds for us now. `named`:
    created by name, with the subject in the API request's own subject
    (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<subject>`): nats-server checks permissions on
    the request subject only, so that is how a worker may follow its group's config subject and
    no other (services/common/permissions.py)."""
    if last_per_subject:
        start = {"deliver_policy": api.DeliverPolicy.LAST_PER_SUBJECT}
    elif start_seq is None or start_seq <= 1:
        start = {"deliver_policy": api.DeliverPolicy.ALL}
    else:
        start = {"deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start_seq}
    info = await nc.jetstream().add_consumer(stream, config=api.ConsumerConfig(
        filter_subject=subject, ack_policy=api.AckPolicy.NONE, inactive_threshold=60.0,
        mem_storage=True, num_replicas=1, headers_only=headers_only or None,
        name=secrets.token_hex(8) if named else None, **start))
    return str(info.name), int(info.num_pending or 0)


async def read_all(nc: NATS, stream: str, subject: str, *, last_per_subject: bool = False,
                   headers_only: bool = False, start_seq: int | None = None,
                   until_seq: int | None = None, timeout: float = 5.0) -> list[Msg]:
    """The stored messages on `subject` now (from `start_seq`, up to `until_seq`; the last of
    each subject with `last_per_subject`), in stream order."""
    name, _ = await _consumer(nc, stream, subject, start_seq, last_per_subject, headers_only)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    out: list[Msg] = []
    request = json.dumps({"batch": BATCH, "no_wait": True, "max_bytes": PULL_BYTES}).encode()
    deadline = time.monotonic() + timeout
    try:
        while True:
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}", request, reply=inbox)
            got = 0
            while got < BATCH:
                msg = await sub.next_msg(timeout=max(deadline - time.monotonic(), 0.01))
                if not stored(msg):
                    break  # 404: nothing more now (408, 409: the pull's byte limit reached)
                if until_seq is not None and msg.metadata.sequence.stream > until_seq:
                    return out
                out.append(msg)
                got += 1
            if got == 0:
                return out
    finally:
        await sub.unsubscribe()
        try:
            await nc.jetstream().delete_consumer(stream, name)
        except Exception:  # it expires on its own (inactive_threshold)
            pass


class Follow:
    """Every stored message on `subject` from `start_seq` on (or the last of each subject, then
    what comes), handed to `handler` in stream order, for as long as it runs: a new consumer
    from the next sequence after a gap, a lost consumer or a reconnect, so nothing is missed or
    handed twice. `caught_up` is set once a pull found nothing more."""

    def __init__(self, nc: NATS, stream: str, subject: str,
                 handler: Callable[[Msg], Awaitable[None] | None], log: Logger, *,
                 start_seq: int | None = None, last_per_subject: bool = False,
                 caught_up: asyncio.Event | None = None, name: str = "follow",
                 named: bool = False) -> None:
        self.nc, self.stream, self.subject = nc, stream, subject
        self.handler, self.log, self.name = handler, log, name
        self.next_seq = start_seq
        self.last_per_subject = last_per_subject
        self.named = named
        self.caught_up = caught_up or asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = tasks.background(self._run(), name=self.name, logger=self.log, vital=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def _run(self) -> None:
        delay = 0.1
        while True:
            inbox = self.nc.new_inbox()
            sub = await self.nc.subscribe(inbox)
            try:
                # Once a message came, resume by sequence (a last-per-subject start has been
                # delivered by then).
                name, pending = await _consumer(
                    self.nc, self.stream, self.subject, self.next_seq,
                    self.last_per_subject and self.next_seq is None, False, self.named)
                if not pending:
                    self.caught_up.set()
                await self._pull(sub, inbox, name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a gap, a lost consumer, NATS away: start over
                self.log.warning("stream_follow_resubscribing", follow=self.name,
                                 from_seq=self.next_seq, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                delay = 0.1
            finally:
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass

    async def _pull(self, sub: object, inbox: str, name: str) -> None:
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{name}"
        request = json.dumps({"batch": BATCH, "expires": int(EXPIRES * 1e9),
                              "max_bytes": PULL_BYTES}).encode()
        consumer_seq = 0
        silent = 0
        while True:
            await self.nc.publish(next_subject, request, reply=inbox)
            got, answered = 0, False
            deadline = time.monotonic() + EXPIRES + 2.0
            while got < BATCH:
                try:
                    msg = await sub.next_msg(  # type: ignore[attr-defined]
                        timeout=max(deadline - time.monotonic(), 0.01))
                except (asyncio.TimeoutError, nats_errors.TimeoutError):
                    break
                answered = True
                if not stored(msg):
                    status = (msg.headers or {}).get("Status", "")
                    if status in ("404", "408"):
                        self.caught_up.set()
                        break  # this pull is over: nothing (more) came in time
                    if status == "409" and "maxbytes" in (msg.headers or {}).get(
                            "Description", "").replace(" ", "").lower():
                        break  # this pull is over: it got its bytes; the next goes on
                    if status in ("409", "503"):  # the consumer is gone, no responders
                        raise RuntimeError(f"the pull was refused ({status})")
                    continue  # a heartbeat
                meta = msg.metadata
                if meta.sequence.consumer != consumer_seq + 1:
                    raise RuntimeError(f"consumer sequence {meta.sequence.consumer} after"
                                       f" {consumer_seq}")
                consumer_seq = meta.sequence.consumer
                self.next_seq = meta.sequence.stream + 1
                done = self.handler(msg)
                if done is not None:
                    await done
                got += 1
                if not meta.num_pending:
                    self.caught_up.set()
            silent = 0 if answered else silent + 1
            if silent >= 2:  # two pulls without any answer: the consumer is gone
                raise RuntimeError("no answer to two pulls")
