"""Which job to take next: wake-ups per tag, the order tags are tried in, one pull per free slot.

Jobs of a tag sit on one durable pull consumer shared by every worker listening to that tag
(competing consumers on a WorkQueue stream), so several groups may serve one tag and each job
runs once. The dispatcher pulls only while it holds a free slot, one job per pull, so the worker
never holds a job it cannot run. It learns that a tag has work without polling: routers publish
an empty wake-up on `go.wake.<tag>` for each job they enqueue. A slow sweep of every tag catches
what no wake-up announced (redeliveries, a missed signal). Tags are tried by priority (group
config), then those known to have work, then round-robin.

Pulls, acks and wake-ups go over the worker's jobs connection, whose NATS permissions name its
tags' consumers and nothing else (services/config/authority.py). When a hot reload adds a tag, a
new jobs connection is opened with the new rights; the old one takes no new job and is closed
once the answers still due to it are settled and the jobs it delivered are acked. A removed tag
is simply not pulled any more (see set_tags).
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common import tasks
from services.common.log import Logger
from services.worker.pulls import NOW, SOON, TagPulls
from services.worker.slots import Slot, Slots
from shared import subjects
from shared.errors import InvalidInput

SWEEP_EVERY = 5.0
STRAY_CHECK = 1.0  # while no slot is free: return (nak) a job that arrived late, this often
# Opens a jobs connection for the config sequence the worker has folded (the authority waits
# until it has folded as much, so the new rights include the new tags).
JobsConnector = Callable[[int], Awaitable[NATS]]


def order_tags(tags: list[str], priorities: dict[str, int], hot: set[str], rotation: int,
               sweep: bool, unswept: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Tags to try, best first: by priority (higher first, unlisted 0), then those known to have
    work (`hot`), then round-robin from `rotation`. Outside a sweep only hot tags are tried, and
    the tags a sweep under way has not tried yet (`unswept`)."""
    n = max(len(tags), 1)
    order = {t: (i - rotation) % n for i, t in enumerate(tags)}
    pool = [t for t in tags if sweep or t in hot or t in unswept]
    return sorted(pool, key=lambda t: (-priorities.get(t, 0), t not in hot, order[t]))


class Dispatcher:
    """Pulls jobs of the tags it listens to, one per free slot, and hands them to `on_job`."""

    def __init__(self, nc: NATS, slots: Slots, ready: asyncio.Event,
                 on_job: Callable[[str, Msg, Slot], None], logger: Logger,
                 connect_jobs: JobsConnector | None = None, ensure_consumers: bool = True) -> None:
        self.nc = nc  # the jobs connection (the worker's own one when connect_jobs is None)
        self.js: JetStreamContext = nc.jetstream()
        self.connect_jobs = connect_jobs
        # Under the authority a worker may not create consumers (it made them before it let the
        # worker connect); on a NATS without auth the worker ensures its tags' own.
        self.ensure_consumers = ensure_consumers
        self._granted: frozenset[str] | None = None  # the tags the jobs connection was opened for
        self.old_links: list[tuple[NATS, TagPulls]] = []  # let go, closed once settled and idle
        self._held: dict[int, int] = {}  # id(connection) -> jobs delivered by it, not yet done
        self.slots = slots
        self.ready = ready  # the init script is done: jobs may run
        self.on_job = on_job
        self.logger = logger
        self.priorities: dict[str, int] = {}
        self.wake_subs: dict[str, object] = {}
        self.hinted: set[str] = set()  # tags whose subject signalled a new job
        self.recent: set[str] = set()  # tags that delivered a job on their last pull
        self.backlog: set[str] = set()  # tags whose last job said more were waiting
        self.wake = asyncio.Event()
        self.pulls = TagPulls(nc, self.js, logger, ensure=ensure_consumers)
        self._rotation = 0
        self._next_sweep = 0.0
        self.unswept: set[str] = set()  # tags the sweep under way has not tried yet
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def listening(self, tag: str) -> bool:
        return tag in self.wake_subs

    async def set_tags(self, wanted: list[str], priorities: dict[str, int], seq: int = 0) -> None:
        """Listen to exactly these tags from now on (`seq`: the config sequence they come from)."""
        self.priorities = dict(priorities)
        # Only a tag the connection has no rights for needs a new one. A removed tag's rights
        # would outlive a relink anyway for a worker that kept its old connection (nats-server
        # cannot take rights back from a live connection); an honest worker stops pulling it.
        if self.connect_jobs is not None and (
                self._granted is None or not frozenset(wanted) <= self._granted):
            await self._relink(frozenset(wanted), seq)
        for tag in sorted(set(wanted) - set(self.wake_subs)):
            await self._listen(tag)
        for tag in sorted(set(self.wake_subs) - set(wanted)):
            await _unsubscribe(self.wake_subs.pop(tag))
            self.hinted.discard(tag)
            self.recent.discard(tag)
            self.backlog.discard(tag)
            self.pulls.retire(tag)
        self.wake.set()

    async def _relink(self, tags: frozenset[str], seq: int) -> None:
        """A jobs connection with the rights of `tags`; the current one is let go."""
        assert self.connect_jobs is not None
        new = await self.connect_jobs(seq)
        for sub in self.wake_subs.values():
            await _unsubscribe(sub)
        self.wake_subs.clear()
        if self._granted is not None:  # (until the first, the worker's own connection served)
            for tag in list(self.pulls.active):
                self.pulls.retire(tag)
            self.old_links.append((self.nc, self.pulls))
        self.nc, self.js = new, new.jetstream()
        self.pulls = TagPulls(new, self.js, self.logger, ensure=self.ensure_consumers)
        self._granted = tags
        self.logger.info("jobs_connection_opened", tags=len(tags), config_version=seq)

    def holding(self, msg: Msg) -> Callable[[object], None]:
        """Count a delivered job against its connection until the returned callback is called
        (its acks go over that connection, so it is not closed before)."""
        key = id(msg._client)
        self._held[key] = self._held.get(key, 0) + 1

        def done(_: object) -> None:
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]
                self.wake.set()  # an old connection may be closable now

        return done

    async def _close_idle_links(self) -> None:
        """Old jobs connections: return jobs that reached them late; close them once no answer
        is due and no job they delivered is still running."""
        for link in list(self.old_links):
            nc, pulls = link
            await pulls.return_late(retired_only=True)
            if pulls.watching() or self._held.get(id(nc)):
                continue
            self.old_links.remove(link)
            await pulls.close(settle=0)
            await _close(nc)

    async def close_links(self) -> None:
        """The worker stops, its jobs are done: close every jobs connection it opened."""
        if self.connect_jobs is None or self._granted is None:
            return
        for nc, _ in self.old_links:
            await _close(nc)
        self.old_links.clear()
        await _close(self.nc)

    async def _listen(self, tag: str) -> None:
        """Wake-ups for a tag: a plain subscription to its wake-up subject (no queue group)."""

        async def on_job_published(msg: Msg) -> None:
            self.hinted.add(tag)
            self.wake.set()

        self.wake_subs[tag] = await self.nc.subscribe(subjects.wake_subject(tag),
                                                      cb=on_job_published)
        self.pulls.revive(tag)
        self._next_sweep = 0.0  # it may already hold a backlog: sweep every tag next

    def start(self) -> None:
        self._task = tasks.background(self._run(), name="dispatch", logger=self.logger, vital=True)

    async def stop(self) -> None:
        """Stop pulling; return any job that arrived late; forget the tags."""
        self._stopping = True  # Python 3.11's wait_for can swallow a cancel: the loop checks too
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for sub in list(self.wake_subs.values()):
            await _unsubscribe(sub)
        self.wake_subs.clear()
        await self.pulls.close(settle=SOON + 0.5)  # a pull cut short: its answer comes soon

    async def _run(self) -> None:
        """Take one job whenever a slot is free; sleep on wake-ups when no tag has work."""
        while not self._stopping:
            try:
                await self.ready.wait()
                while not self.slots.free:
                    if not self.pulls.watching() and not self.old_links:
                        await self.slots.wait_free()
                        continue
                    try:  # an answer is still due: return it if it comes while no slot is free
                        await asyncio.wait_for(self.slots.wait_free(), STRAY_CHECK)
                    except TimeoutError:
                        await self.pulls.return_late()
                        await self._close_idle_links()
                async with self.slots.hold() as slot:  # given back unless a job takes it on
                    if not self.ready.is_set() or self._stopping:
                        continue  # an init script is due: it runs first
                    self.wake.clear()
                    got = await self._take_next()
                    if got is not None:
                        self.on_job(got[0], got[1], slot)
                        continue
                await self._sleep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.logger.exception("dispatch_error", exc, level="warn")
                await asyncio.sleep(1.0)

    async def _sleep(self) -> None:
        """No tag had work: until a wake-up, the next sweep, or (an answer still due) a check."""
        try:
            watching = self.pulls.watching() or bool(self.old_links)
            await asyncio.wait_for(self.wake.wait(), STRAY_CHECK if watching else SWEEP_EVERY)
        except TimeoutError:
            pass

    def candidates(self) -> list[str]:
        """Between sweeps only tags that signalled a job, just delivered one, or hold a late
        answer are tried, and those a sweep has not reached yet: a sweep stops at the first job
        it finds (a slot is free for one), and goes on with the next free slot, so a worker
        that starts on eight tags with a backlog each drains them back to back, not one tag
        per sweep interval."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            self.unswept = set(self.wake_subs)
        self._rotation += 1
        hot = self.hinted | self.recent | self.pulls.with_late()
        return order_tags(list(self.wake_subs), self.priorities, hot, self._rotation,
                          sweep=False, unswept=self.unswept)

    async def _take_next(self) -> tuple[str, Msg] | None:
        if self.pulls.retired:
            await self.pulls.return_late(retired_only=True)
        if self.old_links:
            await self._close_idle_links()
        for tag in self.candidates():
            if not self.listening(tag):  # let go by a hot reload during an earlier pull
                continue
            # A signalled job may not be stored yet: wait briefly for it. Otherwise, ask once.
            wait = SOON if tag in self.hinted else NOW
            behind = tag in self.backlog
            self.unswept.discard(tag)
            self.hinted.discard(tag)
            self.recent.discard(tag)
            self.backlog.discard(tag)
            msg = await self._pull(tag, wait)
            if msg is None and behind and wait == NOW:
                # Jobs were waiting behind the last one, but a server busy storing may let so
                # short a request expire: wait briefly (unless another worker took them all).
                msg = await self._pull(tag, SOON)
            elif msg is None and wait == NOW and self.priorities.get(tag):
                # A prioritized tag whose answer is still on its way (a busy server let so short
                # a request expire): wait for it before a lower tag's job is taken instead.
                msg = await self._settled(tag)
            if msg is None:
                continue
            try:
                tag = subjects.tag_of_subject(msg.subject)
            except InvalidInput:
                pass
            if not self.listening(tag):  # let go by a hot reload during the pull
                await _quietly(msg.nak())
                continue
            self.recent.add(tag)  # it may hold more: try it again first next time
            if _pending_after(msg):
                self.backlog.add(tag)
            return tag, msg
        return None

    async def _settled(self, tag: str) -> Msg | None:
        pull = self.pulls.get(tag)
        if not pull.unsettled:
            return None  # answered: it has no job now
        await pull.settle(SOON)
        try:
            return await pull.late()
        except Exception as exc:  # NATS away: the next sweep tries again
            self.logger.warning("pull_failed", tag=tag, error=str(exc) or type(exc).__name__)
            return None

    async def _pull(self, tag: str, wait: float) -> Msg | None:
        try:
            return await self.pulls.get(tag).pull(wait)
        except Exception as exc:  # consumer gone or NATS away: ensured again next time
            self.logger.warning("pull_failed", tag=tag, error=str(exc) or type(exc).__name__)
            return None


def _pending_after(msg: Msg) -> int:
    """How many jobs the consumer still had for others when it delivered this one."""
    try:
        return int(msg.metadata.num_pending or 0)
    except Exception:
        return 0


async def _quietly(coro: object) -> None:
    """An ack-protocol reply (nak, term) whose failure only delays the job: JetStream redelivers."""
    try:
        await coro  # type: ignore[misc]
    except Exception:
        pass


async def _close(nc: NATS) -> None:
    try:
        await nc.close()
    except Exception:
        pass


async def _unsubscribe(sub: object) -> None:
    if sub is None:
        return
    try:
        await sub.unsubscribe()  # type: ignore[attr-defined]
    except Exception:
        pass
