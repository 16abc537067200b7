"""Execution slots: the one place a slot is taken and given back, so no code path can leak one.

The dispatcher takes a slot before it pulls (a worker never asks for a job it could not run) with
`async with slots.hold() as slot`. Leaving the block gives the slot back, unless the slot was
handed to the task that runs the pulled job: then the slot is given back when that task ends,
however it ends (result, exception, cancellation, even cancelled before it ever ran), or earlier
with `slot.release()` once execution is over. Releasing twice is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator


class Slot:
    """One taken slot; given back exactly once."""

    __slots__ = ("_slots", "_held", "_owned")

    def __init__(self, slots: "Slots") -> None:
        self._slots = slots
        self._held = True
        self._owned = False  # handed to a task: that task's end gives it back

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        """Give the slot back now (idempotent)."""
        if self._held:
            self._held = False
            self._slots._give_back(self)

    def hand_to(self, task: "asyncio.Future[object]") -> None:
        """The slot now belongs to `task`: it is given back when the task is done."""
        if self._owned or not self._held:
            return
        self._owned = True
        self._slots.running += 1
        task.add_done_callback(lambda _task: self.release())


class Slots:
    """WORKER_CONCURRENCY slots around an asyncio.Semaphore, with counts for metrics and waits."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("at least one slot")
        self.size = size
        self.taken = 0  # held: by the dispatcher while it pulls, or by a job's task
        self.running = 0  # of those, handed to a job's task (the "busy slots" gauge)
        self._sem = asyncio.Semaphore(size)
        self._idle = asyncio.Event()
        self._idle.set()
        self._free = asyncio.Event()
        self._free.set()

    @property
    def free(self) -> int:
        return self.size - self.taken

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[Slot]:
        """Wait for a free slot and hold it for the block (or hand it on to a task)."""
        await self._sem.acquire()
        slot = Slot(self)
        self.taken += 1
        self._idle.clear()
        if self.taken >= self.size:
            self._free.clear()
        try:
            yield slot
        finally:
            if not slot._owned:
                slot.release()

    async def wait_free(self) -> None:
        """Until at least one slot is free (it is not reserved: `hold` may still wait)."""
        await self._free.wait()

    async def wait_idle(self) -> None:
        """Until no slot is held: no job runs and no pull is in flight."""
        await self._idle.wait()

    def _give_back(self, slot: Slot) -> None:
        self.taken -= 1
        if slot._owned:
            self.running -= 1
        self._sem.release()
        self._free.set()
        if self.taken == 0:
            self._idle.set()
