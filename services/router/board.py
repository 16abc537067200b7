"""The router's job board: the views of recent jobs in memory, followed from GO_JOB_EVENTS, so a
job read or a wait for a job's end costs no JetStream request.

Why: a read from the stream is one message get per event (three for a finished job), each a
request, a JSON answer and base64 in this Python process; 50 clients polling 1,000 ids kept
the router's event loop at 22 ms a read. The board follows every job event once, through one
ordered consumer, and answers from memory. Following is kept cheap because every router hears
every job's events: a message is only kept (a look at its type's bytes, no seal check, no
decoding); a read or a wait checks and folds the messages that came since the last one.

What it may answer, so that an answer from memory is one the stream would have given:
- only jobs it followed from their `job.queued` (the router writes it before the job can be
  pulled, so nothing of the job came earlier); a job first heard of by a later event started
  before the board did, and is read from the stream;
- only genuine events (sealed with the job's hold key), folded by `evolve_job`, nothing after
  the job ended, as `history.read_job` does;
- never to a job's holder (a worker), whose read decides a conditional append and must see the
  stream itself: the board may lag the stream by a message or two.

Memory is bounded (`ROUTER_JOB_BOARD_BYTES`, default 64 MiB): the oldest jobs are forgotten
first, and a job the board forgot is read from the stream, as before.
"""

from __future__ import annotations

import asyncio
import collections
import os
from dataclasses import dataclass, field

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from services.common.log import Logger
from services.router.history import Genuine, without_output
from shared import subjects
from shared.errors import InvalidInput
from shared.jobs import TERMINAL, JobEvent, JobQueued, JobRecord, JobView, evolve_job

DEFAULT_BYTES = 64 * 1024 * 1024
ENTRY_OVERHEAD = 400  # bytes a job costs beyond its events' bodies (objects, dict slots)
_QUEUED = b'"type":"job.queued"'  # how msgspec writes the tags: a cheap look, no decoding
_FINISHED = b'"type":"job.finished"'
MESSAGE_OVERHEAD = 600  # bytes a kept message costs beyond its body (the Msg, its headers)
HEARTBEAT = 2.0  # the follow's idle heartbeat: a stalled consumer is recreated within 2 of them


def board_bytes() -> int:
    """`ROUTER_JOB_BOARD_BYTES`: the board's memory bound (0 turns the board off)."""
    raw = os.environ.get("ROUTER_JOB_BOARD_BYTES", "").strip()
    if not raw:
        return DEFAULT_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"ROUTER_JOB_BOARD_BYTES must be a whole number of bytes, not {raw!r}",
                           field="ROUTER_JOB_BOARD_BYTES") from None
    if value < 0:
        raise InvalidInput("ROUTER_JOB_BOARD_BYTES must be 0 (off) or more",
                           field="ROUTER_JOB_BOARD_BYTES")
    return value


@dataclass
class _Entry:
    """A job's messages as they came, folded only when someone reads or waits for the job:
    following costs a few byte comparisons per message, the seals and decoding are paid by
    reads (once per message)."""

    unread: list[Msg] = field(default_factory=list)
    view: JobView | None = None  # the genuine events folded so far (None: none yet)
    history: list[JobEvent] = field(default_factory=list)
    last_seq: int = 0
    size: int = ENTRY_OVERHEAD
    ended: bool = False  # a genuine end was folded: later messages do not count
    usable: bool = True  # False: its first genuine event was not its job.queued
    woken: asyncio.Event | None = None  # made by the first waiter


class Board:
    """Recent jobs' views, from their genuine events, bounded by `max_bytes`."""

    def __init__(self, js: JetStreamContext, genuine: Genuine, logger: Logger,
                 max_bytes: int = DEFAULT_BYTES) -> None:
        self.js = js
        self.genuine = genuine
        self.logger = logger
        self.max_bytes = max_bytes
        self.bytes = 0
        self._jobs: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._prefix = subjects.JOB_EVENTS_PREFIX + "."
        self._sub: JetStreamContext.PushSubscription | None = None

    async def start(self) -> None:
        if self.max_bytes <= 0:
            return
        self._sub = await self.js.subscribe(
            subjects.JOB_EVENTS_SUBJECTS, stream=subjects.JOB_EVENTS_STREAM, cb=self._on_event,
            ordered_consumer=True, idle_heartbeat=HEARTBEAT,
            deliver_policy=api.DeliverPolicy.NEW)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # closing anyway
                pass
            self._sub = None

    def __len__(self) -> int:
        return len(self._jobs)

    async def _on_event(self, msg: Msg) -> None:
        try:
            job_id = subjects.decode_token(msg.subject[len(self._prefix):])
        except InvalidInput:
            return
        entry = self._jobs.get(job_id)
        if entry is None:
            if _QUEUED not in msg.data:
                return  # not followed from its start (or not a job.queued): read from the stream
            entry = self._jobs[job_id] = _Entry()
            self.bytes += entry.size
        elif entry.ended:
            return  # as history.read_job: nothing after the end counts
        entry.unread.append(msg)
        grown = len(msg.data) + MESSAGE_OVERHEAD
        entry.size += grown
        self.bytes += grown
        if entry.woken is not None and _FINISHED in msg.data:
            entry.woken.set()  # its waiters fold it (and check its seal)
        while self.bytes > self.max_bytes and self._jobs:
            _, oldest = self._jobs.popitem(last=False)
            self.bytes -= oldest.size
            if oldest.woken is not None:
                oldest.woken.set()  # a waiter reads the stream instead (the entry is gone)

    def _fold(self, job_id: str, entry: _Entry) -> None:
        """Check and fold the messages that came since the last read."""
        unread, entry.unread = entry.unread, []
        for msg in unread:
            if entry.ended or not entry.usable:
                break
            event = self.genuine.event(job_id, msg.data, msg.headers, quiet=True)
            if event is None:
                continue  # a forgery, or junk: the job's reads never see it
            if entry.view is None:
                if not isinstance(event, JobQueued):
                    entry.usable = False  # it started before the board followed it
                    break
                entry.view = JobView(id=job_id)
            entry.view = evolve_job(entry.view, event)
            entry.history.append(without_output(event))
            entry.last_seq = msg.metadata.sequence.stream
            entry.ended = entry.view.status in TERMINAL

    def get(self, job_id: str, history: bool) -> JobRecord | None:
        """The job's record as `history.read_job` would give it, or None (not on the board)."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        if entry.unread:
            self._fold(job_id, entry)
        if entry.view is None or not entry.usable:
            return None
        if history:
            return JobRecord(view=msgspec.structs.replace(entry.view, logs="", result=None),
                             history=list(entry.history), last_seq=entry.last_seq,
                             subject_seq=entry.last_seq)
        return JobRecord(view=entry.view, last_seq=entry.last_seq, subject_seq=entry.last_seq)

    async def wait(self, job_id: str, timeout: float, history: bool) -> JobRecord | None:
        """Wait up to `timeout` for the job to end; its record then (ended or not), or None when
        the board does not hold it (or forgot it meanwhile)."""
        deadline = asyncio.get_running_loop().time() + max(timeout, 0.0)
        while True:
            record = self.get(job_id, history)
            entry = self._jobs.get(job_id)
            if record is None or entry is None or entry.ended:
                return record
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return record
            if entry.woken is None:
                entry.woken = asyncio.Event()
            entry.woken.clear()
            if entry.unread and any(_FINISHED in m.data for m in entry.unread):
                continue
            try:
                await asyncio.wait_for(entry.woken.wait(), remaining)
            except asyncio.TimeoutError:
                pass
