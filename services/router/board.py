"""The router's job board: the views of recent jobs in memory, followed from GO_JOB_EVENTS, so a
job read or a wait for a job's end costs no JetStream request.

Why: a read from the stream is one message get per event (three for a finished job), each a
request, a JSON answer and base64 in this Python process; 50 clients polling 1,000 ids kept
the router's event loop at 22 ms a read. The board follows every job event once, through one
ordered consumer, and answers from memory.

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
_QUEUED = b'"type":"job.queued"'  # how msgspec writes the tag: a cheap look before the seal
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
    view: JobView
    history: list[JobEvent] = field(default_factory=list)
    last_seq: int = 0
    size: int = ENTRY_OVERHEAD
    ended: asyncio.Event = field(default_factory=asyncio.Event)


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
            event = self.genuine.event(job_id, msg.data, msg.headers, quiet=True)
            if not isinstance(event, JobQueued):
                return
            entry = self._jobs[job_id] = _Entry(view=JobView(id=job_id))
            self.bytes += entry.size
        else:
            if entry.view.status in TERMINAL:
                return  # as history.read_job: nothing after the end counts
            event = self.genuine.event(job_id, msg.data, msg.headers, quiet=True)
            if event is None:
                return
        entry.view = evolve_job(entry.view, event)
        entry.history.append(without_output(event))
        entry.last_seq = msg.metadata.sequence.stream
        entry.size += len(msg.data)
        self.bytes += len(msg.data)
        if entry.view.status in TERMINAL:
            entry.ended.set()
        while self.bytes > self.max_bytes and self._jobs:
            _, oldest = self._jobs.popitem(last=False)
            self.bytes -= oldest.size
            oldest.ended.set()  # a waiter reads the stream instead (the entry is gone)

    def get(self, job_id: str, history: bool) -> JobRecord | None:
        """The job's record as `history.read_job` would give it, or None (not on the board)."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        if history:
            return JobRecord(view=msgspec.structs.replace(entry.view, logs="", result=None),
                             history=list(entry.history), last_seq=entry.last_seq,
                             subject_seq=entry.last_seq)
        return JobRecord(view=entry.view, last_seq=entry.last_seq, subject_seq=entry.last_seq)

    async def wait(self, job_id: str, timeout: float, history: bool) -> JobRecord | None:
        """Wait up to `timeout` for the job to end; its record then (ended or not), or None when
        the board does not hold it (or forgot it meanwhile)."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        if entry.view.status not in TERMINAL:
            try:
                await asyncio.wait_for(entry.ended.wait(), max(timeout, 0.0))
            except asyncio.TimeoutError:
                pass
        if self._jobs.get(job_id) is not entry:
            return None
        return self.get(job_id, history)

