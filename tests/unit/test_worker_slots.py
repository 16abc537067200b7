"""Execution slots (services/worker/slots.py): a slot comes back whatever happens to its holder."""

from __future__ import annotations

import asyncio

import pytest

from services.worker.slots import Slots


async def test_a_block_holds_a_slot_and_gives_it_back() -> None:
    slots = Slots(2)
    async with slots.hold() as slot:
        assert (slots.taken, slots.free, slots.running, slot.held) == (1, 1, 0, True)
    assert (slots.taken, slots.free, slot.held) == (0, 2, False)


async def test_an_exception_in_the_block_gives_the_slot_back() -> None:
    slots = Slots(1)
    with pytest.raises(RuntimeError):
        async with slots.hold():
            raise RuntimeError("boom")
    assert slots.taken == 0
    async with asyncio.timeout(1):
        async with slots.hold():
            pass


async def test_no_more_than_size_slots_are_held() -> None:
    slots = Slots(2)
    order: list[str] = []
    release = asyncio.Event()

    async def holder(name: str) -> None:
        async with slots.hold():
            order.append(name)
            await release.wait()

    tasks = [asyncio.create_task(holder(n)) for n in "abc"]
    await asyncio.sleep(0.01)
    assert order == ["a", "b"] and slots.free == 0
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c"] and slots.taken == 0


@pytest.mark.parametrize("ending", ["returns", "raises", "cancelled mid-run",
                                    "cancelled before it ran"])
async def test_a_slot_handed_to_a_task_comes_back_however_the_task_ends(ending: str) -> None:
    slots = Slots(1)
    started = asyncio.Event()

    async def job() -> None:
        started.set()
        if ending == "raises":
            raise ValueError("a bug between the pull and the run")
        if ending == "cancelled mid-run":
            await asyncio.sleep(60)

    async with slots.hold() as slot:
        task = asyncio.ensure_future(job())
        slot.hand_to(task)
        if ending == "cancelled before it ran":
            task.cancel()
    assert slots.taken == 1 and slots.running == 1  # the block ended: the task owns it now
    if ending == "cancelled mid-run":
        await started.wait()
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert (slots.taken, slots.running, slots.free) == (0, 0, 1)
    assert started.is_set() is (ending != "cancelled before it ran")


async def test_an_early_release_is_not_repeated_when_the_task_ends() -> None:
    slots = Slots(2)
    gate = asyncio.Event()

    async def job(slot_box: list) -> None:  # type: ignore[type-arg]
        slot_box[0].release()  # execution over: the result is stored without the slot
        slot_box[0].release()
        await gate.wait()

    box: list = []  # type: ignore[type-arg]
    async with slots.hold() as slot:
        box.append(slot)
        task = asyncio.ensure_future(job(box))
        slot.hand_to(task)
    await asyncio.sleep(0)
    assert (slots.taken, slots.running) == (0, 0)
    gate.set()
    await task
    await asyncio.sleep(0)
    assert (slots.taken, slots.running, slots.free) == (0, 0, 2)


async def test_wait_idle_and_wait_free() -> None:
    slots = Slots(1)
    await asyncio.wait_for(slots.wait_idle(), 0.1)
    async with slots.hold():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slots.wait_idle(), 0.05)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slots.wait_free(), 0.05)
    await asyncio.wait_for(slots.wait_idle(), 0.1)
    await asyncio.wait_for(slots.wait_free(), 0.1)


def test_at_least_one_slot() -> None:
    with pytest.raises(ValueError):
        Slots(0)
