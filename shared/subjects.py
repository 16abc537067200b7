"""Every stream, subject, durable consumer and bucket name of the suite, and the tag <-> token codec.

A tag becomes one subject token (and a consumer name). Characters outside [A-Za-z0-9-] are written
as `_XX` (hex of each UTF-8 byte), so the mapping is reversible and injective, and no tag, whatever
it holds (`.`, `*`, `>`, spaces, `$`, unicode), can spell a wildcard, a second token or another tag.
"""

from __future__ import annotations

import hashlib
import re

from shared.errors import InvalidInput

PREFIX = "go"

# Config event log: Limits retention, one subject per entity so a worker can replay only its group.
CONFIG_STREAM = "GO_CONFIG"
CONFIG_SUBJECTS = f"{PREFIX}.config.>"
CONFIG_GROUP_PREFIX = f"{PREFIX}.config.group"
CONFIG_SCRIPT_PREFIX = f"{PREFIX}.config.script"
CONFIG_FLOW_PREFIX = f"{PREFIX}.config.flow"
CONFIG_TAGS_SUBJECT = f"{PREFIX}.config.tags"
CONFIG_TOKENS_SUBJECT = f"{PREFIX}.config.tokens"

# Job queue: WorkQueue retention, one subject and one shared durable pull consumer per tag.
JOBS_STREAM = "GO_JOBS"
JOBS_PREFIX = f"{PREFIX}.jobs.q"
JOBS_SUBJECTS = f"{JOBS_PREFIX}.>"

# Job lifecycle events (queued, started, finished): Limits retention with a max age.
JOB_EVENTS_STREAM = "GO_JOB_EVENTS"
JOB_EVENTS_PREFIX = f"{PREFIX}.jobev"
JOB_EVENTS_SUBJECTS = f"{JOB_EVENTS_PREFIX}.>"

# Dead letters: jobs that lost their worker too many times, with their history.
DEAD_STREAM = "GO_DEAD"
DEAD_PREFIX = f"{PREFIX}.dead"
DEAD_SUBJECTS = f"{DEAD_PREFIX}.>"

# Live workers: a KV bucket whose entries expire when heartbeats stop.
WORKERS_BUCKET = "GO_WORKERS"
# Cancel requests (by job id) and the marks of cancelled queued jobs: a KV bucket.
CANCELS_BUCKET = "GO_CANCELS"
# The config snapshot every service may start from: an object store, one object.
SNAPSHOT_BUCKET = "GO_SNAPSHOTS"
SNAPSHOT_NAME = "config"

# Wake-ups: an empty core-NATS message per enqueued job, so a worker pulls at once without
# polling; it carries no job (a worker may be woken only for its own tags).
WAKE_PREFIX = f"{PREFIX}.wake"

# Request/reply: submit a job to any router (queue group).
SUBMIT_SUBJECT = f"{PREFIX}.router.submit"
ROUTER_QUEUE_GROUP = "routers"
# Headers of a submission: a token, as on HTTP; or, for a flow's step, the flow's grant.
AUTHORIZATION_HEADER = "Authorization"
BATCH_HEADER = "Go-Batch"  # `1` on go.router.submit: the body is a JobBatch
FLOW_GRANT_HEADER = "Go-Flow-Grant"
# Request/reply: read one job (its view, optionally its history) from any router, with a token,
# a flow's grant (its steps) or the job's hold key (its holder): see shared/seals.py.
JOB_SUBJECT = f"{PREFIX}.router.job"
# A queued job's hold key (only its holder sees it) and each job event's seal (shared/seals.py).
HOLD_HEADER = "Go-Job-Hold"
SEAL_HEADER = "Go-Job-Seal"
ROUTER_SEAL_HEADER = "Go-Router-Seal"  # a router's job.queued: shared/seals.py router_seal
# On a queued job: the stream sequence of its job.queued. A holder whose job ends quickly writes
# only job.finished, conditional on that sequence (services/worker/attempt.py, STARTED_AFTER).
QUEUED_SEQ_HEADER = "Go-Queued-Seq"
# A message parked on GO_DEAD as it came (it was not a Job): why (a DeadLetter has `reason`).
DEAD_REASON_HEADER = "Go-Dead-Reason"

_SAFE = re.compile(r"[A-Za-z0-9-]")
_ALL_SAFE = re.compile(r"[A-Za-z0-9-]+")
_TOKEN = re.compile(r"^(?:[A-Za-z0-9-]|_[0-9A-F]{2})+$")


def encode_token(text: str) -> str:
    """Map any non-empty string to a subject token made of [A-Za-z0-9_-] only."""
    if not text:
        raise InvalidInput("an empty string cannot be a subject token", field="tag")
    if _ALL_SAFE.fullmatch(text):  # job ids and most tags: nothing to escape
        return text
    out: list[str] = []
    for ch in text:
        if _SAFE.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"_{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def decode_token(token: str) -> str:
    """Inverse of encode_token; refuses anything encode_token could not have produced."""
    if not _TOKEN.fullmatch(token):
        raise InvalidInput(f"{token!r} is not an encoded token", field="token")
    raw = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "_":
            raw.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(token[i].encode("ascii"))
            i += 1
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{token!r} does not decode to UTF-8", field="token") from exc
    if encode_token(text) != token:  # e.g. `_41` for a plain `A`: not canonical
        raise InvalidInput(f"{token!r} is not in canonical form", field="token")
    return text


def job_subject(tag: str) -> str:
    """The work-queue subject a job with this tag is published to."""
    return f"{JOBS_PREFIX}.{encode_token(tag)}"


MAX_CONSUMER_NAME = 255


def tag_consumer(tag: str) -> str:
    """The durable pull consumer every worker listening to `tag` shares (competing consumers).

    JetStream caps consumer names at 255 characters; an encoded tag that would pass that is named
    by its SHA-256 instead (`tagh_` prefix, so it cannot collide with a `tag_` name).
    """
    name = f"tag_{encode_token(tag)}"
    if len(name) <= MAX_CONSUMER_NAME:
        return name
    return "tagh_" + hashlib.sha256(tag.encode("utf-8")).hexdigest()


CANCELLED_QUEUED = "queued"  # GO_CANCELS keys `queued.<tag>.<job id>`: cancelled, still queued


def cancelled_queued_key(tag: str, job_id: str) -> str:
    """GO_CANCELS key marking a job cancelled before it started that still sits on its tag's
    queue (nobody may delete a queued message but the worker that takes it): waiting counts
    leave it out until that worker drops it and removes the mark."""
    return f"{CANCELLED_QUEUED}.{encode_token(tag)}.{encode_token(job_id)}"


def wake_subject(tag: str) -> str:
    """Where the routers announce that a job of `tag` was enqueued (no body)."""
    return f"{WAKE_PREFIX}.{encode_token(tag)}"


def tag_of_subject(subject: str) -> str:
    """Recover the tag from a job subject."""
    prefix = JOBS_PREFIX + "."
    if not subject.startswith(prefix) or "." in subject[len(prefix) :]:
        raise InvalidInput(f"{subject!r} is not a job subject", field="subject")
    return decode_token(subject[len(prefix) :])


def group_subject(group: str) -> str:
    """Config events about one worker group: a worker replays only this subject."""
    return f"{CONFIG_GROUP_PREFIX}.{encode_token(group)}"


def job_events_subject(job_id: str) -> str:
    """Lifecycle events of one job."""
    return f"{JOB_EVENTS_PREFIX}.{encode_token(job_id)}"


def dead_subject(tag: str) -> str:
    """Where a dead-lettered job of `tag` is parked."""
    return f"{DEAD_PREFIX}.{encode_token(tag)}"


def worker_key(worker_id: str) -> str:
    """The id part of a worker's KV key (KV keys allow [-/_=.A-Za-z0-9])."""
    return encode_token(worker_id)


def heartbeat_key(nats_user: str, worker_id: str, nonce: str) -> str:
    """A worker's key in GO_WORKERS: the NATS user its credentials name (`worker:<group>`, its
    scope), its id, and a nonce no other worker can write under (`heartbeat_nonce` of its
    control connection's inbox token), dot separated. The authority lets a worker write this one key only, so a worker can neither
    overwrite nor delete another's heartbeat, of another group or of its own."""
    return f"{encode_token(nats_user)}.{worker_key(worker_id)}.{encode_token(nonce)}"


def heartbeat_nonce(inbox_token: str) -> str:
    """The nonce of a worker's heartbeat key: a one-way function of its control connection's
    inbox token. The key is readable (routers list the bucket), the token must stay secret:
    whoever knows it may declare it and read that connection's replies."""
    digest = hashlib.sha256(b"getoperate heartbeat nonce v1\0" + inbox_token.encode("utf-8"))
    return digest.hexdigest()[:24]


def heartbeat_parts(key: str) -> tuple[str, str] | None:
    """(NATS user, worker id) a heartbeat key was written under (None: not a heartbeat key)."""
    parts = key.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    try:
        return decode_token(parts[0]), decode_token(parts[1])
    except InvalidInput:
        return None


def script_subject(workspace: str, path: str) -> str:
    """Config events of one deployed script: its last message is its current version."""
    return f"{CONFIG_SCRIPT_PREFIX}.{encode_token(workspace)}.{encode_token(path)}"


def flow_subject(workspace: str, path: str) -> str:
    """Config events of one deployed flow."""
    return f"{CONFIG_FLOW_PREFIX}.{encode_token(workspace)}.{encode_token(path)}"
