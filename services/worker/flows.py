"""Run a flow job: submit each planned step through a router, wait for it, pass its result on.

Each step is a job of its own, routed by its own (already resolved) tag, so step 2 may run on
`gpu` while step 1 ran on `default`, and submitted with the flow's grant, so it runs with the
rights of the flow's submitter. The orchestrating worker holds no execution slot meanwhile,
so a one-slot worker can orchestrate a flow and run its steps.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client as NATS

from services.common.log import Logger
from services.worker import jobreads
from services.worker.runner import Outcome
from shared import idempotency, subjects
from shared.codec import decode, encode
from shared.jobs import Job, JobSubmit, StepSummary, SubmitAnswer

STEP_SUBMIT_TIMEOUT = 15.0  # longer than a router's answer bound (10 s)
STEP_SUBMIT_RETRY = 120.0  # seconds a step's submission is repeated while its outcome is unknown
STEP_WAIT = 3600.0 * 24
_RETRY = ("outcome_unknown", "unavailable")


async def run_flow(nc: NATS, job: Job, logger: Logger) -> tuple[Outcome, list[StepSummary]]:
    """Run the steps in order; a failed step fails the flow with the step named."""
    started = time.monotonic()
    previous: Any = None
    summaries: list[StepSummary] = []
    lines: list[str] = []
    # The router signed this grant into the job: it lets these steps, and nothing else, run with
    # the rights of whoever submitted the flow (shared/grants.py). Workers hold no token.
    if not job.grant:
        return _done("failure", None, "the flow carries no grant from a router", [],
                     started), []
    grant = {subjects.FLOW_GRANT_HEADER: job.grant}
    for step in job.steps:
        args = dict(job.args)
        if step.index > 1:
            args["previous_result"] = previous
        submit = JobSubmit(language=step.language, code=step.code, tag=step.tag,
                           workspace=job.workspace, args=args, timeout=step.timeout or job.timeout,
                           parent=job.id, step=step.index)
        reply = await _submit_step(nc, submit, {
            **grant, idempotency.HEADER: f"flow {job.id} step {step.index}"}, logger)
        raw = decode(reply, dict)
        if "error" in raw:
            error = f"step {step.index} ({step.name}) was refused: {raw.get('message')}"
            summaries.append(StepSummary(index=step.index, name=step.name, tag=step.tag,
                                         status="failure"))
            return _done("failure", None, error, lines, started), summaries
        answer = decode(reply, SubmitAnswer)
        lines.append(f"step {step.index} ({step.name}): job {answer.id} on tag {answer.tag}")
        if answer.warning:
            lines.append(f"  warning: {answer.warning}")
        # A cancel of the flow cancels its running step too: the step's worker watches for
        # its parent's cancel (services/worker/cancels.py); workers may not write cancels.
        # The step's result comes from a router, which the grant lets read the flow's steps.
        view = (await jobreads.step_ended(nc, answer.id, job.grant, STEP_WAIT)).view
        summaries.append(StepSummary(index=step.index, name=step.name, job_id=answer.id,
                                     tag=answer.tag, status=view.status, group=view.group,
                                     worker=view.worker))
        lines.append(f"  {view.status} on group {view.group} ({view.worker})")
        if view.status != "success":
            error = f"step {step.index} ({step.name}) failed: {view.error or view.status}"
            return _done("failure", None, error, lines, started), summaries
        previous = view.result
    return _done("success", previous, None, lines, started), summaries


async def _submit_step(nc: NATS, submit: JobSubmit, headers: dict[str, str],
                       logger: Logger) -> bytes:
    """A step's submission, under an idempotency key named for the flow and the step: repeated
    while its outcome is unknown (no answer, no router, `outcome_unknown`), it is still one job;
    and a flow run again after its worker died finds the steps it already queued (and their
    results) instead of running them twice."""
    deadline = time.monotonic() + STEP_SUBMIT_RETRY
    delay = 0.5
    while True:
        try:
            reply = await nc.request(subjects.SUBMIT_SUBJECT, encode(submit),
                                     timeout=STEP_SUBMIT_TIMEOUT, headers=headers)
            error = decode(reply.data, dict).get("error")
            if error not in _RETRY or time.monotonic() + delay > deadline:
                return reply.data
            reason = str(error)
        except (asyncio.TimeoutError, nats_errors.NoRespondersError, nats_errors.TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            reason = type(exc).__name__
        logger.warning("step_submit_retry", parent=submit.parent, step=submit.step, reason=reason)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def _done(status: str, result: Any, error: str | None, lines: list[str], started: float) -> Outcome:
    return Outcome(status=status, result=result, error=error, logs="\n".join(lines) + "\n",  # type: ignore[arg-type]
                   duration_ms=(time.monotonic() - started) * 1000)
