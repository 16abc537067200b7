"""`getoperate jobs requeue --tag T --to T2`: move the jobs waiting on a tag nobody serves.

Jobs stay on their tag's queue until a worker of that tag takes them; when the last group that
served a tag stops (a dedicated script dropped, a group's tags changed), they would wait forever.
This moves each waiting job to another tag: the same job (id, arguments, hold key), its body
naming the new tag (workers check that a job names the tag it was taken from), published on the
new tag's queue and then deleted from the old one, one at a time, with the admin's NATS
credentials of the data dir. It refuses while a live worker still takes jobs from the tag (it
could be running one of them), skips jobs already handed to a worker, and moves no job to a tag
closed to its workspace (the rule the router applies, shared/tagaccess.py).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import msgspec
import nats
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from cli.client import EXIT_FAILED, CliError, Endpoints, answer_as, call
from shared import subjects, tagaccess
from shared.codec import decode, encode
from shared.jobs import Job, WorkerStatus
from shared.state import ConfigState, groups_by_tag
from shared.tags import validate_tag


def requeue(ep: Endpoints, tag: str, to: str) -> dict[str, Any]:
    tag, to = validate_tag(tag, field="--tag"), validate_tag(to, field="--to")
    if tag == to:
        raise CliError("--tag and --to name the same tag", EXIT_FAILED)
    token = ep.token()
    workers = answer_as(call("GET", f"{ep.router_url}/workers", token), list[WorkerStatus],
                        "workers")
    # A worker whose init script runs or failed takes no job: it does not hold the tag.
    busy = [w.id for w in workers if tag in w.tags and w.state != "stopping"
            and not w.held_by_init]
    if busy:
        raise CliError(f"{len(busy)} live worker(s) still take jobs from tag {tag!r}"
                       f" ({', '.join(busy[:3])}): stop them or change their group first",
                       EXIT_FAILED)
    state = msgspec.convert(call("GET", f"{ep.config_url}/state", token), ConfigState)
    moved = asyncio.run(_move(ep, state, tag, to))
    moved["serving"] = to in groups_by_tag(state) or any(to in w.tags for w in workers)
    return moved


async def _move(ep: Endpoints, state: ConfigState, tag: str, to: str) -> dict[str, Any]:
    nc = await nats.connect(ep.nats_url.split(","), **ep.nats_auth(), connect_timeout=5,
                            max_reconnect_attempts=3)
    js = nc.jetstream()
    moved: list[str] = []
    refused: list[str] = []
    dropped: list[str] = []  # cancelled while queued: ended already, nothing to move
    try:
        cancels = await js.key_value(subjects.CANCELS_BUCKET)
        taken = 0  # stream sequences up to here were handed to a worker: not ours to move
        try:
            info = await js.consumer_info(subjects.JOBS_STREAM, subjects.tag_consumer(tag))
            taken = info.delivered.stream_seq if info.delivered else 0
        except NotFoundError:
            pass
        in_flight = 0
        seq = 1
        while True:
            try:
                msg = await js.get_msg(subjects.JOBS_STREAM, seq=seq,
                                       subject=subjects.job_subject(tag), next=True)
            except NotFoundError:
                break
            seq = (msg.seq or seq) + 1
            if msg.seq is not None and msg.seq <= taken:
                in_flight += 1
                continue
            job = decode(msg.data or b"", Job)
            if await _cancelled(cancels, job.id):
                await js.delete_msg(subjects.JOBS_STREAM, msg.seq)
                await _forget(cancels, subjects.cancelled_queued_key(tag, job.id))
                dropped.append(job.id)
                continue
            why = tagaccess.closed_reason(state, to, job.workspace)
            if why is not None:
                refused.append(f"{job.id}: {why}")
                continue
            body = encode(msgspec.structs.replace(job, tag=to))
            headers = {k: v for k, v in (msg.headers or {}).items()
                       if not k.startswith("Nats-")}
            headers["Nats-Msg-Id"] = f"{job.id}:requeued:{to}"
            await js.publish(subjects.job_subject(to), body, headers=headers, timeout=10)
            await js.delete_msg(subjects.JOBS_STREAM, msg.seq)  # only once the copy is stored
            moved.append(job.id)
            if len(moved) % 100 == 0:
                print(f"getoperate: {len(moved)} jobs moved...", file=sys.stderr, flush=True)
        if moved:
            await nc.publish(subjects.wake_subject(to), b"")  # its workers look at once
            await nc.flush()
    finally:
        await nc.close()
    return {"from": tag, "to": to, "moved": moved, "refused": refused, "in_flight": in_flight,
            "dropped_cancelled": dropped}


async def _cancelled(cancels: KeyValue, job_id: str) -> bool:
    """Was the job cancelled (GO_CANCELS holds its id)? Such a job ended when it was cancelled;
    the worker that took it would only drop it."""
    try:
        return (await cancels.get(job_id)).value is not None
    except KeyNotFoundError:
        return False


async def _forget(cancels: KeyValue, key: str) -> None:
    """Remove the cancelled-queued mark of a message that is gone (waiting counts leave the
    job out while the mark is there)."""
    try:
        await cancels.delete(key)
    except KeyNotFoundError:
        pass
