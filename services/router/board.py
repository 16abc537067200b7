"""The router's job board: the views of recent jobs in memory, followed from GO_JOB_EVENTS, so a
job read or a wait for a job's end costs no JetStream request.

Why: a read from the stream is one message get per event (three for a finished job), each a
request, a JSON answer and base64 in this Python process; 50 clients polling 1,000 ids kept
the router's event loop at 22 ms a read. The board follows every job event once, through one
ordered consumer, and answers from memory. Following is kept cheap because every router hears
every job's events: a message is only kept (a look at its type's bytes, no seal check, no
decoding); a read or a wait checks and folds the messages that came since the last one.

What it may answer, so that an answer from memory is one the stream would have given:
- only jobs it followed from their router's `job.queued` (sealed with the router key itself,
  `Go-Router-Seal`, which no holder can write; the router writes it before the job can be
  pulled, so nothing of the job came earlier); a job first heard of by a later event started
  before the board did (or was forgotten), and is read from the stream;
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
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.common.log import Logger
from services.common.streamreads import Follow
from services.router.history import Genuine, without_output
from shared import seals, subjects
from shared.errors import InvalidInput
from shared.jobs import TERMINAL, JobEvent, JobQueued, JobRecord, JobView, evolve_job

DEFAULT_BYTES = 64 * 1024 * 1024
ENTRY_OVERHEAD = 400  # bytes a job costs beyond its events' bodies and its id (objects, slots)
MESSAGE_OVERHEAD = 120  # bytes a kept message costs beyond its body (a tuple, its seal)
_QUEUED = b'"type":"job.queued"'  # how msgspec writes the tags: a cheap look, no decoding
_FINISHED = b'"type":"job.finished"'


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
    """A job's messages as they came (body, seal, stream sequence), folded only when someone
    reads or waits for the job: following costs a few byte comparisons per message, the seals
    and decoding are paid by reads (once per message). No other header is kept: headers are
    the writer's to choose, and only the body and the seal are counted against the bound."""

    job_id: str
    unread: list[tuple[bytes, str | None, int]] = field(default_factory=list)
    view: JobView | None = None  # the genuine events folded so far (None: none yet)
    history: list[JobEvent] = field(default_factory=list)
    last_seq: int = 0
    size: int = ENTRY_OVERHEAD
    ended: bool = False  # a genuine end was folded: later messages do not count
    woken: asyncio.Event | None = None  # made by the first waiter


class Board:
    """Recent jobs' views, from their genuine events, bounded by `max_bytes`.

    It follows GO_JOB_EVENTS with its own pulls (services/common/streamreads.py), not nats-py's
    push consumers: anyone who may write a job event chooses its headers, and a stored message
    dressed as a heartbeat made a push consumer publish where its writer said."""

    def __init__(self, nc: NATS, genuine: Genuine, router_key: bytes, logger: Logger,
                 max_bytes: int = DEFAULT_BYTES) -> None:
        self.nc = nc
        self.genuine = genuine
        self.router_key = router_key
        self.logger = logger
        self.max_bytes = max_bytes
        self.bytes = 0
        # by the job's subject token: a message's own, not decoded unless it starts a job
        self._jobs: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._prefix = subjects.JOB_EVENTS_PREFIX + "."
        self._follow: Follow | None = None

    async def start(self) -> None:
        if self.max_bytes <= 0:
            return
        info = await self.nc.jetstream().stream_info(subjects.JOB_EVENTS_STREAM)
        self._follow = Follow(self.nc, subjects.JOB_EVENTS_STREAM, subjects.JOB_EVENTS_SUBJECTS,
                              self._on_message, self.logger, name="job board",
                              start_seq=int(info.state.last_seq) + 1)  # from now on
        self._follow.start()

    async def stop(self) -> None:
        if self._follow is not None:
            await self._follow.stop()
            self._follow = None

    def _on_message(self, msg: Msg) -> None:
        headers = msg.headers or {}
        self._keep(msg.subject, msg.data, headers.get(subjects.SEAL_HEADER),
                   headers.get(subjects.ROUTER_SEAL_HEADER), msg.metadata.sequence.stream)

    def _keep(self, subject: str, data: bytes, seal: str | None, router_seal: str | None,
              seq: int) -> None:
        token = subject[len(self._prefix):]
        if seal is not None and len(seal) > 128:
            seal = None  # no seal is that long: a forgery's padding is not kept
        entry = self._jobs.get(token)
        if entry is None:
            # Only a router's job.queued starts a job here (shared/seals.py router_seal): a
            # holder's own job.queued must not stand for the first where the board missed it.
            if _QUEUED not in data or not seals.router_sealed(self.router_key, data,
                                                              router_seal):
                return
            try:
                job_id = subjects.decode_token(token)
            except InvalidInput:
                return
            entry = self._jobs[token] = _Entry(job_id=job_id,
                                               size=ENTRY_OVERHEAD + 2 * len(token))
            self.bytes += entry.size
        elif entry.ended:
            return  # as history.read_job: nothing after the end counts
        entry.unread.append((data, seal, seq))
        grown = len(data) + MESSAGE_OVERHEAD
        entry.size += grown
        self.bytes += grown
        if entry.woken is not None and _FINISHED in data:
            entry.woken.set()  # its waiters fold it (and check its seal)
        while self.bytes > self.max_bytes and self._jobs:
            _, oldest = self._jobs.popitem(last=False)
            self.bytes -= oldest.size
            if oldest.woken is not None:
                oldest.woken.set()  # a waiter reads the stream instead (the entry is gone)

    def _fold(self, entry: _Entry) -> None:
        """Check and fold the messages that came since the last read."""
        job_id = entry.job_id
        unread, entry.unread = entry.unread, []
        for data, seal, seq in unread:
            if entry.ended:
                break
            event = self.genuine.event(job_id, data, {subjects.SEAL_HEADER: seal or ""},
                                       quiet=True)
            if event is None:
                continue  # a forgery, or junk: the job's reads never see it
            if entry.view is None:
                if not isinstance(event, JobQueued):
                    continue  # its router's job.queued comes first (it made the entry)
                entry.view = JobView(id=job_id)
            entry.view = evolve_job(entry.view, event)
            entry.history.append(without_output(event))
            entry.last_seq = seq
            entry.ended = entry.view.status in TERMINAL

    def _entry(self, job_id: str) -> _Entry | None:
        try:
            subject = subjects.job_events_subject(job_id)
        except InvalidInput:
            return None
        return self._jobs.get(subject[len(self._prefix):])

    def get(self, job_id: str, history: bool) -> JobRecord | None:
        """The job's record as `history.read_job` would give it, or None (not on the board)."""
        entry = self._entry(job_id)
        if entry is None:
            return None
        if entry.unread:
            self._fold(entry)
        if entry.view is None:
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
            entry = self._entry(job_id)
            if record is None or entry is None or entry.ended:
                return record
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return record
            if entry.woken is None:
                entry.woken = asyncio.Event()
            entry.woken.clear()
            if any(_FINISHED in data for data, _, _ in entry.unread):
                continue
            try:
                await asyncio.wait_for(entry.woken.wait(), remaining)
            except asyncio.TimeoutError:
                pass
