"""Job messages: the submission, the queued job, lifecycle events, the folded job view, heartbeats."""

from __future__ import annotations

from typing import Any, Iterable, Literal, Union

import msgspec

from shared.errors import InvalidInput
from shared.limits import MAX_TIMEOUT
from shared.routing import PlannedStep
from shared.tags import validate_workspace

# A job, or one of its events, travels as one NATS message (max_payload 1 MB): this leaves room
# for the headers. The router refuses a bigger job; a worker cuts a result's logs to fit.
MAX_MESSAGE_BYTES = 900 * 1024

MAX_CODE_BYTES = 256 * 1024
MAX_ARGS_BYTES = 256 * 1024
DEFAULT_WORKSPACE = "main"

JobStatus = Literal["queued", "running", "success", "failure", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"success", "failure", "cancelled"})


class JobSubmit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A request to run code: HTTP `POST /jobs` body and `go.router.submit` request payload.

    Either inline `language` + `code`, or the `path` of a deployed script or flow (`kind` tells
    which when both exist). `require_worker` refuses the job when no live worker serves its tag.
    """

    language: str | None = None
    code: str | None = None
    path: str | None = None
    kind: Literal["script", "flow", "dependency"] | None = None
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    tag: str | None = None
    workspace: str = DEFAULT_WORKSPACE
    timeout: float | None = None
    require_worker: bool = False
    parent: str | None = None
    step: int | None = None


MAX_BATCH = 500  # submissions in one `POST /jobs/batch` (or batched `go.router.submit`)


class JobBatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /jobs/batch` (and `go.router.submit` with header `Go-Batch: 1`): many submissions in
    one request, each routed and answered on its own (`BatchAnswer`): one refused job does not
    refuse the others. With an `Idempotency-Key` K, job i is submitted under key `K:i`."""

    jobs: list[JobSubmit]


class BatchAnswer(msgspec.Struct, kw_only=True):
    """One answer per submitted job, in order: a `SubmitAnswer`, or an error object (`error`,
    `message`, `field`) for a job that was refused (nothing queued for it)."""

    jobs: list[dict[str, Any]]


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A routed job as it sits on its tag's work-queue subject."""

    v: int = 1
    id: str
    workspace: str
    language: str
    code: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    tag: str
    timeout: float | None = None
    submitted_at: float
    kind: Literal["inline", "script", "flow", "dependency"] = "inline"
    path: str | None = None
    version: int | None = None
    steps: tuple[PlannedStep, ...] = ()
    parent: str | None = None
    step: int | None = None
    # A flow job's grant (shared/grants.py): signed by the router, presented by the worker with
    # each step it submits. None for every other job.
    grant: str | None = None
    # A deployed python3 script's lock (its dependency job's result, shared/pydeps.py): the
    # worker runs the job in the lock's cached environment. None: resolved on the worker.
    lock: str | None = None


class SubmitAnswer(msgspec.Struct, kw_only=True):
    """What a router answers to a submission: where the job went and whether anyone serves it."""

    id: str
    tag: str
    status: str = "queued"
    groups: list[str] = msgspec.field(default_factory=list)
    live_workers: int = 0
    warning: str | None = None
    steps: list[str] = msgspec.field(default_factory=list)
    # True when the submission repeated an idempotency key: this is the job it first queued.
    replayed: bool = False


class StepSummary(msgspec.Struct, kw_only=True):
    """How one step of a flow went: which job ran it, on which tag and group."""

    index: int
    name: str
    job_id: str | None = None
    tag: str
    status: str = "queued"
    group: str | None = None
    worker: str | None = None


class _JobEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    v: int = 1
    job_id: str
    time: float


class JobQueued(_JobEvent, tag="job.queued", kw_only=True):
    """Published by the router once the job is durably on its tag's queue."""

    tag: str
    workspace: str
    language: str
    kind: str = "inline"
    path: str | None = None
    parent: str | None = None
    # Submitted with an idempotency key: the digest of the request (shared/idempotency.py),
    # which a repeat of the key must match.
    request: str | None = None


class JobStarted(_JobEvent, tag="job.started", kw_only=True):
    """Published by the worker that took the job: on a first delivery once it has run for the
    worker's STARTED_AFTER (a job that ends sooner records only job.finished, with
    `started_at`); on a redelivery before it runs."""

    worker: str
    group: str | None = None
    attempt: int = 1


class JobFinished(_JobEvent, tag="job.finished", kw_only=True):
    """Published by the worker with the outcome, before it acknowledges the queue message."""

    status: Literal["success", "failure", "cancelled"]
    result: Any = None
    error: str | None = None
    logs: str = ""
    worker: str
    group: str | None = None
    attempt: int = 1
    duration_ms: float = 0.0
    steps: list[StepSummary] = msgspec.field(default_factory=list)
    dead_letter: bool = False
    # When the worker began the run. A job that ends within the worker's STARTED_AFTER has no
    # job.started (services/worker/attempt.py): this is then its only start time.
    started_at: float | None = None


JobEvent = Union[JobQueued, JobStarted, JobFinished]


class JobView(msgspec.Struct, kw_only=True):
    """A job as the CLI and HTTP API show it: the fold of its lifecycle events."""

    id: str
    status: JobStatus = "queued"
    tag: str | None = None
    workspace: str | None = None
    language: str | None = None
    result: Any = None
    error: str | None = None
    logs: str = ""
    worker: str | None = None
    group: str | None = None
    attempts: int = 0
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration_ms: float | None = None
    kind: str = "inline"
    path: str | None = None
    parent: str | None = None
    steps: list[StepSummary] = msgspec.field(default_factory=list)
    dead_letter: bool = False


class JobQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A `go.router.job` request: read one job, optionally waiting until it ends (at most
    `timeout` seconds, capped by the router), optionally with its history."""

    id: str
    wait: bool = False
    timeout: float = 30.0
    history: bool = False


class JobRecord(msgspec.Struct, kw_only=True):
    """The answer to a `go.router.job` request: the job's view and, when asked, its history
    without logs or results (an audit of what happened, small enough for one message).
    `last_seq` is the stream sequence of its newest genuine event, `subject_seq` that of the
    newest message on its subject, genuine or not (shared/seals.py); writers use it for
    conditional appends."""

    view: JobView
    history: list[JobEvent] | None = None
    last_seq: int = 0
    subject_seq: int = 0


def evolve_job(view: JobView, event: JobEvent) -> JobView:
    """Apply one lifecycle event; a finished job ignores later duplicates (effectively-once results),
    but a `job.queued` that lands after the job started or ended still fills in where it went.
    Only the first `job.queued` counts: the router writes one per job, so a second one is a
    forgery (a worker may write job events) trying to move the job to another workspace."""
    if view.status in TERMINAL and not isinstance(event, JobQueued):
        return view
    match event:
        case JobQueued() if view.queued_at is not None:
            return view
        case JobQueued():
            return msgspec.structs.replace(
                view, tag=event.tag, workspace=event.workspace, language=event.language,
                queued_at=event.time, kind=event.kind, path=event.path, parent=event.parent,
            )  # status untouched: queued is the default, and a late one must not undo progress
        case JobStarted():
            return msgspec.structs.replace(
                view, status="running", worker=event.worker, group=event.group,
                attempts=max(view.attempts, event.attempt), started_at=event.time,
            )
        case JobFinished():
            return msgspec.structs.replace(
                view, status=event.status, result=event.result, error=event.error, logs=event.logs,
                worker=event.worker, group=event.group, attempts=max(view.attempts, event.attempt),
                finished_at=event.time, duration_ms=event.duration_ms, steps=event.steps,
                dead_letter=event.dead_letter, started_at=view.started_at or event.started_at,
            )
    return view


def job_view(job_id: str, events: Iterable[JobEvent]) -> JobView:
    """Fold a job's lifecycle events into its current view."""
    view = JobView(id=job_id)
    for event in events:
        view = evolve_job(view, event)
    return view


def validate_batch(batch: JobBatch) -> JobBatch:
    if not batch.jobs:
        raise InvalidInput("jobs must hold at least one submission", field="jobs")
    if len(batch.jobs) > MAX_BATCH:
        raise InvalidInput(f"a batch holds at most {MAX_BATCH} jobs, not {len(batch.jobs)}",
                           field="jobs")
    return batch


def validate_submit(sub: JobSubmit) -> JobSubmit:
    """Size and shape checks msgspec's types cannot express."""
    if sub.path is None:
        if sub.language is None or not sub.language.strip():
            raise InvalidInput("language must not be empty (or give the path of a deployed script)",
                               field="language")
        if sub.code is None:
            raise InvalidInput("code is required for an inline job", field="code")
    elif sub.kind == "dependency":  # the version's code and the path it is deployed at
        if not sub.language or sub.code is None:
            raise InvalidInput("a dependency job needs path, language and code", field="code")
    elif sub.code is not None or sub.language is not None:
        raise InvalidInput("give either path, or language and code, not both", field="path")
    if sub.code is not None and len(sub.code.encode("utf-8")) > MAX_CODE_BYTES:
        raise InvalidInput(f"code is larger than {MAX_CODE_BYTES} bytes", field="code")
    args_size = len(msgspec.json.encode(sub.args))
    if args_size > MAX_ARGS_BYTES:
        raise InvalidInput(f"args are {args_size} bytes of JSON; the limit is {MAX_ARGS_BYTES}",
                           field="args")
    validate_workspace(sub.workspace)
    if sub.timeout is not None and not (0 < sub.timeout <= MAX_TIMEOUT):
        raise InvalidInput(f"timeout must be between 0 and {MAX_TIMEOUT:g} seconds",
                           field="timeout")
    return sub


InitStatus = Literal["none", "running", "ok", "failed"]


class WorkerStatus(msgspec.Struct, kw_only=True):
    """A worker's heartbeat, kept in the GO_WORKERS KV bucket under its id until it stops beating."""

    v: int = 1
    id: str
    group: str | None
    tags: list[str]
    tags_source: Literal["group", "env", "none"]
    config_version: int
    current_job: str | None = None
    init_status: InitStatus = "none"
    init_error: str | None = None
    # The end of the init script's output when it succeeded (its error when it failed is
    # init_error): admins see it on the Workers page; workspace tokens never.
    init_output: str | None = None
    state: Literal["starting", "ready", "stopping"] = "starting"
    hostname: str
    pid: int
    started_at: float
    heartbeat_at: float
    jobs_done: int = 0
    priorities: dict[str, int] = msgspec.field(default_factory=dict)
    dedicated: list[str] = msgspec.field(default_factory=list)
    # When this worker applied config_version (Unix seconds): how fast hot reloads land.
    config_applied_at: float | None = None
    # How this worker's jobs are isolated: "bwrap", or "none" (no sandbox; shown loudly).
    sandbox: str = "none"
    network: bool = True
    # Why the sandbox is off or unusable here (bwrap missing, ...), for `workers` and the page.
    sandbox_note: str | None = None
    # The languages this worker can run (their runtimes were found at start): a job in another
    # language on one of its tags fails, naming the runtime to install.
    runtimes: list[str] = msgspec.field(default_factory=list)

    @property
    def held_by_init(self) -> bool:
        """Its group's init script is still running or has failed: it takes no job until the
        script succeeds, so it is not live for its tags (router, `workers`, `jobs requeue`)."""
        return self.init_status in ("running", "failed")


class DeadLetter(msgspec.Struct, kw_only=True):
    """A job parked on GO_DEAD: after too many deliveries, with the history that led there; or
    refused by the worker that took it, with the `reason` (it can never run, or must not run
    there: another tag's job, a tag closed to its workspace)."""

    v: int = 1
    job: Job
    deliveries: int
    time: float
    history: list[JobEvent] = msgspec.field(default_factory=list)
    reason: str | None = None
