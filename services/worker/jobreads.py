"""How a worker reads a job: it asks a router (`go.router.job`), it never reads job events.

Job events are other workspaces' results, so a worker may not read GO_JOB_EVENTS at all
(docs/security.md). It proves its right to one job instead: the job's hold key for a job it
holds (shared/seals.py), its flow's grant for a step of the flow it runs (shared/grants.py).
"""

from __future__ import annotations

import asyncio
import time

from nats import errors as nats_errors
from nats.aio.client import Client as NATS

from shared import subjects
from shared.codec import decode, encode
from shared.errors import GetOperateError
from shared.jobs import TERMINAL, JobQuery, JobRecord

READ_TIMEOUT = 10.0
STEP_POLL = 60.0  # one wait request covers this long; the step's wait is a loop of them


class JobReadRefused(GetOperateError):
    """Raised when the router answered a job read with an error (not found, refused)."""


async def read(nc: NATS, query: JobQuery, headers: dict[str, str],
               timeout: float = READ_TIMEOUT) -> JobRecord:
    """One `go.router.job` request; the router's error answer becomes JobReadRefused."""
    reply = await nc.request(subjects.JOB_SUBJECT, encode(query), timeout=timeout,
                             headers=headers)
    raw = decode(reply.data, dict)
    if "error" in raw:
        error = JobReadRefused(str(raw.get("message")), field=raw.get("field"))
        error.code = str(raw["error"])
        raise error
    return decode(reply.data, JobRecord)


async def held(nc: NATS, job_id: str, hold: str) -> JobRecord:
    """A job this worker holds, with its history (no logs or results)."""
    return await read(nc, JobQuery(id=job_id, history=True), {subjects.HOLD_HEADER: hold})


async def step_ended(nc: NATS, job_id: str, grant: str, within: float) -> JobRecord:
    """Wait for a flow's step to end, `within` seconds at most; routers or NATS that are away
    for a while only delay the answer."""
    deadline = time.monotonic() + within
    headers = {subjects.FLOW_GRANT_HEADER: grant}
    record: JobRecord | None = None
    delay = 0.1
    while time.monotonic() < deadline:
        wait = max(min(STEP_POLL, deadline - time.monotonic()), 0.001)
        try:
            record = await read(nc, JobQuery(id=job_id, wait=True, timeout=wait), headers,
                                timeout=wait + READ_TIMEOUT)
        except (asyncio.TimeoutError, nats_errors.NoRespondersError, nats_errors.TimeoutError):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        if record.view.status in TERMINAL:
            return record
    if record is None:
        raise asyncio.TimeoutError(f"no router answered for step {job_id} in {within:.0f} s")
    return record
