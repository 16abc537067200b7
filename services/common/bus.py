"""NATS/JetStream plumbing every service uses: connect, declare streams, replay-then-follow."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, Awaitable, Callable

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import (
    APIError,
    BadRequestError,
    BucketNotFoundError,
    NotFoundError,
    ObjectNotFoundError,
)
from nats.js.kv import KeyValue

from shared import subjects
from services.common.log import Logger
from services.common.streamreads import Follow, client_of
from services.common.natsauth import connection_options, credentials_for
from services.common.natsserver import store_bytes
from shared.errors import GetOperateError
from shared.idempotency import DUPLICATE_WINDOW

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
# Seconds without an in-progress ack before JetStream redelivers a job (a worker died).
JOB_ACK_WAIT = float(os.environ.get("GETOPERATE_ACK_WAIT", "30"))
# Deliveries after which a job that keeps losing its worker goes to the dead-letter stream.
MAX_DELIVER = int(os.environ.get("GETOPERATE_MAX_DELIVER", "5"))
WORKER_TTL = 15.0
API_PREFIX = "$JS.API"


async def connect(url: str, name: str, log: Logger, *, attempts: int = 120,
                  role: str = "admin", declare: dict[str, str] | None = None,
                  credentials: tuple[str | None, str | None] | None = None) -> NATS:
    """Connect as NATS user `role`, retrying while NATS starts (compose starts services in any
    order); reconnect forever. The connection declares a random inbox prefix of its own (and
    `declare`, as `key=value` words of its name) for the authority (services/config/authority.py),
    which lets it read replies under that prefix only."""

    async def disconnected() -> None:
        log.warning("nats_disconnected")

    async def reconnected() -> None:
        log.info("nats_reconnected")

    async def error_cb(exc: Exception) -> None:
        log.warning("nats_error", error=str(exc) or type(exc).__name__)

    user, password = credentials if credentials is not None else credentials_for(role)
    auth = {"user": user, "password": password} if user else {}
    options = connection_options(name, user, **(declare or {}))
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return await nats.connect(
                servers(url), **options, **auth, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                connect_timeout=2, disconnected_cb=disconnected, reconnected_cb=reconnected,
                error_cb=error_cb, allow_reconnect=True,
            )
        except Exception as exc:  # nats raises several unrelated types here
            last = exc
            if attempt % 10 == 0:
                log.warning("nats_connect_retry", url=url, error=str(exc) or type(exc).__name__)
            await asyncio.sleep(0.5)
    raise ConnectionError(f"could not connect to NATS at {url}: {last}")


async def publish(js: JetStreamContext, subject: str, body: bytes, msg_id: str,
                  within: float = 20.0, expect_last: int | None = None,
                  headers: dict[str, str] | None = None) -> Any:
    """A JetStream publish retried while the stream has no leader (a node died, an election is
    under way) or NATS is reconnecting. Safe because `Nats-Msg-Id` makes a repeat a no-op. A
    refusal for storage (`storage_full`) or a bad request is raised at once: retrying for
    seconds would turn a clear answer into a timeout."""
    delay, deadline = 0.1, time.monotonic() + within
    while True:
        try:
            sent = {**(headers or {}), "Nats-Msg-Id": msg_id}
            if expect_last is not None:
                sent["Nats-Expected-Last-Subject-Sequence"] = str(expect_last)
            return await js.publish(subject, body, timeout=5.0, headers=sent)
        except (asyncio.TimeoutError, nats.errors.Error) as exc:
            if (time.monotonic() + delay > deadline or isinstance(exc, BadRequestError)
                    or storage_full(exc)):
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


# JetStream's answers when it cannot store a message: the stream is at its max_bytes or
# max_msgs with discard=new (10077 "maximum bytes exceeded"), the server's store is used up
# (10023 "insufficient resources"), or it cannot reserve a stream's limits (10047).
STORAGE_ERRORS = frozenset({10023, 10047, 10077})
# JetStream's answer to a write whose Nats-Expected-Last-(Subject-)Sequence no longer holds:
# someone wrote after the sequence the writer expected (conditional appends: the config outbox,
# job events).
WRONG_LAST_SEQUENCE = 10071


def storage_full(exc: BaseException) -> bool:
    """Whether `exc` is JetStream refusing a write for want of storage (not a timeout: the
    server answered, so the message was not stored)."""
    return isinstance(exc, APIError) and exc.err_code in STORAGE_ERRORS


def servers(url: str) -> list[str]:
    """NATS_URL may list several servers of a cluster, comma-separated."""
    return [part.strip() for part in url.split(",") if part.strip()]


def replicas() -> int:
    """Stream and bucket replicas: 1 on one server; 3 on a 3-node cluster (GETOPERATE_REPLICAS)."""
    return int(os.environ.get("GETOPERATE_REPLICAS", "1"))


def job_events_max_age() -> float:
    """Retention of job lifecycle events, from GETOPERATE_JOB_HISTORY_SECONDS (default 7 days)."""
    return float(os.environ.get("GETOPERATE_JOB_HISTORY_SECONDS", 7 * 24 * 3600))


# Each stream's share of the store budget (natsserver.store_bytes), as its `max_bytes`, and what
# happens when it is reached. 90% in all: consumers' state and the cluster's metadata need the
# rest. JetStream reserves every stream's max_bytes against the server's max_file_store, so the
# streams can never together outgrow it (docs/production.md, "When the disk fills").
STREAM_SHARES: dict[str, tuple[float, api.DiscardPolicy]] = {
    # The audit history is never trimmed: when full, config writes are refused (they stay in
    # the config service's SQLite log, and its outbox publishes them once there is room).
    subjects.CONFIG_STREAM: (0.10, api.DiscardPolicy.NEW),
    # The backlog: when full, submissions are refused at once with storage_full (HTTP 507).
    subjects.JOBS_STREAM: (0.20, api.DiscardPolicy.NEW),
    # Job history: when full, the oldest events go first (before their max age), so results of
    # new jobs can always be stored.
    subjects.JOB_EVENTS_STREAM: (0.50, api.DiscardPolicy.OLD),
    subjects.DEAD_STREAM: (0.05, api.DiscardPolicy.OLD),
    f"KV_{subjects.WORKERS_BUCKET}": (0.01, api.DiscardPolicy.NEW),
    # Cancellations: the oldest go first (their jobs ended long ago), so no flood of cancels can
    # keep a cancel from being stored.
    f"KV_{subjects.CANCELS_BUCKET}": (0.02, api.DiscardPolicy.OLD),
    f"OBJ_{subjects.SNAPSHOT_BUCKET}": (0.02, api.DiscardPolicy.NEW),
}


def max_bytes(stream: str) -> int:
    """A stream's byte limit: its share of the store budget; -1 (none) with a budget of 0."""
    budget = store_bytes()
    return int(budget * STREAM_SHARES[stream][0]) if budget else -1


def _stream(name: str, subject: str, retention: api.RetentionPolicy,
            **extra: Any) -> api.StreamConfig:
    return api.StreamConfig(
        name=name, subjects=[subject], retention=retention, storage=api.StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW, num_replicas=replicas(), max_bytes=max_bytes(name),
        discard=STREAM_SHARES[name][1], **extra)


def stream_configs() -> list[api.StreamConfig]:
    """Every stream of the suite, declared identically by every service so start order is free."""
    return [
        _stream(subjects.CONFIG_STREAM, subjects.CONFIG_SUBJECTS, api.RetentionPolicy.LIMITS,
                deny_delete=False),
        _stream(subjects.JOBS_STREAM, subjects.JOBS_SUBJECTS, api.RetentionPolicy.WORK_QUEUE),
        _stream(subjects.JOB_EVENTS_STREAM, subjects.JOB_EVENTS_SUBJECTS,
                api.RetentionPolicy.LIMITS, max_age=job_events_max_age()),
        _stream(subjects.DEAD_STREAM, subjects.DEAD_SUBJECTS, api.RetentionPolicy.LIMITS,
                max_age=job_events_max_age()),
    ]


class StoreTooSmall(GetOperateError):
    """Raised when nats-server cannot reserve the streams' max_bytes: its max_file_store is
    smaller than GETOPERATE_STORE_BYTES (or already reserved by other streams)."""


async def ensure_streams(js: JetStreamContext) -> None:
    """Create the streams and the workers bucket if missing (idempotent)."""
    try:
        for cfg in stream_configs():
            # Update first: nats-server checks an add against the free budget before it looks
            # for the stream, so re-adding a stream that reserves a large share fails (10047).
            try:
                await js.update_stream(cfg)
            except NotFoundError:
                await js.add_stream(cfg)
        await workers_bucket(js)
        await cancels_bucket(js)
        for name in (f"KV_{subjects.WORKERS_BUCKET}", f"KV_{subjects.CANCELS_BUCKET}"):
            await _limit_bucket(js, name)
    except APIError as exc:
        if not storage_full(exc):
            raise
        raise StoreTooSmall(
            f"nats-server cannot reserve the streams' limits ({exc.description}): their"
            f" max_bytes are shares of GETOPERATE_STORE_BYTES={store_bytes()}; set it to at most"
            " the max_file_store of nats-server's jetstream block (or 0 for no limits)",
            field="GETOPERATE_STORE_BYTES") from exc


async def _limit_bucket(js: JetStreamContext, stream: str) -> None:
    """A bucket's stream gets its share and discard policy (nats-py creates buckets with
    discard new and cannot set it), also when it was created before there were limits, and no
    rollups: nats-py allows `Nats-Rollup` headers on a bucket, and a worker, which may write
    its own heartbeat and its tags' cancelled-queued marks, purged the whole bucket with one
    (every cancel request gone: a cancelled job ran). Nothing here purges a key."""
    cfg = (await js.stream_info(stream)).config
    limit, discard = max_bytes(stream), STREAM_SHARES[stream][1]
    if (cfg.max_bytes, cfg.discard, bool(cfg.allow_rollup_hdrs)) != (limit, discard, False):
        cfg.max_bytes, cfg.discard, cfg.allow_rollup_hdrs = limit, discard, False
        await js.update_stream(cfg)


async def wait_streams(nc: NATS, log: Logger, timeout: float = 120.0) -> None:
    """For roles that may not create streams (routers, workers): wait until the config service
    has declared them. By their names only (`$JS.API.STREAM.NAMES`): a stream's info lists its
    subjects (every job id, every group name), which a worker may not read."""
    wanted = {c.name for c in stream_configs()} | {f"KV_{subjects.WORKERS_BUCKET}",
                                                   f"KV_{subjects.CANCELS_BUCKET}"}
    deadline = time.monotonic() + timeout
    while True:
        reply = await nc.request(f"{API_PREFIX}.STREAM.NAMES", b"{}", timeout=5.0)
        body = json.loads(reply.data)
        if "error" in body:
            raise BadRequestError(description=str(body["error"]))
        missing = wanted - set(body.get("streams") or ())
        if not missing:
            return
        if time.monotonic() > deadline:
            raise NotFoundError(description=f"streams never declared: {sorted(missing)}")
        log.info("waiting_for_stream", stream=sorted(missing)[0])
        await asyncio.sleep(0.5)


async def cancels_bucket(js: JetStreamContext) -> KeyValue:
    """Cancellation requests by job id; workers watch it and kill the job if they run it."""
    try:
        return await js.key_value(subjects.CANCELS_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(api.KeyValueConfig(
            bucket=subjects.CANCELS_BUCKET, history=1, ttl=job_events_max_age(),
            storage=api.StorageType.FILE, replicas=replicas(),
            max_bytes=max_bytes(f"KV_{subjects.CANCELS_BUCKET}")))


async def workers_bucket(js: JetStreamContext) -> KeyValue:
    """Live workers: heartbeats expire after WORKER_TTL seconds without a refresh."""
    try:
        return await js.key_value(subjects.WORKERS_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            api.KeyValueConfig(
                # File storage: a memory bucket vanishes when nats-server restarts, and workers
                # may not recreate it.
                bucket=subjects.WORKERS_BUCKET, history=1, ttl=WORKER_TTL,
                storage=api.StorageType.FILE, replicas=replicas(),
                max_bytes=max_bytes(f"KV_{subjects.WORKERS_BUCKET}"),
            )
        )




async def _snapshot_store(js: JetStreamContext, *, create: bool) -> Any:
    try:
        return await js.object_store(subjects.SNAPSHOT_BUCKET)
    except BucketNotFoundError:
        if not create:
            raise
        return await js.create_object_store(
            subjects.SNAPSHOT_BUCKET, config=api.ObjectStoreConfig(
                bucket=subjects.SNAPSHOT_BUCKET, replicas=replicas(),
                max_bytes=max_bytes(f"OBJ_{subjects.SNAPSHOT_BUCKET}")))


async def put_snapshot(js: JetStreamContext, body: bytes) -> None:
    """The latest signed snapshot (shared/snapshots.py), for services that start from it. Only
    the config service writes it (and creates the object store): routers read."""
    await (await _snapshot_store(js, create=True)).put(subjects.SNAPSHOT_NAME, body)


async def get_snapshot(js: JetStreamContext) -> bytes | None:
    """The snapshot's bytes as stored, unchecked (the reader verifies them); None if there is
    none. Any other failure (NATS away, a denied read, a corrupt object) is raised: the caller
    decides, and says, what it does without it."""
    try:
        result = await (await _snapshot_store(js, create=False)).get(subjects.SNAPSHOT_NAME)
    except (BucketNotFoundError, ObjectNotFoundError):
        return None
    return bytes(result.data) if result.data else None


async def ensure_tag_consumer(js: JetStreamContext, tag: str) -> str:
    """The durable pull consumer of a tag, shared by every worker listening to it."""
    name = subjects.tag_consumer(tag)
    cfg = api.ConsumerConfig(
        durable_name=name, filter_subject=subjects.job_subject(tag),
        ack_policy=api.AckPolicy.EXPLICIT, deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=JOB_ACK_WAIT, max_ack_pending=10_000,
    )
    await js.add_consumer(subjects.JOBS_STREAM, cfg)
    return name


async def last_sequence(js: JetStreamContext, stream: str, subject: str | None = None) -> int:
    """Stream sequence of the newest message (on `subject` when given); 0 when there is none."""
    if subject is None or subject.endswith(">"):
        info = await js.stream_info(stream)
        return int(info.state.last_seq)
    try:
        msg = await js.get_last_msg(stream, subject)
    except NotFoundError:
        return 0
    return int(msg.seq or 0)


# Seconds between the server's idle heartbeats to a follower: two missed ones make nats-py
# recreate the consumer (a NATS restart, a config stream deleted and rebuilt by the config
# service), so a router resumes following within a few seconds. One small message each.
FOLLOW_HEARTBEAT = 2.0


async def follow(
    js: JetStreamContext,
    stream: str,
    subject: str,
    handler: Callable[[Msg], Awaitable[None]],
    caught_up: asyncio.Event,
    start_seq: int = 1,
) -> JetStreamContext.PushSubscription:
    """Replay every message on `subject` from the start, then keep delivering new ones.

    `caught_up` is set once the messages that existed at the call have all been handled, so a
    service can wait for a complete view before serving.
    """
    target = await last_sequence(js, stream, subject)
    if target < start_seq:
        caught_up.set()

    async def on_msg(msg: Msg) -> None:
        await handler(msg)
        if not caught_up.is_set() and msg.metadata.sequence.stream >= target:
            caught_up.set()

    if start_seq <= 1:
        return await js.subscribe(
            subject, stream=stream, cb=on_msg, ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.ALL, idle_heartbeat=FOLLOW_HEARTBEAT,
        )
    return await js.subscribe(
        subject, stream=stream, cb=on_msg, ordered_consumer=True, idle_heartbeat=FOLLOW_HEARTBEAT,
        config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                  opt_start_seq=start_seq),
    )


async def follow_pulled(js: JetStreamContext, stream: str, subject: str,
                        handler: Callable[[Msg], Awaitable[None]], caught_up: asyncio.Event,
                        log: Logger) -> Follow:
    """Replay every message on `subject`, then keep delivering, through a pull consumer created
    by name with the subject in the API request's own subject.

    Why not an ordered push consumer (`follow`): nats-server checks permissions on the request
    subject only, and an ordered consumer's create request (`CONSUMER.CREATE.<stream>`) carries
    its filter in the body, so whoever may follow one subject may follow them all. A worker may
    create consumers only with its group's subject in the request subject (permissions.py), so
    it reads no other group's config (static variables included). No acks; after a gap or a
    lost consumer (a NATS restart) it goes on from the next stream sequence, so no event is
    missed or folded twice (services/common/streamreads.py)."""
    follow = Follow(client_of(js), stream, subject, handler, log, caught_up=caught_up,
                    name=f"follow {subject}", named=True)
    follow.start()
    return follow
