"""Background tasks, kept and watched.

asyncio keeps only a weak reference to a task: one that nobody holds can be collected while it
runs, and an exception in a task nobody awaits surfaces, if ever, as a bare "Task exception was
never retrieved" at garbage collection, with no service, event or job named. Every background
task of the services starts through `background`: it is held until it ends, and a failure is a
structured log line with its traceback. A *vital* task (a loop the service is useless without:
the outbox, the dispatcher, the heartbeat, a stream follow) that ends by an exception stops the
service with exit code 1, so a deployment's restart policy brings it back, instead of leaving a
process that looks alive and does nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from services.common.log import Logger

T = TypeVar("T")

_KEPT: set[asyncio.Task[Any]] = set()
_ON_VITAL_FAILURE: list[Callable[[], None]] = []


def background(work: Coroutine[Any, Any, T], *, name: str, logger: Logger,
               vital: bool = False) -> asyncio.Task[T]:
    """`work` as a task named `name`, held until it ends. A failure logs `task_failed` (with the
    traceback); a vital one then stops the service (`on_vital_failure`)."""
    task = asyncio.create_task(work, name=name)
    _KEPT.add(task)

    def done(t: asyncio.Task[T]) -> None:
        _KEPT.discard(t)
        if t.cancelled():
            return
        exc = t.exception()
        if exc is None:
            return
        logger.exception("task_failed", exc, task=name, vital=vital)
        if vital:
            for callback in list(_ON_VITAL_FAILURE):
                callback()

    task.add_done_callback(done)
    return task


def on_vital_failure(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` when a vital task fails (a service's main: stop, exit 1). Returns a
    function that removes it again."""
    _ON_VITAL_FAILURE.append(callback)
    return lambda: _ON_VITAL_FAILURE.remove(callback) if callback in _ON_VITAL_FAILURE else None


def running() -> int:
    """How many background tasks are held (tests check that none leak)."""
    return len(_KEPT)
