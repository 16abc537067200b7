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
import json
import os
import time
from dataclasses import dataclass, field

import msgspec
from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api

from services.common.log import Logger
from services.router.history import Genuine, without_output
from shared import seals, subjects
from shared.errors import InvalidInput
from shared.jobs import TERMINAL, JobEvent, JobQueued, JobRecord, JobView, evolve_job

DEFAULT_BYTES = 64 * 1024 * 1024
ENTRY_OVERHEAD = 400  # bytes a job costs beyond its events' bodies and its id (objects, slots)
MESSAGE_OVERHEAD = 120  # bytes a kept message costs beyond its body (a tuple, its seal)
_QUEUED = b'"type":"job.queued"'  # how msgspec writes the tags: a cheap look, no decoding
_FINISHED = b'"type":"job.finished"'
_ACK_PREFIX = "$JS.ACK."  # a stored message's reply subject; the server's status messages have none
BATCH = 256  # messages asked for per pull
PULL_EXPIRES = 5.0  # seconds a pull waits for messages before the server ends it (408)


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

    unread: list[tuple[bytes, str | None, int]] = field(default_factory=list)
    view: JobView | None = None  # the genuine events folded so far (None: none yet)
    history: list[JobEvent] = field(default_factory=list)
    last_seq: int = 0
    size: int = ENTRY_OVERHEAD
    ended: bool = False  # a genuine end was folded: later messages do not count
    woken: asyncio.Event | None = None  # made by the first waiter


class Board:
    """Recent jobs' views, from their genuine events, bounded by `max_bytes`.

    It follows GO_JOB_EVENTS with its own pulls on an ephemeral pull consumer, not nats-py's
    push or fetch machinery: anyone who may write a job event chooses its headers, and nats-py
    takes a stored message with `Status: 100` for a server heartbeat (and publishes to its
    `Nats-Consumer-Stalled` subject: a forged one made routers cancel jobs) or with another
    status for an error. Here a message with a `$JS.ACK.` reply subject is a stored message,
    whatever its headers say; only a message without one is the server speaking."""

    def __init__(self, nc: NATS, genuine: Genuine, router_key: bytes, logger: Logger,
                 max_bytes: int = DEFAULT_BYTES) -> None:
        self.nc = nc
        self.genuine = genuine
        self.router_key = router_key
        self.logger = logger
        self.max_bytes = max_bytes
        self.bytes = 0
        self._jobs: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._prefix = subjects.JOB_EVENTS_PREFIX + "."
        self._task: asyncio.Task[None] | None = None
        self.next_seq = 0  # the stream sequence the follow resumes from

    async def start(self) -> None:
        if self.max_bytes <= 0:
            return
        info = await self.nc.jetstream().stream_info(subjects.JOB_EVENTS_STREAM)
        self.next_seq = int(info.state.last_seq) + 1  # what happens from now on
        self._task = asyncio.create_task(self._follow(), name="job board")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    def __len__(self) -> int:
        return len(self._jobs)

    async def _follow(self) -> None:
        """Pull the stream's new messages for ever: a consumer from `next_seq`, pulls of BATCH,
        a new consumer after a gap, a lost consumer or a reconnect."""
        delay = 0.1
        while True:
            inbox = self.nc.new_inbox()
            sub = await self.nc.subscribe(inbox)
            try:
                name = await self._consumer()
                await self._pull_until_broken(sub, inbox, name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a gap, a lost consumer, NATS away: start over
                self.logger.warning("job_board_resubscribing", from_seq=self.next_seq,
                                    error=str(exc) or type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                delay = 0.1
            finally:
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass

    async def _consumer(self) -> str:
        info = await self.nc.jetstream().add_consumer(
            subjects.JOB_EVENTS_STREAM, config=api.ConsumerConfig(
                filter_subject=subjects.JOB_EVENTS_SUBJECTS, ack_policy=api.AckPolicy.NONE,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.next_seq,
                inactive_threshold=60.0, mem_storage=True, num_replicas=1))
        return str(info.name)

    async def _pull_until_broken(self, sub: object, inbox: str, name: str) -> None:
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.JOB_EVENTS_STREAM}.{name}"
        request = json.dumps({"batch": BATCH, "expires": int(PULL_EXPIRES * 1e9)}).encode()
        consumer_seq = 0
        silent = 0
        while True:
            await self.nc.publish(next_subject, request, reply=inbox)
            got = 0
            deadline = time.monotonic() + PULL_EXPIRES + 2.0
            answered = False
            while got < BATCH:
                try:
                    msg = await sub.next_msg(  # type: ignore[attr-defined]
                        timeout=max(deadline - time.monotonic(), 0.01))
                except (asyncio.TimeoutError, nats_errors.TimeoutError):
                    break
                answered = True
                if not (msg.reply or "").startswith(_ACK_PREFIX):
                    status = (msg.headers or {}).get("Status", "")
                    if status in ("404", "408"):
                        break  # this pull is over: nothing (more) came in time
                    if status in ("409", "503"):  # consumer deleted, no responders...
                        raise RuntimeError(f"the pull was refused ({status})")
                    continue  # a heartbeat
                meta = msg.metadata
                if meta.sequence.consumer != consumer_seq + 1:
                    raise RuntimeError(f"consumer sequence {meta.sequence.consumer} after"
                                       f" {consumer_seq}")
                consumer_seq = meta.sequence.consumer
                self.next_seq = meta.sequence.stream + 1
                self._keep(msg.subject, msg.data, (msg.headers or {}).get(subjects.SEAL_HEADER),
                           (msg.headers or {}).get(subjects.ROUTER_SEAL_HEADER),
                           meta.sequence.stream)
                got += 1
            silent = 0 if answered else silent + 1
            if silent >= 2:  # two pulls without any answer: the consumer is gone
                raise RuntimeError("no answer to two pulls")

    def _keep(self, subject: str, data: bytes, seal: str | None, router_seal: str | None,
              seq: int) -> None:
        try:
            job_id = subjects.decode_token(subject[len(self._prefix):])
        except InvalidInput:
            return
        if seal is not None and len(seal) > 128:
            seal = None  # no seal is that long: a forgery's padding is not kept
        entry = self._jobs.get(job_id)
        if entry is None:
            # Only a router's job.queued starts a job here (shared/seals.py router_seal): a
            # holder's own job.queued must not stand for the first where the board missed it.
            if _QUEUED not in data or not seals.router_sealed(self.router_key, data,
                                                              router_seal):
                return
            entry = self._jobs[job_id] = _Entry(size=ENTRY_OVERHEAD + len(job_id))
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

    def _fold(self, job_id: str, entry: _Entry) -> None:
        """Check and fold the messages that came since the last read."""
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

    def get(self, job_id: str, history: bool) -> JobRecord | None:
        """The job's record as `history.read_job` would give it, or None (not on the board)."""
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        if entry.unread:
            self._fold(job_id, entry)
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
            entry = self._jobs.get(job_id)
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
