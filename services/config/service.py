"""The config service's core: load the log, reconcile with the stream, decide and append commands."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Callable

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.common import bus, tasks
from services.common.log import Logger
from services.common.metrics import ConfigMetrics
from services.common.signingkeys import accepted_keys, load_signer
from services.config.outbox import Outbox
from services.config.reconcile import ensure_stream, reconcile
from services.config.store import EventLog
from services.config.verify import Report, verify
from shared import state as st
from shared.codec import decode
from shared.events import ConfigEvent, RawRecorded, Recorded, decode_known, event_type
from shared.errors import InvalidInput
from shared.history import Point
from shared.signing import Signer
from shared.snapshots import SnapshotRejected, encode_snapshot, open_snapshot, seal_snapshot

PUBLISH_WAIT = 2.0
SNAPSHOT_EVERY = int(os.environ.get("GETOPERATE_SNAPSHOT_EVERY", "10000"))


class ConfigService:
    """Single writer of configuration: commands become events in SQLite, then on the stream."""

    def __init__(self, data_dir: Path, nc: NATS, logger: Logger, signer: Signer | None = None):
        self.signer = signer or load_signer(Path(data_dir))
        self.verifier = accepted_keys(self.signer)
        self.log = EventLog(Path(data_dir) / "config.sqlite")
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.logger = logger
        self.state = self._load()
        self.outbox = Outbox(self.log, self.js, logger, self.signer, self.verifier)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._snapshot_pending: bytes | None = None
        self.ready = False
        # Called with what each append recorded (services/config/locks.py follows deploys)
        self.listeners: list[Callable[[list[Recorded]], None]] = []
        self.metrics = ConfigMetrics(lambda: self.state.seq, lambda: self.outbox.published_seq)

    def _load(self) -> st.ConfigState:
        """Latest snapshot, then the events after it: start-up cost follows the tail, not the log."""
        last, _ = self.log.last()
        state = self._snapshot_base(last)
        return st.fold(self.log.records(since=state.seq), state)

    def _snapshot_base(self, seq: int) -> st.ConfigState:
        """The newest stored snapshot at or before `seq` that is signed by an accepted key and
        stands for its sequence; one that is not is logged and passed over (the log is folded
        from an older one, or from the start, instead)."""
        for snap in self.log.snapshots_at_or_before(seq):
            try:
                return open_snapshot(snap, self.verifier)
            except SnapshotRejected as exc:
                self.logger.warning("snapshot_rejected", seq=snap.seq, source="sqlite",
                                    reason=exc.reason, error=exc.message)
        return st.ConfigState()

    async def state_at(self, point: Point, field: str = "at") -> st.ConfigState:
        """The whole configuration as it was at a sequence or a time. A sequence past the log's
        end is an error, not "now": `diff 100 118` on a 98-event log must say so. Read and
        folded on the log's thread: an old point folds many events."""
        if point.seq is not None and point.seq > self.state.seq:
            raise InvalidInput(f"{field}={point.seq} is past the end of the log, which ends at"
                               f" seq {self.state.seq}", field=field)
        return await self.log.call(self._state_at, point, self.state)

    def _state_at(self, point: Point, now: st.ConfigState) -> st.ConfigState:
        target = point.seq if point.seq is not None else self.log.seq_at_time(point.time or "")
        if target >= now.seq:
            return now
        base = self._snapshot_base(target)
        records = (r for r in (decode_known(b) for b in self.log.raw_range(base.seq, target)) if r)
        return st.fold(records, base)

    def _maybe_snapshot(self, state: st.ConfigState, stream_seq: int,
                        force: bool = False) -> bytes | None:
        """Seal and store a snapshot of `state` when one is due; its bytes, for the object
        store. Runs on the log's thread (signing and encoding a large state take a while)."""
        last = next(self.log.snapshots_at_or_before(state.seq), None)
        if not state.seq or not (force or state.seq - (last.seq if last else 0) >= SNAPSHOT_EVERY):
            return None
        body = self.log.body_at(state.seq)
        assert body is not None  # the state's seq is the log's last event
        snap = seal_snapshot(self.signer, state, decode(body, RawRecorded).hash, stream_seq)
        self.log.save_snapshot(snap)
        return encode_snapshot(snap)

    async def _snapshot_if_due(self, force: bool = False) -> None:
        # The outbox's position is a lower bound for where events after this one are on the
        # stream, unless events this version cannot fold were published after it.
        stream_seq = self.outbox.position if self.outbox.published_seq <= self.state.seq else 0
        body = await self.log.call(self._maybe_snapshot, self.state, stream_seq, force)
        if body is not None:
            self._snapshot_pending = body

    async def _publish_snapshot(self) -> None:
        """Routers start from the latest snapshot in the GO_SNAPSHOTS object store, then the tail."""
        body, self._snapshot_pending = self._snapshot_pending, None
        if body is None:
            return
        try:
            await bus.put_snapshot(self.js, body)
        except Exception as exc:
            self.logger.warning("snapshot_publish_failed", error=str(exc) or type(exc).__name__)

    async def verify(self) -> Report:
        await self.outbox.wait_published(self.state.seq, PUBLISH_WAIT)
        return await verify(self.log, self.js, self.outbox.published_seq, self.verifier)

    async def start(self) -> None:
        await ensure_stream(self.log, self.outbox, self.logger)
        await bus.ensure_streams(self.js)
        await self._reconcile_with_stream()
        await self.execute(st.seed, actor="system", reason="first start: seed default groups")
        self._task = tasks.background(self.outbox.run(), name="outbox", logger=self.logger,
                                      vital=True)
        await self.outbox.wait_published(self.state.seq, PUBLISH_WAIT)
        await self._snapshot_if_due(force=True)
        await self._publish_snapshot()
        self.ready = True
        self.logger.info("config_ready", seq=self.state.seq, groups=sorted(self.state.groups))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.log.close()

    async def _reconcile_with_stream(self) -> None:
        """Stream ahead of the log (empty data dir): copy the missing events back, verified.
        Log ahead of the stream (empty NATS, crash before publish): the outbox republishes.
        services/config/reconcile.py has the whole table."""
        copied = await reconcile(self.log, self.outbox, self.logger)
        if copied:
            self.state = st.fold(
                (r for r in (decode_known(body) for body in copied) if r is not None), self.state)

    async def execute(
        self,
        decide: Callable[..., list[ConfigEvent]],
        *args: object,
        actor: str,
        reason: str | None = None,
        **kwargs: object,
    ) -> list[Recorded]:
        """Decide against the current state, append, fold, publish. Serialised: one writer."""
        async with self._lock:
            events = decide(self.state, *args, **kwargs)
            with self.metrics.writing.track_inprogress():
                records = await self.log.call(self.log.append, events, actor=actor,
                                              reason=reason)
            self.state = st.fold(records, self.state)
            await self._snapshot_if_due()
        for rec in records:
            self.metrics.events.labels(event_type(rec.event)).inc()
            self.logger.info("config_event", seq=rec.seq, type=event_type(rec.event), actor=actor,
                             event_id=rec.id)
        if records:
            self.outbox.kick()
            for listener in self.listeners:
                listener(records)
        if self._snapshot_pending is not None:
            tasks.background(self._publish_snapshot(), name="snapshot", logger=self.logger)
        return records

    async def execute_and_publish(
        self, decide: Callable[..., list[ConfigEvent]], *args: object, actor: str,
        reason: str | None = None, **kwargs: object,
    ) -> tuple[list[Recorded], bool]:
        """Execute, then wait briefly for the stream: the answer says whether it is live yet."""
        records = await self.execute(decide, *args, actor=actor, reason=reason, **kwargs)
        if not records:
            return records, True
        return records, await self.outbox.wait_published(records[-1].seq, PUBLISH_WAIT)
