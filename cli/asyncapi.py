"""The AsyncAPI 3.0 document of every NATS subject and message the suite uses.

docs/nats.md explains the protocol in prose; this module states the same facts in a form tools
read (doc viewers, code generators, contract tests). Payload schemas come from the msgspec types
the services really encode and decode, and subjects from shared/subjects.py, so the document
cannot drift from the code: tests/unit/test_asyncapi.py fails when docs/asyncapi.json is not what
`render()` returns. Regenerate it with `getoperate asyncapi --output docs/asyncapi.json`.

Pure, like the rest of `shared/`: no I/O, the same output on every call.
"""

from __future__ import annotations

import inspect
import json
from typing import Annotated, Any

import msgspec

from shared import idempotency, seals, subjects
from shared.events import GENESIS_HASH, GroupCreated, GroupTagsSet, Recorded, seal
from shared.jobs import (
    DeadLetter, Job, JobFinished, JobQuery, JobQueued, JobRecord, JobStarted, JobSubmit, JobView,
    SubmitAnswer, WorkerStatus,
)
from shared.codec import encode
from shared.signing import SIGNATURE_HEADER, SUBJECT_PREV_HEADER, Signer, parse_private_key
from shared.snapshots import SignedSnapshot, seal_snapshot
from shared.state import ConfigState, GroupConfig

TITLE = "getoperate NATS API"
VERSION = "0.1.0"  # pyproject.toml's version; the test keeps them equal
REF = "#/components/schemas/{name}"
# services/common/bus.py owns the default URL (it does I/O, so shared/ cannot import it); the
# test keeps this equal to bus.DEFAULT_NATS_URL. Bucket names come from shared/subjects.py.
SERVER_HOST = "127.0.0.1:4222"

JOB_MSG_ID = ("`<tag>`: the first 16 hex digits of HMAC-SHA256 of the id before it under the job's"
              " hold key (shared/seals.py: msg_id), so nobody but the holder can take the id"
              " first; JetStream drops a repeat within the stream's 120 s dedup window")
JOB_SEAL = ("hex HMAC-SHA256 of the message body under the job's hold key (shared/seals.py):"
            " written by the router or the job's holder; routers skip an event whose seal does"
            " not match")
ROUTER_SEAL = ("hex HMAC-SHA256 of the body under the routers' key itself (shared/seals.py"
               " router_seal), on the router's job.queued only: no holder can write it; a router's"
               " job board starts following a job only from such an event")
TOKEN_RULE = (
    "Each parameter is one subject token made by `encode_token` (shared/subjects.py): characters"
    " in `[A-Za-z0-9-]` are kept, every other character (`_` included) becomes `_XX` per byte of"
    " its UTF-8 encoding (uppercase hex). The mapping is reversible and injective, and no input"
    " can spell a wildcard (`*`, `>`), a second token (`.`) or another input's token."
)


class SubmitError(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A refused submission: `GetOperateError.to_dict()`, or `internal` for an unexpected failure.

    Only documented here (the router builds it as a dict); a reply with `error` is this one.
    """

    error: Annotated[str, msgspec.Meta(
        description="`invalid`, `not_found`, `forbidden`, `no_live_worker`,"
        " `idempotency_conflict`, `unavailable` (nothing queued), `outcome_unknown` (the job"
        " may still run: look it up by `id`), `storage_full` (nothing queued) or `internal`")]
    message: Annotated[str, msgspec.Meta(description="a sentence naming the problem")]
    field: Annotated[str | None, msgspec.Meta(
        description="the offending field (e.g. `args.region`); absent when unknown")] = None
    id: Annotated[str | None, msgspec.Meta(
        description="`outcome_unknown` only: the id of the job that may have been queued")] = None


class PullRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The body of a JetStream pull request, as the bundled worker sends it (one job at a time).

    Only documented here (nats-py's `fetch(1)` writes it); the server accepts more fields.
    """

    batch: Annotated[int, msgspec.Meta(ge=1, description="messages wanted; the worker asks 1")]
    expires: Annotated[int | None, msgspec.Meta(
        description="nanoseconds the server may wait for a message")] = None
    no_wait: Annotated[bool, msgspec.Meta(
        description="answer at once (404) when no message is waiting")] = False


def _example(name: str, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A Message Example Object; the payload is what msgspec writes on the wire, decoded back
    (plain lists and dicts, no tuples)."""
    wire = msgspec.json.decode(msgspec.json.encode(payload))
    out: dict[str, Any] = {"name": name, "payload": wire}
    if headers:
        out["headers"] = headers
    return out


def _headers(**fields: str) -> dict[str, Any]:
    """A message's NATS headers as a JSON Schema object (keyword `_` stands for `-`)."""
    return {"type": "object", "properties": {
        name.replace("_", "-"): {"type": "string", "description": text}
        for name, text in fields.items()}}


# The examples' signing key: a fixed, published seed so that the document is the same on every
# call (Ed25519 signatures are deterministic). Never a real deployment's key.
EXAMPLE_ROUTER_KEY = b"example router key, never a real one"
_EXAMPLE_SIGNER = Signer(parse_private_key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                                           field="example key"))


def _signed_headers(rec: Recorded, subject_prev: int, expected_last: int) -> dict[str, str]:
    subject = subjects.group_subject(rec.event.group)  # type: ignore[union-attr]
    signer = _EXAMPLE_SIGNER
    return {"Nats-Msg-Id": f"{rec.id}:{signer.key_id}",
            "Nats-Expected-Last-Sequence": str(expected_last),
            SIGNATURE_HEADER: signer.sign_event(rec.seq, subject, subject_prev, encode(rec)),
            SUBJECT_PREV_HEADER: str(subject_prev)}


def _examples() -> dict[str, list[dict[str, Any]]]:
    """One realistic value per message (from docs/nats.md), built from the real types so an
    example can never hold a field the code does not have."""
    job_id = "01a22593f8861a6aa49c992a90db7daf"
    worker = "default-vm-23067-3514"
    job = Job(id=job_id, workspace="main", language="bash", code='echo "hello $1"',
              args={"name": "world"}, tag="bash", submitted_at=1795926784.1343162)
    queued = JobQueued(job_id=job_id, time=job.submitted_at, tag="bash", workspace="main",
                       language="bash")
    started = JobStarted(job_id=job_id, time=1795926784.1369042, worker=worker, group="default")
    finished = JobFinished(job_id=job_id, time=1795926784.142324, status="success",
                           result="hello world", logs="hello world\n", worker=worker,
                           group="default", duration_ms=4.763)
    hold = seals.hold_key(EXAMPLE_ROUTER_KEY, job_id)

    def sealed(event: Any) -> str:
        return seals.seal(hold, encode(event))

    first = seal(prev_hash=GENESIS_HASH, seq=1, id="d870c02884e6473c83680a1e51f08a9f",
                 time="2026-11-29T04:32:47.383669Z", actor="system",
                 reason="first start: seed default groups", event=GroupCreated(group="default"))
    second = seal(prev_hash=first.hash, seq=2, id="a63e39039fc94139a6cb1693bbd4b273",
                  time=first.time, actor="system", reason=first.reason,
                  event=GroupTagsSet(group="default", tags=("bash", "python3")))
    return {
        "Recorded": [
            _example("group created (seq 1)", first, _signed_headers(first, 0, 0)),
            _example("group tags set (seq 2)", second, _signed_headers(second, 1, 1)),
        ],
        "Job": [_example("inline bash job", job, {"Nats-Msg-Id": job_id,
                                                   subjects.HOLD_HEADER: hold,
                                                   subjects.QUEUED_SEQ_HEADER: "1"})],
        "JobQuery": [_example("wait up to 30 s for a job to end", JobQuery(
            id=job_id, wait=True, timeout=30.0), {subjects.AUTHORIZATION_HEADER: "Bearer gow_..."})],
        "JobRecord": [_example("ended", JobRecord(view=JobView(
            id=job_id, status="success", tag="bash", workspace="main", language="bash",
            result="hello world", logs="hello world\n", worker=worker, group="default",
            attempts=1, queued_at=queued.time, started_at=started.time,
            finished_at=finished.time, duration_ms=4.763), last_seq=3, subject_seq=3))],
        "JobSubmit": [_example("inline bash job", JobSubmit(
            language="bash", code='echo "hello $1"', args={"name": "world"}),
            {subjects.AUTHORIZATION_HEADER: "Bearer gow_..."})],
        "SubmitAnswer": [_example("queued", SubmitAnswer(
            id=job_id, tag="bash", groups=["default"], live_workers=1))],
        "SubmitError": [_example("tag not available", SubmitError(
            error="forbidden", message="tag 'gpu' is not available to workspace 'ws9'",
            field="tag"))],
        "JobQueued": [_example("queued", queued, {"Nats-Msg-Id": seals.msg_id(hold, f"{job_id}:queued"),
                                                  subjects.SEAL_HEADER: sealed(queued),
                                                  subjects.ROUTER_SEAL_HEADER: seals.router_seal(
                                                      EXAMPLE_ROUTER_KEY, encode(queued))})],
        "JobStarted": [_example("started", started, {"Nats-Msg-Id": seals.msg_id(hold, f"{job_id}:1:started"),
                                                     subjects.SEAL_HEADER: sealed(started)})],
        "JobFinished": [_example("success", finished, {"Nats-Msg-Id": seals.msg_id(hold, f"{job_id}:1:finished"),
                                                       subjects.SEAL_HEADER: sealed(finished)})],
        "DeadLetter": [_example("parked after 6 deliveries", DeadLetter(
            job=job, deliveries=6, time=1795928164.2054083, history=[queued, started]),
            {"Nats-Msg-Id": job_id})],
        "WorkerStatus": [_example("ready worker", WorkerStatus(
            id=worker, group="default", tags=["bash", "python3"], tags_source="group",
            config_version=2, state="ready", hostname="vm", pid=23067,
            started_at=1795926576.821796, heartbeat_at=1795926651.856682, jobs_done=3))],
        "CancelRequest": [_example("router", "cancelled by admin")],
        "CancelledQueuedMark": [_example("a job cancelled while it waited", "")],
        "ConfigSnapshot": [_example("seeded state (shown as JSON, `state` in base64)", seal_snapshot(
            _EXAMPLE_SIGNER, ConfigState(seq=2, groups={"default": GroupConfig(
                name="default", tags=("bash", "python3"), version=2)}), second.hash, 2))],
        "PullRequest": [_example("is there a job now?", PullRequest(batch=1, expires=900_000)),
                        _example("after a wake-up", PullRequest(batch=1, expires=300_000_000))],
        "PullNoJob": [{"name": "no message", "headers": {"Status": "404",
                                                         "Description": "No Messages"}}],
        "WakeUp": [{"name": "a job was enqueued"}],
    }


def _messages(schema: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """components.messages: what travels, its content type, headers and examples."""
    json_type = "application/json"
    msg_id = "`Nats-Msg-Id`: JetStream drops a repeat within the stream's 120 s dedup window"
    spec: dict[str, dict[str, Any]] = {
        "Recorded": {
            "title": "Config record",
            "summary": "One config event in its hash-chained envelope (the config event log).",
            "payload": schema["Recorded"],
            "headers": _headers(
                Nats_Msg_Id=f"`<event id>:<key id>`. {msg_id}.",
                Nats_Expected_Last_Sequence="the stream sequence of the last message the outbox"
                " accounted for: the stream refuses the message if anything landed after it",
                Go_Signature="`<key id>.<base64url>`: Ed25519 signature by the config service"
                " over the log sequence, the subject, `Go-Subject-Prev` and the SHA-256 of the"
                " message bytes (docs/nats.md, Recorded envelope). Fold nothing that fails it",
                Go_Subject_Prev="log sequence of the previous event on this subject (0 for the"
                " first): a reader of one subject sees a missing event"),
        },
        "Job": {"title": "Job", "summary": "A routed job waiting on its tag's work queue.",
                "payload": schema["Job"],
                "headers": _headers(**{
                    "Nats_Msg_Id": f"the job id. {msg_id}.",
                    subjects.HOLD_HEADER.replace("-", "_"):
                    "the job's hold key (hex HMAC-SHA256 of the job id under the routers' key):"
                    " whoever pulls the job writes its events with it (`"
                    f"{subjects.SEAL_HEADER}`) and proves it holds the job with it on"
                    f" `{subjects.JOB_SUBJECT}`. A worker refuses a job without one.",
                    subjects.QUEUED_SEQ_HEADER.replace("-", "_"):
                    "the GO_JOB_EVENTS sequence of the job's `job.queued` (absent when that"
                    " event could not be stored): a worker whose job ends before it writes"
                    " `job.started` stores `job.finished` alone, expecting this as the last"
                    " sequence of the job's subject"})},
        "JobQuery": {"title": "Job read", "summary": "Read one job from a router.",
                     "payload": schema["JobQuery"],
                     "headers": _headers(**{
                         subjects.AUTHORIZATION_HEADER.replace("-", "_"):
                         "`Bearer <token>`: the rules of HTTP `GET /jobs/{id}` (a workspace"
                         " token reads only its workspace's jobs; another's is `not_found`)",
                         subjects.FLOW_GRANT_HEADER.replace("-", "_"):
                         "the worker running a flow: its grant reads the flow's steps",
                         subjects.HOLD_HEADER.replace("-", "_"):
                         "the worker holding the job: its hold key reads that job"})},
        "JobRecord": {"title": "Job record",
                      "summary": "The job's view (and history, when asked) from its genuine"
                      " events.", "payload": schema["JobRecord"]},
        "JobSubmit": {"title": "Job submission",
                      "summary": "A request to run code; unknown fields are refused.",
                      "payload": schema["JobSubmit"],
                      "headers": _headers(**{
                          subjects.AUTHORIZATION_HEADER.replace("-", "_"):
                          "`Bearer <token>`: an admin token or a workspace token (`gow_...`),"
                          " with the same rights as on HTTP `POST /jobs`. Required, except on"
                          " a flow's step.",
                          subjects.FLOW_GRANT_HEADER.replace("-", "_"):
                          "a flow's step only, sent by the worker running the flow: the"
                          " `grant` of the flow's `Job`, signed by a router. The step runs with"
                          " the rights of the flow's submitter; it must be a step the grant"
                          " planned (its `parent`, `step`, `workspace`, `tag` and code).",
                          idempotency.HEADER.replace("-", "_"):
                          "optional, 1..255 printable ASCII characters: a repeat of the key in"
                          " the same workspace answers with the job it first queued"
                          " (`replayed: true`) for as long as job history is kept, and never"
                          " queues a second one, across routers and router restarts; the same"
                          " key with a different request is `idempotency_conflict`",
                          subjects.BATCH_HEADER.replace("-", "_"):
                          "`1`: the body is a batch, `{\"jobs\": [JobSubmit, ...]}` (at most"
                          " 500), answered with `{\"jobs\": [...]}`: each job's SubmitAnswer or"
                          " error, with its `index`, in order; with an Idempotency-Key K, job i"
                          " is submitted under K:i"})},
        "SubmitAnswer": {"title": "Submit answer",
                         "summary": "The job is durably queued (the reply has `id`).",
                         "payload": schema["SubmitAnswer"]},
        "SubmitError": {"title": "Submit error",
                        "summary": "The submission was refused (the reply has `error`).",
                        "payload": schema["SubmitError"]},
        "JobQueued": {"title": "job.queued", "summary": "The router queued the job.",
                      "payload": schema["JobQueued"],
                      "headers": _headers(Nats_Msg_Id=f"`<job id>:queued:<tag>`. {JOB_MSG_ID}",
                                          Go_Job_Seal=JOB_SEAL,
                                          Go_Router_Seal=ROUTER_SEAL)},
        "JobStarted": {"title": "job.started", "summary": "A worker took the job and it has run for the worker's"
                       " WORKER_STARTED_AFTER (0.25 s); written before the run on a redelivery."
                       " A job that ends sooner has no job.started: its job.finished carries"
                       " `started_at`.",
                       "payload": schema["JobStarted"],
                       "headers": _headers(Nats_Msg_Id=f"`<job id>:<attempt>:started:<tag>`."
                                           f" {JOB_MSG_ID}",
                                           Go_Job_Seal=JOB_SEAL)},
        "JobFinished": {
            "title": "job.finished", "summary": "The job's outcome; readers keep the first one.",
            "payload": schema["JobFinished"],
            "headers": _headers(Nats_Msg_Id="`<job id>:<attempt>:finished:<tag>`; from the router"
                                " `<job id>:0:finished:<tag>` (not enqueued) or"
                                " `<job id>:cancel:finished:<tag>` (cancelled while queued)."
                                f" {JOB_MSG_ID}",
                                Go_Job_Seal=JOB_SEAL),
        },
        "DeadLetter": {"title": "Dead letter",
                       "summary": "A job parked after too many deliveries, with its history.",
                       "payload": schema["DeadLetter"],
                       "headers": _headers(**{
                           "Nats_Msg_Id": f"the job id (or `<tag>:<queue sequence>`). {msg_id}.",
                           subjects.DEAD_REASON_HEADER.replace("-", "_"):
                           "present only on a message parked as it came (not a Job, or one"
                           " that failed before every run): why; the body is then the queue"
                           " message's exact bytes, not a DeadLetter"})},
        "WorkerStatus": {
            "title": "Worker heartbeat", "summary": "A live worker's status (a KV entry).",
            "payload": schema["WorkerStatus"],
            "headers": _headers(KV_Operation="`DEL` when the worker stopped and deleted its key"
                                " (the body is then empty); absent on a put"),
        },
        "CancelRequest": {"title": "Cancel request",
                          "summary": "Free text; the key (the job id) is what asks to cancel.",
                          "contentType": "text/plain",
                          "payload": {"type": "string", "description": "who asked, e.g."
                                      " `cancelled by <token name>` or `flow <id> cancelled`"}},
        "CancelledQueuedMark": {
            "title": "Cancelled, still queued",
            "summary": "Empty; the key names the tag and the job. Routers put it when they cancel"
                       " a job that waits, the worker that drops the job deletes it"
                       " (`KV-Operation: DEL`); waiting counts leave marked jobs out.",
            "contentType": "text/plain",
            "payload": {"type": "string", "maxLength": 0},
            "headers": _headers(KV_Operation="`DEL` when the worker dropped the job"),
        },
        "ConfigSnapshot": {
            "title": "Config snapshot",
            "summary": f"The object `{subjects.SNAPSHOT_NAME}`: the folded configuration, signed, as"
                       " MessagePack.",
            "description": "Read and written with a JetStream object-store client, which splits"
            " the object into chunks on this channel and keeps its metadata on"
            f" `$O.{subjects.SNAPSHOT_BUCKET}.M.<base64url(name)>`. The reassembled bytes are MessagePack"
            " with the shape of this schema; `state` is itself MessagePack of `ConfigState`"
            " (#/components/schemas/ConfigState). Written by the config service only; use it"
            " only once `signature` verifies. A cache only: the stream stays the source of"
            " truth.",
            "contentType": "application/vnd.msgpack",
            "payload": schema["SignedSnapshot"],
        },
        "PullRequest": {"title": "Pull request",
                        "summary": "Ask a durable consumer for the next job.",
                        "payload": schema["PullRequest"]},
        "WakeUp": {
            "title": "Wake-up", "summary": "Empty: a job of the tag was just enqueued.",
        },
        "PullNoJob": {
            "title": "No job", "summary": "A status-only answer to a pull: no job (empty body).",
            "headers": {"type": "object", "required": ["Status"], "properties": {
                "Status": {"type": "string", "enum": ["404", "408", "409", "503"],
                           "description": "404 no messages, 408 request expired, 409, 503"},
                "Description": {"type": "string"}}},
        },
    }
    examples = _examples()
    for name, message in spec.items():
        message["name"] = name
        message["examples"] = examples[name]
        if name in ("PullNoJob", "WakeUp"):
            continue
        message.setdefault("contentType", json_type)
    return spec


def _channels() -> dict[str, dict[str, Any]]:
    """Every subject, keyed by channel id; addresses are built from shared/subjects.py."""
    enc = subjects.encode_token

    def param(text: str, examples: list[str]) -> dict[str, Any]:
        return {"description": f"{text}. {TOKEN_RULE}", "examples": examples}

    group = param("token(group name)", [enc("default"), enc("gpu_pool")])
    workspace = param("token(workspace)", [enc("main")])
    path = param("token(script or flow path)", [enc("f/double")])
    tag = param("token(tag)", [enc(t) for t in ("gpu", "a.b", "my tag", "main:f/double")])
    job_id = param("token(job id); job ids are lowercase hex, so the token is the id itself",
                   ["01a22593f8861a6aa49c992a90db7daf"])
    kv_workers = f"$KV.{subjects.WORKERS_BUCKET}"
    kv_cancels = f"$KV.{subjects.CANCELS_BUCKET}"

    def channel(address: str | None, title: str, description: str, messages: list[str],
                stream: str | None, **params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "address": address, "title": title, "description": description,
            "messages": {m[0].lower() + m[1:]: {"$ref": f"#/components/messages/{m}"}
                         for m in messages},
        }
        if params:
            out["parameters"] = params
        if stream:
            out["x-stream"] = stream
        return out

    config = f"Stream `{subjects.CONFIG_STREAM}` (Limits, kept forever). Published by the config" \
             " service only, through its outbox, each event signed (`Go-Signature`); followers" \
             " fold only signed events and skip anything else."
    channels = {
        "configGroup": channel(
            f"{subjects.CONFIG_GROUP_PREFIX}.{{group}}", "Config events of one worker group",
            f"{config} `group.*` events. The router reads all of `{subjects.CONFIG_SUBJECTS}`;"
            " a worker replays and follows only its group's subject.",
            ["Recorded"], subjects.CONFIG_STREAM, group=group),
        "configScript": channel(
            f"{subjects.CONFIG_SCRIPT_PREFIX}.{{workspace}}.{{path}}", "Deploys of one script",
            f"{config} `script.deployed`; the last message is the script's current version.",
            ["Recorded"], subjects.CONFIG_STREAM, workspace=workspace, path=path),
        "configFlow": channel(
            f"{subjects.CONFIG_FLOW_PREFIX}.{{workspace}}.{{path}}", "Deploys of one flow",
            f"{config} `flow.deployed`; the last message is the flow's current version.",
            ["Recorded"], subjects.CONFIG_STREAM, workspace=workspace, path=path),
        "configTags": channel(
            subjects.CONFIG_TAGS_SUBJECT, "Assignable tags",
            f"{config} `tags.assignable_set` and `tags.assignable_removed`.",
            ["Recorded"], subjects.CONFIG_STREAM),
        "configTokens": channel(
            subjects.CONFIG_TOKENS_SUBJECT, "API tokens",
            f"{config} `token.created` and `token.revoked` (hashes only, never token values).",
            ["Recorded"], subjects.CONFIG_STREAM),
        "jobQueue": channel(
            f"{subjects.JOBS_PREFIX}.{{tag}}", "Work queue of one tag",
            f"Stream `{subjects.JOBS_STREAM}` (WorkQueue): a message is deleted when a worker acks"
            " or terms it. Workers take jobs through the tag's durable pull consumer (see"
            " `jobPull`); nobody but the admin user may subscribe here. Don't add a consumer of"
            " your own: it would take jobs away from the workers.",
            ["Job"], subjects.JOBS_STREAM, tag=tag),
        "jobWake": channel(
            f"{subjects.WAKE_PREFIX}.{{tag}}", "Wake-up of one tag",
            "Core NATS (not stored). A router publishes an empty message here after each job it"
            " enqueues on the tag, so the workers listening to the tag pull at once instead of"
            " polling. It carries no job: a worker may subscribe only to its own tags' wake-ups.",
            ["WakeUp"], None, tag=tag),
        "jobPull": channel(
            f"$JS.API.CONSUMER.MSG.NEXT.{subjects.JOBS_STREAM}.{{consumer}}",
            "Pull the next job of a tag",
            "JetStream API: a request to the tag's durable pull consumer; the server answers on"
            " the request's reply inbox (`jobPullReply`).",
            ["PullRequest"], None, consumer={
                "description": "The tag's shared durable consumer, `tag_consumer(tag)`:"
                " `tag_<token(tag)>`, or `tagh_<sha256 hex of the tag>` when that would pass"
                f" {subjects.MAX_CONSUMER_NAME} characters. {TOKEN_RULE}",
                "examples": [subjects.tag_consumer(t) for t in ("python3", "a.b", "é" * 42)]}),
        "jobPullReply": channel(
            None, "Answer to a pull",
            "The requester's private inbox (dynamic): the next `Job` (ack, nak, term or"
            " in-progress it through its reply subject) or a status-only message.",
            ["Job", "PullNoJob"], None),
        "jobEvents": channel(
            f"{subjects.JOB_EVENTS_PREFIX}.{{jobId}}", "Lifecycle events of one job",
            f"Stream `{subjects.JOB_EVENTS_STREAM}` (Limits, max age"
            " `GETOPERATE_JOB_HISTORY_SECONDS`, default 7 days). Decode by `type`, skip unknown"
            " types, stop at the first `job.finished`.",
            ["JobQueued", "JobStarted", "JobFinished"], subjects.JOB_EVENTS_STREAM, jobId=job_id),
        "deadLetters": channel(
            f"{subjects.DEAD_PREFIX}.{{tag}}", "Dead letters of one tag",
            f"Stream `{subjects.DEAD_STREAM}` (Limits, same max age as job events). Nothing in"
            " the suite reads it; to retry a job, submit it again.",
            ["DeadLetter"], subjects.DEAD_STREAM, tag=tag),
        "routerSubmit": channel(
            subjects.SUBMIT_SUBJECT, "Submit a job",
            "Core NATS request/reply (not JetStream). Every router subscribes in queue group"
            f" `{subjects.ROUTER_QUEUE_GROUP}`, so one answers, and only after it replayed the"
            " config stream (before that: no responders). Every request carries an identity in"
            f" a header: `{subjects.AUTHORIZATION_HEADER}: Bearer <token>` (the HTTP rules: a"
            " workspace token submits only in its workspace, with the tags open to it), or, for"
            f" a flow's step, `{subjects.FLOW_GRANT_HEADER}`; with neither, or a bad one, the"
            " reply is an `unauthorized` error and no job is queued. A router answers within"
            " 10 s: queued, refused (nothing queued), or `outcome_unknown` with the job's `id`"
            " (it may still run). Use a request timeout of 15 s or more, and an"
            f" `{idempotency.HEADER}` to retry safely after a timeout.",
            ["JobSubmit"], None),
        "routerSubmitReply": channel(
            None, "Answer to a submission",
            "The requester's reply inbox (dynamic). A reply with `id` is a `SubmitAnswer`, one"
            " with `error` a `SubmitError`.",
            ["SubmitAnswer", "SubmitError"], None),
        "routerJob": channel(
            subjects.JOB_SUBJECT, "Read a job",
            "Core NATS request/reply. Every router subscribes in queue group"
            f" `{subjects.ROUTER_QUEUE_GROUP}`. The reader proves its right in a header: a token"
            f" (`{subjects.AUTHORIZATION_HEADER}`), a flow's grant (its steps) or the job's hold"
            f" key (`{subjects.HOLD_HEADER}`, its holder). With `wait`, the answer comes when the"
            " job ends or after `timeout` seconds (at most 300): use a request timeout a few"
            " seconds longer. Workers read jobs only this way: they may not read"
            f" `{subjects.JOB_EVENTS_STREAM}`.",
            ["JobQuery"], None),
        "routerJobReply": channel(
            None, "Answer to a job read",
            "The requester's reply inbox (dynamic). A reply with `view` is a `JobRecord`, one"
            " with `error` a `SubmitError` (`not_found`, `unauthorized`, `forbidden`).",
            ["JobRecord", "SubmitError"], None),
        "workers": channel(
            f"{kv_workers}.{{user}}.{{worker}}.{{nonce}}", "Worker heartbeats",
            f"KV bucket `{subjects.WORKERS_BUCKET}` (stream `KV_{subjects.WORKERS_BUCKET}`, TTL"
            " 15 s, history 1): each live worker's entry, written every 5 s or sooner, under"
            " `heartbeat_key(NATS user, worker id, nonce)`: a worker may write its own key only."
            " A worker serves a tag when `state` is `ready` and `tags` holds the tag.",
            ["WorkerStatus"], f"KV_{subjects.WORKERS_BUCKET}",
            user=param("token(the worker's NATS user)",
                       [enc(u) for u in ("worker:default", "worker-tags:a,b")]),
            worker=param("token(worker id)",
                         [subjects.worker_key(w) for w in ("default-vm-23067-3514",
                                                           "my.worker_1")]),
            nonce=param("`heartbeat_nonce` of the inbox token of the worker's control connection"
                        " (a one-way function: the key is listed, the token stays secret)",
                        ["9f2c41d07a3b5e6811c02d4a"])),
        "cancels": channel(
            f"{kv_cancels}.{{jobId}}", "Cancellation requests",
            f"KV bucket `{subjects.CANCELS_BUCKET}` (stream `KV_{subjects.CANCELS_BUCKET}`, TTL"
            " `GETOPERATE_JOB_HISTORY_SECONDS`, history 1): a key asks for that job to be"
            " cancelled. Every worker watches the whole bucket.",
            ["CancelRequest"], f"KV_{subjects.CANCELS_BUCKET}", jobId=job_id),
        "cancelledQueued": channel(
            f"{kv_cancels}.{subjects.CANCELLED_QUEUED}.{{tag}}.{{jobId}}",
            "Cancelled jobs still on their queue",
            f"Keys `{subjects.CANCELLED_QUEUED}.<token(tag)>.<token(job id)>` of bucket"
            f" `{subjects.CANCELS_BUCKET}`: a job cancelled while it waited stays on its tag's queue until"
            " a worker of the tag drops it (no service deletes queued messages); the mark keeps it"
            " out of waiting counts (metrics, the Workers page) meanwhile. A worker may delete"
            " the marks of its own tags only.",
            ["CancelledQueuedMark"], f"KV_{subjects.CANCELS_BUCKET}", tag=tag, jobId=job_id),
        "snapshots": channel(
            f"$O.{subjects.SNAPSHOT_BUCKET}.C.{{chunk}}", "Config snapshot (object store)",
            f"Object store `{subjects.SNAPSHOT_BUCKET}` (stream `OBJ_{subjects.SNAPSHOT_BUCKET}`): one object,"
            f" `{subjects.SNAPSHOT_NAME}`, written by the config service only. A router starts from it once"
            " its signature verifies, then follows the config stream from its `stream_seq + 1`.",
            ["ConfigSnapshot"], f"OBJ_{subjects.SNAPSHOT_BUCKET}", chunk={
                "description": "the chunk's NUID, chosen by the object-store client"}),
    }
    return channels


# (service, action, channel, messages, summary[, reply channel, reply messages]):
# `send`/`receive` are from the point of view of the service named first.
_CONFIG_CHANNELS = ("configGroup", "configScript", "configFlow", "configTags", "configTokens")
_OPERATIONS: list[tuple[Any, ...]] = [
    *[("config", "send", c, ["recorded"], "publish config records (outbox, exact stored bytes)")
      for c in _CONFIG_CHANNELS],
    ("config", "send", "snapshots", ["configSnapshot"],
     "store the folded state at start-up and every `GETOPERATE_SNAPSHOT_EVERY` events"),
    *[("router", "receive", c, ["recorded"], "follow the config log to route jobs")
      for c in _CONFIG_CHANNELS],
    ("router", "receive", "snapshots", ["configSnapshot"], "start from the latest snapshot"),
    ("router", "receive", "routerSubmit", ["jobSubmit"],
     "validate and route a submission, queue it, then answer",
     "routerSubmitReply", ["submitAnswer", "submitError"]),
    ("router", "send", "jobQueue", ["job"], "queue a routed job (after its `job.queued`)"),
    ("router", "send", "jobEvents", ["jobQueued", "jobFinished"],
     "`job.queued`; `job.finished` when the job was not stored or was cancelled while queued"),
    ("router", "receive", "jobEvents", ["jobQueued", "jobStarted", "jobFinished"],
     "fold job views (`GET /jobs`, cancel)"),
    ("router", "receive", "workers", ["workerStatus"], "list live workers"),
    ("router", "send", "cancels", ["cancelRequest"], "`POST /jobs/{id}/cancel`"),
    ("router", "send", "cancelledQueued", ["cancelledQueuedMark"],
     "mark a job cancelled while it waited (out of waiting counts until it is dropped)"),
    ("worker", "receive", "configGroup", ["recorded"], "replay then follow its group (hot reload)"),
    ("router", "send", "jobWake", ["wakeUp"], "after each enqueue: wake the tag's workers"),
    ("worker", "receive", "jobWake", ["wakeUp"],
     "a plain subscription per tag it listens to: pull at once"),
    ("worker", "send", "jobPull", ["pullRequest"], "ask for one job when a slot is free",
     "jobPullReply", ["job", "pullNoJob"]),
    ("worker", "send", "jobEvents", ["jobStarted", "jobFinished"],
     "`job.started` before running, `job.finished` before acking the queue message"),
    ("router", "receive", "routerJob", ["jobQuery"],
     "read a job for a token, a flow's grant or the job's holder, then answer",
     "routerJobReply", ["jobRecord", "submitError"]),
    ("worker", "send", "routerJob", ["jobQuery"],
     "a flow waits for each step (its grant); a redelivery or a dead letter reads its own"
     " job's history (its hold key)", "routerJobReply", ["jobRecord", "submitError"]),
    ("worker", "send", "deadLetters", ["deadLetter"],
     "park a job delivered more than `GETOPERATE_MAX_DELIVER` times"),
    ("worker", "send", "routerSubmit", ["jobSubmit"], "a flow submits each step as its own job",
     "routerSubmitReply", ["submitAnswer", "submitError"]),
    ("worker", "send", "workers", ["workerStatus"], "heartbeat; delete the key on shutdown"),
    ("worker", "send", "cancelledQueued", ["cancelledQueuedMark"],
     "delete the mark of a cancelled job it dropped (its own tags' marks only)"),
    ("worker", "receive", "cancels", ["cancelRequest"],
     "watch the whole bucket: kill a running job (or a flow's step, when its flow is"
     " cancelled), skip a later one"),
    ("client", "send", "routerSubmit", ["jobSubmit"], "submit a job",
     "routerSubmitReply", ["submitAnswer", "submitError"]),
    ("client", "send", "routerJob", ["jobQuery"], "read or wait for a job (with its token)",
     "routerJobReply", ["jobRecord", "submitError"]),
    ("admin", "receive", "jobEvents", ["jobQueued", "jobStarted", "jobFinished"],
     "wait for a job: an ordered consumer on its subject, until the first `job.finished`"
     " (integrators, with the `client` user, ask a router: `go.router.job` or"
     " `GET /jobs/{id}?wait=1`, which apply their token's workspace)"),
    ("admin", "receive", "deadLetters", ["deadLetter"], "inspect parked jobs"),
]


def _operations() -> dict[str, dict[str, Any]]:
    """Operation ids are `<service><Action><Channel>`: unique, and readable in any viewer."""
    ops: dict[str, dict[str, Any]] = {}
    for service, action, chan, messages, summary, *reply in _OPERATIONS:
        op: dict[str, Any] = {
            "action": action, "channel": {"$ref": f"#/channels/{chan}"}, "summary": summary,
            "tags": [{"name": service}],
            "messages": [{"$ref": f"#/channels/{chan}/messages/{m}"} for m in messages],
        }
        if reply:
            reply_chan, reply_messages = reply
            op["reply"] = {"channel": {"$ref": f"#/channels/{reply_chan}"}, "messages": [
                {"$ref": f"#/channels/{reply_chan}/messages/{m}"} for m in reply_messages]}
        if service == "router" and chan in ("routerSubmit", "routerJob"):
            op["bindings"] = {"nats": {"queue": subjects.ROUTER_QUEUE_GROUP,
                                       "bindingVersion": "0.1.0"}}
        ops[f"{service}{action.title()}{chan[0].upper()}{chan[1:]}"] = op
    return ops


def _asyncapi_schema(node: Any) -> Any:
    """msgspec writes OpenAPI's `discriminator` object; AsyncAPI's Schema Object wants the bare
    property name, so keep only that (the `enum` on `type` already tells the variants). Tuple
    defaults become lists, so the document equals its own JSON. Descriptions taken from
    docstrings are dedented here, because msgspec dedents them only from 0.23 on: the document
    must not depend on the msgspec version installed."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "discriminator" and isinstance(v, dict):
                out[k] = v["propertyName"]
            elif k == "description" and isinstance(v, str):
                out[k] = inspect.cleandoc(v)
            else:
                out[k] = _asyncapi_schema(v)
        return out
    if isinstance(node, (list, tuple)):
        return [_asyncapi_schema(v) for v in node]
    return node


PAYLOAD_TYPES: dict[str, Any] = {
    "Recorded": Recorded, "Job": Job, "JobSubmit": JobSubmit, "SubmitAnswer": SubmitAnswer,
    "SubmitError": SubmitError, "JobQueued": JobQueued, "JobStarted": JobStarted,
    "JobFinished": JobFinished, "DeadLetter": DeadLetter, "WorkerStatus": WorkerStatus,
    "ConfigState": ConfigState, "SignedSnapshot": SignedSnapshot, "PullRequest": PullRequest,
    "JobQuery": JobQuery, "JobRecord": JobRecord,
}


def document() -> dict[str, Any]:
    """The whole AsyncAPI 3.0.0 document, as plain JSON-ready data."""
    refs, components = msgspec.json.schema_components(list(PAYLOAD_TYPES.values()),
                                                      ref_template=REF)
    schema = dict(zip(PAYLOAD_TYPES, refs))
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": (
                "Every NATS subject, stream, KV bucket and message of the getoperate suite, for"
                " programs that speak only NATS. It describes the suite as a whole, not one"
                " application: each operation is tagged with the service that performs it, and"
                " `send`/`receive` are from that service's point of view. Payloads are compact"
                " UTF-8 JSON written by msgspec unless a message says otherwise; decoders must"
                " ignore unknown fields (fields are only ever added, with a default). Channels"
                " on a JetStream stream name it in `x-stream`. docs/nats.md is the prose"
                " version. Generated by shared/asyncapi.py: regenerate with"
                " `getoperate asyncapi --output docs/asyncapi.json`."),
            "tags": [
                {"name": "config", "description": "the config service: owns the config event log"},
                {"name": "router", "description": "routes submissions to tag queues"},
                {"name": "worker", "description": "runs jobs from the tags it listens to"},
                {"name": "client", "description": "any program of yours"},
            ],
        },
        "defaultContentType": "application/json",
        "servers": {"local": {
            "host": SERVER_HOST, "protocol": "nats",
            "description": f"`NATS_URL`'s default, `nats://{SERVER_HOST}` (JetStream enabled);"
                           " `getoperate up` runs it with one NATS user per role.",
        }},
        "channels": _channels(),
        "operations": _operations(),
        "components": {
            "schemas": _asyncapi_schema(components),
            "messages": _messages(schema),
        },
    }


def render() -> str:
    """docs/asyncapi.json's exact text: sorted keys and a final newline keep diffs stable."""
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"
