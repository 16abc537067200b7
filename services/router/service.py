"""The router's core: follow config, resolve each job's tag, enqueue it durably, read job history."""

from __future__ import annotations

import asyncio
import collections
import difflib
import itertools
import os
import re
import time
from typing import Any, Awaitable, Callable, Coroutine

import msgspec
from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, BadRequestError, NotFoundError

from services.common import bus, tasks
from services.common.http import TokenCheck
from services.common.liveworkers import LiveWorkers
from services.common.log import Logger
from services.common.metrics import RouterMetrics
from services.common.queues import waiting_per_tag
from services.common.storage import StorageWatch
from services.common.signingkeys import load_verifier
from services.router.board import Board, board_bytes
from services.router.history import LAST_POLL, Genuine, not_found, read_job
from shared import grants, idempotency, seals
from shared import state as st
from shared import subjects
from shared.codec import decode, encode, to_builtins
from shared.errors import (
    Conflict, DependenciesFailed, Forbidden, GetOperateError, InvalidInput, NotFound,
    OutcomeUnknown, StorageFull,
    TooBusy, Unauthorized, Unavailable,
)
from shared.admission import Gate, Rejected, Sampled, admit_each, admit_many
from shared.signing import Verifier
from shared.snapshots import SnapshotRejected, decode_snapshot, open_snapshot
from shared.jobs import (
    MAX_MESSAGE_BYTES,
    TERMINAL,
    BatchAnswer,
    JobBatch,
    JobFinished,
    Job, JobQuery, JobQueued, JobRecord, JobSubmit, JobView, SubmitAnswer, WorkerStatus,
    validate_batch,
    validate_submit,
)
from shared import routing
from shared.identity import Identity, authorize_submit


MAX_INFLIGHT_SUBMITS = 1000
MAX_WAIT = 300.0  # the longest a job read waits for the job to end (HTTP and NATS alike)
CONFIG_RUN = 512  # config messages of a replay checked (one signature) and folded at once
BATCH_OVERLAP = 32  # submissions of one batch routed at the same time
# A submission naming what the config stream has and this router not yet waits for it until
# this many seconds before its answer bound, which leaves the enqueue its time.
CATCH_UP_LEAVES = 2.0
REPLAY_PROGRESS = 5.0  # seconds between the progress lines of a long config replay at start
REPLAY_STALL = 30.0  # a start whose config replay has not moved for this long fails
FOLLOW_GRACE = 0.5  # how long a catch-up leaves to the follow before reading the stream itself
FOLLOW_CHECK = 5.0  # how often the router checks that its follow of the config stream moves
MAX_READ_BEHIND = 1000  # past this gap a catch-up waits for the follow (a replay, not a stall)
MAX_WAITS_PER_READER = 100  # waiting reads one token, flow or holder may have at a time
MAX_INFLIGHT_READS = 5000  # go.router.job requests being answered at once (apart from submits)
REPLY_SUBJECT = re.compile(r"^_INBOX(\.[A-Za-z0-9]+)+$")  # a requester's inbox, nothing else
# The router answers a submission within this many seconds (docs/http-api.md): queued, refused,
# or OutcomeUnknown. Clients should wait longer than this (15 s or more; the CLI waits 30 s).
ANSWER_WITHIN = 10.0


class NoLiveWorker(Conflict):
    """Raised when a job asks for (or the router requires) a live worker on its tag and none is."""

    code = "no_live_worker"


_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_job_id() -> str:
    """Time-ordered id (ms timestamp + this process's random prefix + a counter), so ids sort by
    submission and are unique across routers without a system call per job (the profile showed
    `os.urandom` per job)."""
    return f"{int(time.time() * 1000):012x}{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFF:08x}"


def _may_redrive(first: JobQueued) -> bool:
    """A repeat may publish a queued job again (to complete a submission whose queue message
    never reached the stream) only while JetStream would still drop it as a duplicate if it
    did: inside the duplicate window, with a margin for the clocks of two routers."""
    return time.time() - first.time < idempotency.DUPLICATE_WINDOW - ANSWER_WITHIN - 20.0


class RouterService:
    """Turns submissions into durable queue messages on their tag's subject."""

    def __init__(self, nc: NATS, logger: Logger, *, admin_token: str, key: bytes,
                 require_worker: bool = False):
        self.require_worker = require_worker
        self.tokens = TokenCheck(admin_token, lambda: self.config)  # HTTP and NATS alike
        # The routers' key (services/router/keys.py): signs flow grants, derives hold keys.
        self.key = key
        self.genuine = Genuine(key, logger)
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.board = Board(nc, self.genuine, key, logger, board_bytes())
        self.logger = logger
        self.config = st.ConfigState()
        self.config_ready = asyncio.Event()
        self.workers = LiveWorkers(self.js, logger, lambda: self.config)
        self._subs: list[object] = []
        self._index: dict[str, tuple[str, ...]] = {}
        self._index_seq = -1
        self._inflight = asyncio.Semaphore(MAX_INFLIGHT_SUBMITS)
        self._reads_inflight = asyncio.Semaphore(MAX_INFLIGHT_READS)  # waits never block submits
        self._waits: collections.Counter[str] = collections.Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics = RouterMetrics(lambda: self.config.seq)
        self.storage = StorageWatch()
        self._repeats = Sampled()
        self._config_stream_seq = 0  # the config stream's last message this router has seen
        self._config_run: list[Msg] = []  # a replay's messages not folded yet
        self._read_lock = asyncio.Lock()  # one reader of missing config messages at a time
        self._watcher: asyncio.Task[None] | None = None

    async def start(self, verifier: Verifier | None = None) -> None:
        # Every config event is checked before it is folded (shared/admission.py); without a
        # public key there is nothing to check with, and the router refuses to start.
        self._config_gate = Gate(verifier or load_verifier())
        await bus.wait_streams(self.nc, self.logger)  # the config service declares them
        start_seq = 1
        try:
            snapshot = await bus.get_snapshot(self.js)
        except (nats_errors.Error, asyncio.TimeoutError) as exc:  # a cache: replay instead
            self.logger.warning("snapshot_unreadable", source=subjects.SNAPSHOT_BUCKET,
                                error=repr(exc))
            snapshot = None
        if snapshot is not None:
            try:
                snap = decode_snapshot(snapshot)
                self.config = open_snapshot(snap, self._config_gate.verifier)
                self._config_gate.start_at(snap.seq, snap.hash)
                start_seq = snap.stream_seq + 1
                self._config_stream_seq = snap.stream_seq
            except SnapshotRejected as exc:  # a cache: replay the stream instead
                self.logger.warning("snapshot_rejected", source=subjects.SNAPSHOT_BUCKET,
                                    reason=exc.reason, error=exc.message)
        self._subs.append(
            await bus.follow(self.js, subjects.CONFIG_STREAM, subjects.CONFIG_SUBJECTS,
                             self._on_config, self.config_ready, start_seq=start_seq)
        )
        await self.workers.start()
        await self.board.start()
        await self._replayed()
        self._fold_run()  # a run still waiting for more: ready means folded
        for subject, answer, bound in (
                (subjects.SUBMIT_SUBJECT, self._answer_submit, self._inflight),
                (subjects.JOB_SUBJECT, self._answer_job, self._reads_inflight)):
            self._subs.append(await self.nc.subscribe(
                subject, queue=subjects.ROUTER_QUEUE_GROUP,
                cb=self._overlapping(answer, bound)))
        self._watcher = tasks.background(self._watch_follow(), name="config-follow-check",
                                         logger=self.logger, vital=True)
        self.logger.info("router_ready", config_seq=self.config.seq)

    async def _replayed(self) -> None:
        """Wait until the follow has delivered the config stream as it was at start: as long as
        the replay moves (a log of a million events without a snapshot takes half a minute or
        more), logging its progress every REPLAY_PROGRESS s; TimeoutError once it has not moved
        for REPLAY_STALL s."""
        moved_at, seen = time.monotonic(), self._config_stream_seq
        while True:
            try:
                await asyncio.wait_for(self.config_ready.wait(), REPLAY_PROGRESS)
                return
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            if self._config_stream_seq > seen:
                moved_at, seen = now, self._config_stream_seq
                self.logger.info("config_replay_progress", folded_to=seen)
            elif now - moved_at > REPLAY_STALL:
                raise TimeoutError(f"the config replay has not moved for {REPLAY_STALL:g} s"
                                   f" (folded to stream sequence {seen})")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        await self.board.stop()
        await self.workers.stop()
        for sub in self._subs:
            try:
                await sub.unsubscribe()  # type: ignore[attr-defined]
            except Exception:
                pass

    def _groups_by_tag(self) -> dict[str, tuple[str, ...]]:
        """The tag -> groups index, rebuilt only when the config changed (not per job)."""
        if self._index_seq != self.config.seq:
            self._index = st.groups_by_tag(self.config)
            self._index_seq = self.config.seq
        return self._index

    async def _on_config(self, msg: Msg) -> None:
        """Fold the signed events of the log; log and skip anything else (never stop). A
        replay's messages are taken in runs (up to CONFIG_RUN, or until the consumer has no
        more), so one signature vouches for a run (shared/admission.py: admit_many); a live
        event comes alone and is checked alone."""
        self._config_run.append(msg)
        try:
            more = int(msg.metadata.num_pending or 0)
        except Exception:
            more = 0
        if more and len(self._config_run) < CONFIG_RUN:
            if len(self._config_run) == 1:  # never left waiting if no more comes after all
                asyncio.get_running_loop().call_later(0.2, self._fold_run, msg)
            return
        self._fold_run()

    def _fold_run(self, first: Msg | None = None) -> None:
        """Check and fold the messages taken so far (`first`: only if the run it started is
        still waiting)."""
        if not self._config_run or (first is not None and self._config_run[0] is not first):
            return
        run, self._config_run = self._config_run, []
        self._fold([(m.subject, m.headers, m.data, m.metadata.sequence.stream) for m in run])

    def _fold(self, run: list[tuple[str, dict[str, str] | None, bytes, int]]) -> None:
        """Admit and fold config messages (subject, headers, data, stream sequence) in stream
        order. Messages at or below the sequence folded already are skipped: a catch-up may have
        read them from the stream before the follow delivered them."""
        run = [item for item in run if item[3] > self._config_stream_seq]
        if not run:
            return
        items = [(subject, headers, data) for subject, headers, data, _ in run]
        try:
            results = admit_many(self._config_gate, items)
        except Exception as exc:  # a bug must not lose a run: take each message on its own
            self.logger.exception("config_run_failed", exc, messages=len(run))
            results = admit_each(self._config_gate, items)
        records = []
        for (subject, _, _, stream_seq), result in zip(run, results):
            if isinstance(result, Rejected):
                exc = result
                if exc.reason == "repeat" and (exc.seq or 0) <= self._config_gate.snapshot_seq:
                    continue  # in the snapshot it started from (published after it was taken)
                if exc.reason == "repeat" and not self._repeats.worth_logging():
                    continue  # a republished log (the config service repairing its stream)
                self.logger.warning("config_event_rejected", seq=exc.seq, reason=exc.reason,
                                    stream_seq=stream_seq, subject=subject,
                                    error=exc.message, repeats=self._repeats.count or None)
            elif result is None:
                self.logger.warning("config_event_unknown_type_skipped", stream_seq=stream_seq)
            else:
                records.append(result)
        if records:
            self.config = st.fold(records, self.config)
        self._config_stream_seq = max(self._config_stream_seq, run[-1][3])

    async def submit(self, sub: JobSubmit, who: Identity, *, planned: bool = False,
                     key: str | None = None) -> SubmitAnswer:
        """Route and enqueue a submission with the rights of `who` (already authorized for its
        workspace: shared/identity.py). `planned`: a flow step its flow's grant vouches for.
        `key`: the client's idempotency key (shared/idempotency.py)."""
        try:
            return await self._submit(sub, who, planned, key)
        except GetOperateError as exc:
            self.metrics.refused.labels(exc.code).inc()
            raise

    async def _submit(self, sub: JobSubmit, who: Identity, planned: bool, key: str | None
                      ) -> SubmitAnswer:
        validate_submit(sub)
        deadline = time.monotonic() + ANSWER_WITHIN
        await self._connected(deadline - ANSWER_WITHIN / 2)
        first: JobQueued | None = None
        request = None
        if key is not None:
            idempotency.check_key(key)
            request = idempotency.digest(sub)
            try:
                job_id, found = await asyncio.wait_for(
                    self._keyed(key, sub.workspace, planned), ANSWER_WITHIN / 2)
            except (asyncio.TimeoutError, nats_errors.Error) as exc:
                raise Unavailable(
                    f"NATS did not answer whether {idempotency.HEADER} {key!r} was used before"
                    f" ({exc!r}), so nothing was queued; retry shortly",
                    field=idempotency.HEADER) from exc
            if found is not None:
                queued, record = found
                idempotency.check_repeat(key, queued.request if queued else None, request)
                first = queued or JobQueued(job_id=job_id, time=record.view.queued_at or 0.0,
                                            tag=record.view.tag or "", workspace=sub.workspace,
                                            language=record.view.language or "")
                if record.view.status != "queued" or not _may_redrive(first):
                    return self._replay(first, [])
        else:
            job_id = new_job_id()
        try:
            route = self._route(sub, who, planned)
        except (NotFound, DependenciesFailed):
            # Read your writes: a script deployed (or fixed) a moment ago may not be folded
            # here yet. Catch up with the config stream, then decide once more.
            if not await self._catch_up(max(0.5, deadline - CATCH_UP_LEAVES - time.monotonic())):
                raise
            try:
                route = self._route(sub, who, planned)
            except (NotFound, DependenciesFailed) as exc:
                self.logger.info("route_refused_after_catch_up", error=exc.message,
                                 config_seq=self.config.seq,
                                 stream_seq=self._config_stream_seq)
                raise
        if first is not None and route.tag != first.tag:  # the config changed: leave it be
            return self._replay(first, [])
        tag = route.tag
        index = self._groups_by_tag()
        routing.check_timeout(self.config, route, sub.timeout, index)
        groups = list(index.get(tag, ()))
        live, warning = self._who_serves(tag, route.language, groups, admin=who.admin)
        if not live:
            if (sub.require_worker or self.require_worker) and first is None:
                raise NoLiveWorker(f"refused: {warning}", field="tag")
        # A flow's steps go to tags of their own: one that nobody can run stalls the flow there.
        for step in route.steps:
            step_live, step_warning = self._who_serves(
                step.tag, step.language, list(index.get(step.tag, ())), admin=who.admin)
            if not step_live:
                said = f"step {step.index} ({step.name}): {step_warning}"
                warning = f"{warning}; {said}" if warning else said
        grant = self._grant(job_id, sub.workspace, who, route) if route.kind == "flow" else None
        job = Job(id=job_id, workspace=sub.workspace, language=route.language,
                  code=route.code, args=sub.args, tag=tag, timeout=sub.timeout or route.timeout,
                  submitted_at=first.time if first else time.time(), kind=route.kind,
                  path=route.path, version=route.version, steps=route.steps, parent=sub.parent,
                  step=sub.step, grant=grant, lock=route.lock)
        body = encode(job)
        if len(body) > MAX_MESSAGE_BYTES:
            raise InvalidInput(
                f"the job is {len(body)} bytes once routed (code, arguments and flow steps); the"
                f" limit is {MAX_MESSAGE_BYTES}", field="code")
        queued = JobQueued(job_id=job.id, time=job.submitted_at, tag=tag, workspace=job.workspace,
                           language=job.language, kind=job.kind, path=job.path, parent=job.parent,
                           request=request)
        steps = [s.tag for s in route.steps]
        if key is not None and first is None:
            # Claim the key: job.queued is stored only on the job's empty subject, so of two
            # racing repeats exactly one queues its request; the other answers with it (or
            # 409 when its request differs), whichever stream each publish reached first.
            hold = seals.hold_key(self.key, job.id)
            try:
                claimed = await self._record(hold, queued, f"{job.id}:queued", expect_last=0,
                                             within=max(deadline - time.monotonic(), 0.5))
            except APIError as exc:
                if exc.err_code != bus.WRONG_LAST_SEQUENCE:
                    raise
                found = await self._queued(job_id)
                if found is None or found[0] is None:
                    raise Conflict(f"the history of job {job_id!r} holds messages no router"
                                   " wrote; use another key", field=idempotency.HEADER) from exc
                idempotency.check_repeat(key, found[0].request, request or "")
                return self._replay(found[0], steps)
            enqueued = await self._enqueue(job, body, None, deadline, claimed)
        else:
            enqueued = await self._enqueue(job, body, queued, deadline)
        if first is not None:  # a repeat inside the duplicate window: completed if need be
            if not getattr(enqueued, "duplicate", False):
                self.logger.info("job_submission_completed", job_id=job.id, tag=tag)
            return self._replay(first, steps)
        self.metrics.routed.labels(tag).inc()
        self.logger.info("job_routed", job_id=job.id, tag=tag, workspace=job.workspace,
                         kind=job.kind, path=job.path, language=job.language,
                         live_workers=len(live))
        return SubmitAnswer(id=job.id, tag=tag, groups=groups, live_workers=len(live),
                            warning=warning, steps=steps)

    def _route(self, sub: JobSubmit, who: Identity, planned: bool) -> routing.Route:
        return routing.route(
            self.config, workspace=sub.workspace, args=sub.args, override=sub.tag,
            language=sub.language, code=sub.code, path=sub.path, kind=sub.kind, admin=who.admin,
            planned=planned,
        )

    def _who_serves(self, tag: str, language: str, groups: list[str], *, admin: bool
                    ) -> tuple[list[WorkerStatus], str | None]:
        """The live workers that can take a job in `language` on `tag` now, and when there is
        none, the warning that says why and what becomes of the job. Only an admin's warning
        quotes a failed init script's output (it may hold the group's secrets, as GET /workers
        keeps it from workspace tokens)."""
        listening = self.workers.serving(tag)
        live = [w for w in listening if _unable(w, language) is None]
        if live:
            return live, None
        if listening:
            warning = (f"{len(listening)} live worker(s) listen to tag {tag!r}, but "
                       + _why_none(listening, language, admin=admin))
            if any(_unable(w, language) == "runtime" for w in listening):
                return live, warning + ("; one of them that takes the job fails it, naming"
                                        " the runtime to install")
            return live, warning + "; the job waits in the queue until one can take it"
        where = (f"groups configured with it: {', '.join(groups)}" if groups
                 else "no worker group is configured with it")
        return live, (f"no live worker listens to tag {tag!r} ({where}); the job waits in the"
                      " queue until one does")

    async def _catch_up(self, within: float) -> bool:
        """Fold (within `within` seconds) every message the config stream held when asked; True
        when that folded something new (worth routing again). The follow gets FOLLOW_GRACE to
        deliver them; then the router reads what is missing from the stream itself, so a follow
        that stalls (an ordered consumer being recreated on a loaded machine) costs a
        submission half a second, not a wrong 404. If the stream's info does not come (a
        loaded server), everything after the last folded message is read instead."""
        before = self._config_stream_seq
        deadline = time.monotonic() + within
        target: int | None
        try:
            info = await asyncio.wait_for(self.js.stream_info(subjects.CONFIG_STREAM), within)
            target = info.state.last_seq
        except (nats_errors.Error, APIError, asyncio.TimeoutError) as exc:
            self.logger.warning("config_catch_up_no_info", error=repr(exc))
            target = None
        if target is not None and before >= target:
            return False
        grace = time.monotonic() + min(FOLLOW_GRACE, within)
        while (target is None or self._config_stream_seq < target) \
                and time.monotonic() < grace:
            await asyncio.sleep(0.01)
        if target is None or self._config_stream_seq < target:
            await self._read_missing(target, "catch_up", deadline)
        while target is not None and self._config_stream_seq < target \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if target is not None and self._config_stream_seq < target:
            self.logger.warning("config_catch_up_incomplete", target=target,
                                folded_to=self._config_stream_seq, within_s=within)
        return self._config_stream_seq > before

    async def _read_missing(self, target: int | None, why: str, deadline: float) -> None:
        """Read the config stream's messages after the last one folded, up to `target` (None:
        to the end, at most MAX_READ_BEHIND), one message get each (the gaps of deleted
        messages skipped by `next`), and fold them."""
        async with self._read_lock:
            self._fold_run()  # a run the follow took already goes first, in order
            if target is None:
                target = self._config_stream_seq + MAX_READ_BEHIND
            behind = target - self._config_stream_seq
            if behind <= 0 or behind > MAX_READ_BEHIND:
                return
            start = self._config_stream_seq
            read: list[tuple[str, dict[str, str] | None, bytes, int]] = []
            seq = start + 1
            try:
                while seq <= target and time.monotonic() < deadline:
                    raw = await self.js.get_msg(subjects.CONFIG_STREAM, seq,
                                                subject=subjects.CONFIG_SUBJECTS, next=True)
                    if raw.seq is None or raw.seq > target:
                        break
                    read.append((raw.subject or "", raw.headers, raw.data or b"", raw.seq))
                    seq = raw.seq + 1
            except NotFoundError:
                pass  # nothing after `seq`: the rest was deleted
            except (nats_errors.Error, APIError, asyncio.TimeoutError) as exc:
                self.logger.warning("config_read_failed", why=why, error=repr(exc),
                                    from_seq=seq, target=target)
            self._fold(read)
            self.logger.warning("config_follow_behind", why=why, from_seq=start + 1,
                                target=target, read=len(read),
                                folded_to=self._config_stream_seq)

    async def _watch_follow(self) -> None:
        """Every FOLLOW_CHECK seconds: when the follow has not moved while the stream holds
        newer messages, read them (a revoked token must not stay valid because a consumer
        stalled)."""
        last_seen = -1
        while True:
            await asyncio.sleep(FOLLOW_CHECK)
            try:
                info = await self.js.stream_info(subjects.CONFIG_STREAM)
                seen = self._config_stream_seq
                if seen < info.state.last_seq and seen == last_seen:
                    await self._read_missing(info.state.last_seq, "stalled",
                                             time.monotonic() + FOLLOW_CHECK)
            except (nats_errors.Error, APIError, asyncio.TimeoutError):
                pass  # NATS away: the next check tries again
            except Exception as exc:  # a bug must not end the watch
                self.logger.exception("config_watch_failed", exc)
            last_seen = self._config_stream_seq

    async def _connected(self, until: float) -> None:
        """Wait (until `until`) for a NATS connection that is failing over to another node or
        reconnecting; then refuse at once. Publishing while disconnected would leave the job in
        nats-py's buffer, to be sent, or not, after the answer: refusing is definite."""
        while not self.nc.is_connected:
            if time.monotonic() >= until:
                raise Unavailable("the router is not connected to NATS, so nothing was queued;"
                                  " retry shortly", field="nats")
            await asyncio.sleep(0.05)

    async def _enqueue(self, job: Job, body: bytes, queued: JobQueued | None,
                       deadline: float, claimed: Any = None) -> Any:
        """History first, then the queue, once the history's ack gives its sequence (the job
        carries it, so a worker whose job ends quickly writes one event, not two:
        `_queue_after`); we wait for both acks until `deadline` (ANSWER_WITHIN seconds after
        the submission arrived). `claimed`: a keyed job's job.queued ack (stored already).

        Past that bound the answer is OutcomeUnknown (with the job's id), and the publishes go
        on in the background, with the same message ids, until JetStream confirms or the
        duplicate window closes: a job whose submission timed out ends up queued once, never
        twice. A definite refusal (storage full, a bad request: the server answered, nothing
        was stored) is recorded as the job's end, `not enqueued`, and is the only case that
        is: a job that ran is never recorded as not enqueued."""
        hold = seals.hold_key(self.key, job.id)  # only the worker that pulls the job sees it
        started = time.monotonic()
        within = idempotency.DUPLICATE_WINDOW - ANSWER_WITHIN - 10.0
        history = (asyncio.ensure_future(self._record(hold, queued, f"{job.id}:queued",
                                                      within=within))
                   if queued is not None else _stored(claimed))  # a keyed job's: claimed already
        enqueue = asyncio.ensure_future(self._queue_after(history, job, body, hold, within))
        both = asyncio.ensure_future(asyncio.gather(history, enqueue, return_exceptions=True))
        try:
            results = await asyncio.wait_for(asyncio.shield(both),
                                             max(deadline - time.monotonic(), 0.5))
        except asyncio.TimeoutError:
            self._settle_later(job, hold, both, started)
            raise OutcomeUnknown(
                f"NATS did not confirm job {job.id!r} within {ANSWER_WITHIN:g} s; it may still be"
                f" queued: look it up with GET /jobs/{job.id} (getoperate job {job.id}), or"
                f" repeat the submission with the same {idempotency.HEADER}, which never"
                " queues it twice", job_id=job.id) from None
        return await self._settled(job, hold, results, started)

    async def _queue_after(self, history: "asyncio.Future[Any]", job: Job, body: bytes,
                           hold: str, within: float) -> Any:
        """Publish the job once its job.queued is stored, naming that event's sequence
        (QUEUED_SEQ_HEADER). If the history failed the job is queued all the same, without the
        sequence: its worker then writes job.started as it begins, as before."""
        headers = {subjects.HOLD_HEADER: hold}
        try:
            ack = await asyncio.shield(history)
            seq = getattr(ack, "seq", None)
            if seq:
                headers[subjects.QUEUED_SEQ_HEADER] = str(seq)
        except asyncio.CancelledError:
            raise
        except Exception:  # logged by _settled; the job still runs
            pass
        return await bus.publish(self.js, subjects.job_subject(job.tag), body, job.id,
                                 within=within, headers=headers)

    async def _settled(self, job: Job, hold: str, results: list[Any], started: float) -> Any:
        """The enqueue's ack; a refusal recorded where it is definite (see _enqueue)."""
        history, enqueued = results
        if isinstance(enqueued, BaseException):
            exc = enqueued
            # A refusal is definite only if no earlier attempt of this publish timed out (one
            # attempt waits 5 s): that one might still be stored.
            definite = ((bus.storage_full(exc) or isinstance(exc, BadRequestError))
                        and time.monotonic() - started < 5.0)
            if definite and not isinstance(history, BaseException):
                try:  # the history says queued: say it ended (best effort: storage may be full)
                    await self._record(hold, JobFinished(
                        job_id=job.id, time=time.time(), status="failure", attempt=0,
                        error=f"not enqueued: {exc!r}", worker="router"), f"{job.id}:0:finished",
                        within=2.0)
                except Exception as record_exc:
                    self.logger.warning("job_refusal_not_recorded", job_id=job.id,
                                        error=repr(record_exc))
            if bus.storage_full(exc):
                raise self._no_room(subjects.JOBS_STREAM, exc, "to queue the job",
                                    "; nothing was queued: retry once space is freed") from exc
            if definite:
                raise exc
            raise OutcomeUnknown(
                f"NATS did not confirm job {job.id!r}: {exc!r}; it may still be queued: look it"
                f" up with GET /jobs/{job.id}, or repeat the submission with the same"
                f" {idempotency.HEADER}", job_id=job.id) from exc
        if isinstance(history, BaseException):  # queued and will run; only its history failed
            self.logger.warning("job_queued_event_failed", job_id=job.id, error=repr(history))
        if not getattr(enqueued, "duplicate", False):  # a duplicate stored nothing: no news
            self.storage.stored(subjects.JOBS_STREAM)
        await self.nc.publish(subjects.wake_subject(job.tag), b"")  # no body: see subjects.py
        return enqueued

    def _settle_later(self, job: Job, hold: str, both: "asyncio.Future[list[Any]]",
                      started: float) -> None:
        """After an OutcomeUnknown answer: log how the submission ended, record a definite
        refusal, wake the tag's workers if it was queued."""
        async def settle() -> None:
            try:
                await self._settled(job, hold, await both, started)
                self.logger.info("job_queued_late", job_id=job.id, tag=job.tag)
            except OutcomeUnknown as exc:
                self.logger.error("job_outcome_unknown", job_id=job.id, tag=job.tag,
                                  error=exc.message)
            except Exception as exc:
                self.logger.warning("job_not_enqueued", job_id=job.id, tag=job.tag,
                                    error=repr(exc))
        task = asyncio.create_task(settle())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _queued(self, job_id: str) -> tuple[JobQueued | None, JobRecord] | None:
        """The job's genuine job.queued (None if only later events were stored) and record, or
        None when the job does not exist."""
        try:
            record = await read_job(self.nc, job_id, self.genuine, wait=False, timeout=5.0,
                                    history=True)
        except NotFound:
            return None
        if record.last_seq == 0:  # nothing genuine on its subject: no router's, no holder's
            return None
        queued = next((e for e in record.history or () if isinstance(e, JobQueued)), None)
        return queued, record

    def _no_room(self, stream: str, exc: BaseException, what: str,
                  then: str = "; retry once space is freed") -> StorageFull:
        """A write JetStream refused for storage: noted for /readyz and metrics, and the 507."""
        self.storage.refused(stream, exc)
        return StorageFull(f"JetStream has no room {what} ({getattr(exc, 'description', exc)})"
                           f"{then}", field="storage")

    async def _keyed(self, key: str, workspace: str, planned: bool
                     ) -> tuple[str, tuple[JobQueued | None, JobRecord] | None]:
        """The job `key` names in `workspace` (its id, and what exists of it). A job JetStream
        refused to queue (`not enqueued`, recorded by a router: storage full, a bad request)
        never ran, so it does not use the key up: the next id of the key is tried
        (shared/idempotency.py, generations). Flow steps' keys (`planned`) name other ids than
        the same keys from clients, so no client can claim a flow's step ahead of it."""
        for generation in range(idempotency.MAX_GENERATIONS):
            job_id = idempotency.job_id(self.key, workspace, key, generation, planned=planned)
            found = await self._queued(job_id)
            if found is None or not _refused(found[1].view):
                return job_id, found
        raise idempotency.IdempotencyConflict(
            f"{idempotency.HEADER} {key!r} was refused {idempotency.MAX_GENERATIONS} times for"
            " want of storage; use a new key", field=idempotency.HEADER)

    def _replay(self, first: JobQueued, steps: list[str]) -> SubmitAnswer:
        """The answer to a repeated idempotency key: the job it first queued, as it is now."""
        index = self._groups_by_tag()
        live = self.workers.serving(first.tag) if first.tag else []
        self.metrics.replayed.inc()
        self.logger.info("job_submission_replayed", job_id=first.job_id, tag=first.tag)
        return SubmitAnswer(id=first.job_id, tag=first.tag, groups=list(index.get(first.tag, ())),
                            live_workers=len(live), steps=steps, replayed=True)

    def _grant(self, job_id: str, workspace: str, who: Identity, route: routing.Route) -> str:
        """The flow's grant: its steps may be submitted with `who`'s rights, and nothing else."""
        return grants.sign(self.key, grants.FlowGrant(
            flow=job_id, workspace=workspace, admin=who.admin, by=who.name,
            token_seq=who.token_seq,
            steps=tuple(grants.StepGrant(s.tag, grants.step_digest(s.language, s.code))
                        for s in route.steps)))

    async def refresh_metrics(self) -> None:
        """Before a scrape: waiting jobs per tag from JetStream, live workers from heartbeats."""
        self.metrics.observe_workers(self.workers.all())
        self.metrics.observe_storage(await self.storage.full(self.js))
        served = set(self._groups_by_tag()) | {t for w in self.workers.all() for t in w.tags}
        self.metrics.observe_queues(await waiting_per_tag(self.js), served)

    def _overlapping(self, answer: Callable[[Msg], Coroutine[Any, Any, None]],
                     bound: asyncio.Semaphore) -> Callable[[Msg], Awaitable[None]]:
        """nats-py runs one callback at a time per subscription: hand each request to its own
        task (at most `bound` at once), so requests overlap their JetStream round trips and a
        read that waits for its job does not hold up the next one. Submissions and reads have
        a bound each: reads that wait cannot starve submissions."""
        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            bound.release()

        async def on_request(msg: Msg) -> None:
            await bound.acquire()
            task = asyncio.create_task(answer(msg))
            self._tasks.add(task)
            task.add_done_callback(done)
        return on_request

    async def _answer_submit(self, msg: Msg) -> None:
        answer: object
        if _header(msg, subjects.BATCH_HEADER) == "1":
            try:
                who = self.tokens.identify(_header(msg, subjects.AUTHORIZATION_HEADER))
                items = read_batch(msg.data)
            except GetOperateError as exc:
                self.metrics.refused.labels(exc.code).inc()
                answer = exc.to_dict()
            else:
                answer = await self.submit_batch(items, who, _header(msg, idempotency.HEADER))
            await self._respond(msg, answer)
            return
        try:
            sub, who, planned = self._authorize(msg)
        except GetOperateError as exc:
            self.metrics.refused.labels(exc.code).inc()
            if isinstance(exc, (Unauthorized, Forbidden)):
                self.logger.warning("submit_refused", error=exc.code, reason=exc.message)
            answer = exc.to_dict()
        else:
            answer = await self._submit_answer(
                sub, who, planned, _header(msg, idempotency.HEADER))
        await self._respond(msg, answer)

    async def _respond(self, msg: Msg, answer: object) -> None:
        if msg.reply:
            if not REPLY_SUBJECT.match(msg.reply):
                # Answering is allowed where the requester says (NATS lets a responder reply
                # outside its own allow list): a request whose reply names a stream's subject
                # (a cancel key, a queue, a snapshot) would make the router write there.
                self.logger.warning("reply_refused", subject=msg.subject, reply=msg.reply[:120])
                return
            await msg.respond(encode(answer))

    async def submit_batch(self, subs: list[tuple[JobSubmit | GetOperateError, bool]],
                           who: Identity, key: str | None) -> BatchAnswer:
        """Route many submissions at once, each answered on its own, in order. An item is a
        submission (and whether its body named its workspace) or the error its reading gave.
        Overlapping them overlaps their JetStream round trips (BATCH_OVERLAP at a time)."""
        if key is not None:
            idempotency.check_key(key)
        bound = asyncio.Semaphore(BATCH_OVERLAP)

        async def one(i: int, item: JobSubmit | GetOperateError, given: bool) -> dict[str, Any]:
            if isinstance(item, GetOperateError):
                self.metrics.refused.labels(item.code).inc()
                return {"index": i, **item.to_dict()}
            async with bound:
                try:
                    sub = authorize_submit(who, item, workspace_given=given)
                except GetOperateError as exc:
                    self.metrics.refused.labels(exc.code).inc()
                    return {"index": i, **exc.to_dict()}
                answer = await self._submit_answer(sub, who, False,
                                                   f"{key}:{i}" if key is not None else None)
            return {"index": i, **(to_builtins(answer) if isinstance(answer, SubmitAnswer)
                                   else answer)}  # type: ignore[dict-item]

        answers = await asyncio.gather(*(one(i, item, given)
                                         for i, (item, given) in enumerate(subs)))
        return BatchAnswer(jobs=list(answers))

    async def _submit_answer(self, sub: JobSubmit, who: Identity, planned: bool,
                             key: str | None) -> object:
        try:
            return await self.submit(sub, who, planned=planned, key=key)
        except GetOperateError as exc:
            return exc.to_dict()
        except Exception as exc:
            self.logger.exception("submit_failed", exc)
            return {"error": "internal", "message": str(exc)}

    def _authorize(self, msg: Msg) -> tuple[JobSubmit, Identity, bool]:
        """Who a `go.router.submit` request comes from, by the same rules as HTTP `POST /jobs`:
        a bearer token in `Authorization`; or, for a flow's step, the flow's grant in
        `Go-Flow-Grant` (the submitter's identity, for exactly the steps it planned)."""
        authorization = _header(msg, subjects.AUTHORIZATION_HEADER)
        grant_text = _header(msg, subjects.FLOW_GRANT_HEADER)
        if grant_text is not None:
            if authorization is not None:
                raise InvalidInput("send either a token or a flow grant, not both",
                                   field=subjects.FLOW_GRANT_HEADER)
            grant = grants.verify(self.key, grant_text)  # before reading the body
            sub: JobSubmit = decode(msg.data, JobSubmit)
            grants.check_step(grant, sub)
            who = Identity(grant.by, None if grant.admin else grant.workspace, grant.token_seq)
            if not self.tokens.token_live(who):
                raise grants.GrantRefused(f"the token {grant.by!r} that submitted flow"
                                          f" {grant.flow!r} was revoked", field="parent")
            return sub, who, True
        if authorization is None and _is_step(msg.data):
            grants.verify(self.key, None)  # a step without its flow's grant: say so
        who = self.tokens.identify(authorization)
        sub = decode(msg.data, JobSubmit)
        given = who.admin or "workspace" in decode(msg.data, dict)
        return authorize_submit(who, sub, workspace_given=given), who, False

    async def cancel(self, job_id: str, *, by: str) -> JobView:
        """Ask for a job to be cancelled: a queued job ends now; a running one is killed by its
        worker (which watches GO_CANCELS); one that already ended is a conflict."""
        record = await read_job(self.nc, job_id, self.genuine, wait=False, timeout=5.0)
        view = record.view
        if view.status in TERMINAL:
            raise Conflict(f"job {job_id!r} already ended ({view.status})", field="id")
        view = await self._cancel_read(job_id, record, by)
        if view.kind == "flow":
            await self._cancel_queued_steps(job_id, view, by)
        return await self.job(job_id, wait=view.status == "running", timeout=10.0)

    async def _cancel_read(self, job_id: str, record: JobRecord, by: str) -> JobView:
        """Cancel a job as read (not ended): the mark its worker watches for, and a queued one's
        end, written now. The view as it then is."""
        view = record.view
        kv = await bus.cancels_bucket(self.js)
        try:
            await kv.put(job_id, f"cancelled by {by}".encode())
        except APIError as exc:
            if not bus.storage_full(exc):
                raise
            raise self._no_room(f"KV_{subjects.CANCELS_BUCKET}", exc,
                                "to store the cancellation") from exc
        if view.status == "queued" and not await self._end_queued(job_id, by, record.subject_seq):
            view = await self.job(job_id)  # it started (or ended) meanwhile: its worker ends it
        elif view.status == "queued":
            if view.tag:  # left out of waiting counts until a worker drops it (queues.py)
                await kv.put(subjects.cancelled_queued_key(view.tag, job_id), b"")
                await self.nc.publish(subjects.wake_subject(view.tag), b"")  # drop it now
        self.logger.info("job_cancel_requested", job_id=job_id, by=by, was=view.status)
        return view

    async def _cancel_queued_steps(self, flow_id: str, flow: JobView, by: str) -> None:
        """A cancelled flow's steps that are still queued end with it. Its running step dies
        with it already (its worker watches for the flow's cancel); a queued one would sit on
        its tag, shown queued, until a worker took and dropped it, never if none serves that
        tag. Steps are found by the keys their flow submitted them under
        (`flow <id> step <n>`, services/worker/flows.py), in order: a flow submits step n+1
        only after step n, so the first key with no job ends the search (whatever the flow's
        deployed version now says)."""
        for index in range(1, st.MAX_FLOW_STEPS + 1):
            _, found = await self._keyed(f"flow {flow_id} step {index}", flow.workspace or "",
                                         planned=True)
            if found is None:
                return
            if found[1].view.status == "queued":
                await self._cancel_read(found[1].view.id, found[1], by)

    async def _end_queued(self, job_id: str, by: str, subject_seq: int) -> bool:
        """Record a queued job's cancellation as its end, only if nothing was written to it since
        it was read (a quick job writes its end alone, with no job.started before it: an
        unconditional write would give it two ends). False when something was."""
        try:
            await self._record(seals.hold_key(self.key, job_id), JobFinished(
                job_id=job_id, time=time.time(), status="cancelled",
                error=f"cancelled by {by} before it started", worker="router"),
                f"{job_id}:cancel:finished", expect_last=subject_seq)
        except APIError as exc:
            if exc.err_code != bus.WRONG_LAST_SEQUENCE:
                raise
            return False
        return True

    async def _record(self, hold: str, event: JobQueued | JobFinished, msg_id: str,
                      within: float = 20.0, expect_last: int | None = None) -> object:
        """Store a job event the router writes, sealed like a holder's, under a message id only
        a holder can compute (shared/seals.py)."""
        body = encode(event)
        headers = {subjects.SEAL_HEADER: seals.seal(hold, body)}
        if isinstance(event, JobQueued):  # what no holder can write: the job board starts here
            headers[subjects.ROUTER_SEAL_HEADER] = seals.router_seal(self.key, body)
        return await bus.publish(self.js, subjects.job_events_subject(event.job_id), body,
                                 seals.msg_id(hold, msg_id), within=within,
                                 expect_last=expect_last, headers=headers)

    async def job(self, job_id: str, *, wait: bool = False, timeout: float = 30.0) -> JobView:
        """The job's view from its lifecycle events; with `wait`, until it ends or `timeout`."""
        return (await read_job(self.nc, job_id, self.genuine, wait=wait, timeout=timeout)).view

    async def read(self, job_id: str, *, reader: str, workspace: str | None = None,
                   parent: str | None = None, wait: bool = False, timeout: float = 30.0,
                   history: bool = False, fresh: bool = False) -> JobRecord:
        """A job for `reader`, who may see it only in `workspace` or only as a step of flow
        `parent` when given (else: any job). A job it may not see is not_found, with the same
        message as a missing one, and is never waited on: its existence is not revealed. One
        reader may have MAX_WAITS_PER_READER waiting reads at a time (TooBusy beyond).

        From the job board (services/router/board.py) when it holds the job, else from the
        stream; `fresh` (a holder's read, which decides a conditional append) always from the
        stream."""
        timeout = min(max(timeout, 0.0), MAX_WAIT)
        wait = wait and timeout > 0
        board = None if fresh else self.board
        first = board.get(job_id, history) if board is not None else None
        if first is None:
            first = await read_job(self.nc, job_id, self.genuine, wait=False, timeout=5.0,
                                   history=history)
        if ((workspace is not None and first.view.workspace != workspace)
                or (parent is not None and first.view.parent != parent)):
            raise not_found(job_id)
        if not wait or first.view.status in TERMINAL:
            return first
        if self._waits[reader] >= MAX_WAITS_PER_READER:
            raise TooBusy(f"{reader!r} already waits for {MAX_WAITS_PER_READER} jobs; wait for"
                          " fewer at a time, or read without waiting", field="wait")
        self._waits[reader] += 1
        try:
            deadline = time.monotonic() + timeout
            while board is not None:
                # Between looks at the stream (LAST_POLL apart, as a read that waits on the
                # stream does), in case the board's follow is stalled for a moment.
                remaining = deadline - time.monotonic()
                record = await board.wait(job_id, min(remaining, LAST_POLL), history)
                if record is None:
                    break  # forgotten meanwhile: wait on the stream
                if record.view.status in TERMINAL or remaining <= LAST_POLL:
                    return record
                try:
                    record = await read_job(self.nc, job_id, self.genuine, wait=False,
                                            timeout=5.0, history=history)
                except NotFound:
                    continue  # its history was dropped for room: the board still follows it
                if record.view.status in TERMINAL:
                    return record
            return await read_job(self.nc, job_id, self.genuine, wait=True,
                                  timeout=max(deadline - time.monotonic(), 0.0), history=history)
        finally:
            self._waits[reader] -= 1
            if not self._waits[reader]:
                del self._waits[reader]

    async def _answer_job(self, msg: Msg) -> None:
        """A `go.router.job` request: the job's record, for whoever may read it."""
        answer: object
        try:
            query: JobQuery = decode(msg.data, JobQuery)
            record = await self._read_for(msg, query)
            answer = record
        except GetOperateError as exc:
            if isinstance(exc, (Unauthorized, Forbidden, TooBusy)):
                self.logger.warning("job_read_refused", error=exc.code, reason=exc.message)
            answer = exc.to_dict()
        except Exception as exc:
            self.logger.exception("job_read_failed", exc)
            answer = {"error": "internal", "message": str(exc)}
        await self._respond(msg, answer)

    async def _read_for(self, msg: Msg, query: JobQuery) -> JobRecord:
        """Who may read a job over NATS: its holder (the job's hold key in `Go-Job-Hold`), the
        flow it is a step of (the flow's grant), or a token, by the rules of `GET /jobs/{id}`."""
        hold = _header(msg, subjects.HOLD_HEADER)
        grant_text = _header(msg, subjects.FLOW_GRANT_HEADER)
        ask = {"wait": query.wait, "timeout": query.timeout, "history": query.history}
        if hold is not None:
            if not seals.holds(self.key, query.id, hold):
                raise Forbidden(f"the hold key is not job {query.id!r}'s",
                                field=subjects.HOLD_HEADER)
            return await self.read(query.id, reader=f"holder of {query.id}", fresh=True, **ask)
        if grant_text is not None:
            grant = grants.verify(self.key, grant_text)
            return await self.read(query.id, reader=f"flow {grant.flow}", parent=grant.flow,
                                   **ask)
        who = self.tokens.identify(_header(msg, subjects.AUTHORIZATION_HEADER))
        return await self.read(query.id, reader=who.name,
                               workspace=None if who.admin else who.workspace, **ask)


def _unable(worker: WorkerStatus, language: str) -> str | None:
    """Why a ready worker listening to the job's tag cannot take it now (None: it can). Its
    init script must have succeeded (or there is none: until then it takes no job), and it
    must have the job's runtime (its heartbeat's `runtimes`; a flow needs none, its worker only
    orchestrates; a worker that reports no runtimes predates the field)."""
    if worker.held_by_init:
        return f"init_{worker.init_status}"
    if language != "flow" and worker.runtimes and language not in worker.runtimes:
        return "runtime"
    return None


def _why_none(listening: list[WorkerStatus], language: str, *, admin: bool) -> str:
    """The warning's reasons, for workers that listen to a tag but cannot take the job."""
    reasons = [(_unable(w, language), w) for w in listening]
    parts = []
    runtime = [w for why, w in reasons if why == "runtime"]
    if runtime:
        runs = sorted({r for w in runtime for r in w.runtimes})
        close = difflib.get_close_matches(language, runs, n=1, cutoff=0.7)
        meant = f"; did you mean {close[0]!r}?" if close else ""
        parts.append(f"none can run {language!r} (they run {', '.join(runs)}:"
                     f" docs/languages.md){meant}" if len(runtime) == len(listening) else
                     f"{len(runtime)} cannot run {language!r} (docs/languages.md){meant}")
    running = [w for why, w in reasons if why == "init_running"]
    if running:
        parts.append(f"{len(running)} still running its init script")
    failed = [w for why, w in reasons if why == "init_failed"]
    if failed:
        error = (failed[0].init_error or "").strip().splitlines()
        parts.append(f"the init script of {len(failed)} failed"
                     + (f" ({error[-1][:200]})" if error and admin else "")
                     + ": fix the group's init script (`getoperate group set --init-script`)")
    return "; ".join(parts)


def read_batch(body: bytes) -> list[tuple[JobSubmit | GetOperateError, bool]]:
    """A batch's items: each a submission (and whether it named its workspace), or the error
    reading it gave, so one bad item is answered on its own."""
    raw = decode(body, dict)
    jobs = raw.get("jobs")
    validate_batch(JobBatch(jobs=jobs if isinstance(jobs, list) else []))
    if set(raw) - {"jobs"}:
        raise InvalidInput(f"unknown field {sorted(set(raw) - {'jobs'})[0]!r}", field="jobs")
    items: list[tuple[JobSubmit | GetOperateError, bool]] = []
    for i, item in enumerate(jobs):  # type: ignore[union-attr]
        try:
            sub = msgspec.convert(item, JobSubmit)
            items.append((sub, isinstance(item, dict) and "workspace" in item))
        except (msgspec.ValidationError, TypeError) as exc:
            items.append((InvalidInput(f"jobs[{i}]: {exc}", field=f"jobs[{i}]"), False))
    return items


def _refused(view: JobView) -> bool:
    """A job that a router recorded as never queued (JetStream refused it)."""
    return (view.status == "failure" and view.worker == "router"
            and (view.error or "").startswith("not enqueued"))


async def _stored(ack: Any = None) -> Any:
    return ack


def _header(msg: Msg, name: str) -> str | None:
    """A NATS header by name; clients differ in case (`authorization`), so any case matches."""
    headers = msg.headers
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _is_step(data: bytes) -> bool:
    try:
        return decode(data, JobSubmit).parent is not None
    except InvalidInput:
        return False
