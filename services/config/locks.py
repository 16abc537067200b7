"""Dependency jobs: each deployed python3 script version that needs packages gets its lock.

After a deploy of such a script the config service queues a job of kind `dependency` (tag
`dependency`) through the routers, like any client with the admin token, waits for its outcome
and records it as a `script.locked` event: the lock (or the resolver's error) becomes part of the
audited history, and the routers give it to every run of that version (shared/routing.py).

The job is submitted under the idempotency key `lock <ws>/<path> v<version>`, so a config
service restarted mid-way (it looks for unlocked versions at start) or repeating a submission
whose answer it lost gets the same job, never a second one. While no worker serves `dependency`
the job waits in the queue, and runs of the script resolve on their worker meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
from nats.aio.client import Client as NATS
from nats import errors as nats_errors

from services.common import tasks
from services.common.log import Logger
from shared import pydeps, subjects
from shared import state as st
from shared.errors import InvalidInput
from shared.events import Recorded, ScriptDeployed
from shared.idempotency import HEADER as IDEMPOTENCY_HEADER
from shared.jobs import TERMINAL, JobQuery, JobSubmit

if TYPE_CHECKING:
    from services.config.service import ConfigService

RETRY = (0.5, 1, 2, 5, 10)  # seconds between attempts while the routers cannot answer
_RETRYABLE = ("unavailable", "outcome_unknown", "too_busy", "storage_full", "internal")


class Locker:
    """Keeps one task per script version waiting for its lock."""

    def __init__(self, service: "ConfigService", nc: NATS, token: str, logger: Logger):
        self.service, self.nc, self.token, self.logger = service, nc, token, logger
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        """Resume every current version still without an outcome (a restart, a new log)."""
        for script in self.service.state.scripts.values():
            if script.language == "python3" and script.lock is None and script.lock_error is None:
                self._spawn(script.workspace, script.path, script.version, script.content)

    def notice(self, records: list[Recorded]) -> None:
        for rec in records:
            event = rec.event
            if isinstance(event, ScriptDeployed) and event.language == "python3":
                self._spawn(event.workspace, event.path, rec.seq, event.content)

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    def _spawn(self, workspace: str, path: str, version: int, code: str) -> None:
        try:
            wanted = pydeps.requirements(code)
        except InvalidInput as exc:  # no job to queue: the script itself says what is wrong
            self._run(f"{workspace}/{path}@{version}",
                      self._record(workspace, path, version, (), None, str(exc), None))
            return
        if wanted:
            self._run(f"{workspace}/{path}@{version}",
                      self._lock(workspace, path, version, code, wanted))

    def _run(self, name: str, work: Any) -> None:
        if name in self.tasks:
            work.close()
            return
        task = tasks.background(work, name=f"lock {name}", logger=self.logger)
        self.tasks[name] = task

        def done(t: asyncio.Task[None]) -> None:  # a failure is logged by tasks.background
            self.tasks.pop(name, None)

        task.add_done_callback(done)

    async def _lock(self, workspace: str, path: str, version: int, code: str,
                    wanted: tuple[str, ...]) -> None:
        key = f"lock {workspace}/{path} v{version}"
        # The code goes with the job: a router may not have folded this deploy yet.
        submit = JobSubmit(kind="dependency", path=path, workspace=workspace,
                           language="python3", code=code)
        answer = await self._ask(subjects.SUBMIT_SUBJECT, msgspec.json.encode(submit),
                                 {IDEMPOTENCY_HEADER: key}, what="queue")
        if answer is None:
            return  # refused for good (the version is gone): logged
        job_id = answer["id"]
        self.logger.info("dependency_job_queued", workspace=workspace, path=path,
                         version=version, job_id=job_id, requirements=list(wanted))
        while True:
            query = JobQuery(id=job_id, wait=True, timeout=60)
            record = await self._ask(subjects.JOB_SUBJECT, msgspec.json.encode(query), {},
                                     what="read", timeout=75)
            if record is None:
                return
            view = record["view"]
            if view["status"] in TERMINAL:
                break
        result = view.get("result") if view["status"] == "success" else None
        if isinstance(result, dict) and isinstance(result.get("lock"), str):
            await self._record(workspace, path, version, tuple(result.get("requirements") or ()),
                               result["lock"], None, job_id)
        else:
            error = view.get("error") or f"the dependency job ended {view['status']}"
            await self._record(workspace, path, version, wanted, None, error, job_id)

    async def _record(self, workspace: str, path: str, version: int,
                      requirements: tuple[str, ...], lock: str | None, error: str | None,
                      job_id: str | None) -> None:
        records = await self.service.execute(
            st.record_lock, workspace, path, version=version, requirements=requirements,
            lock=lock, error=error, job_id=job_id, actor="system",
            reason=f"dependency job {job_id}" if job_id else "dependencies refused")
        if records:
            self.logger.info("script_locked", workspace=workspace, path=path, version=version,
                             job_id=job_id, ok=error is None, error=error)

    async def _ask(self, subject: str, body: bytes, headers: dict[str, str], *, what: str,
                   timeout: float = 15) -> dict[str, Any] | None:
        """A request to the routers, repeated while they cannot answer; None on a refusal."""
        attempt = 0
        while True:
            try:
                reply = await self.nc.request(
                    subject, body, timeout=timeout,
                    headers={subjects.AUTHORIZATION_HEADER: f"Bearer {self.token}", **headers})
                answer = msgspec.json.decode(reply.data)
            except (nats_errors.Error, asyncio.TimeoutError, msgspec.DecodeError) as exc:
                answer = {"error": "unavailable", "message": repr(exc)}
            if not isinstance(answer, dict) or answer.get("error") not in _RETRYABLE:
                if isinstance(answer, dict) and "error" in answer:
                    self.logger.warning("dependency_job_refused", what=what,
                                        error=answer.get("error"), reason=answer.get("message"))
                    return None
                return answer  # type: ignore[no-any-return]
            delay = RETRY[min(attempt, len(RETRY) - 1)]
            attempt += 1
            if attempt in (1, 10) or attempt % 60 == 0:
                self.logger.info("dependency_job_waiting", what=what, error=answer.get("error"),
                                 reason=answer.get("message"), retry_in=delay)
            await asyncio.sleep(delay)
