"""Waiting jobs per tag, read from JetStream consumer info (the metrics and the workers page)."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.subjects import CANCELS_BUCKET
from services.common.streamreads import client_of, read_all
from shared import subjects
from shared.errors import InvalidInput


async def waiting_per_tag(js: JetStreamContext) -> dict[str, dict[str, int]]:
    """tag -> {"waiting": jobs no worker has taken, "running": taken and not yet acked,
    "cancelled": jobs cancelled while they waited, still on the queue (not in "waiting")}.

    Every tag a worker ever listened to has a durable consumer filtered on its subject; a tag no
    worker ever served has none, and its jobs are counted from the stream's subjects instead.
    A job cancelled while it waits stays on its queue until a worker of its tag drops it (no
    service may delete a queued message): its router marks it in GO_CANCELS, and the marks are
    taken off the waiting count.
    """
    out = await _queued(js)
    for tag, cancelled in (await _cancelled_marks(js)).items():
        counts = out.get(tag)
        if counts is not None:
            counts["cancelled"] = min(cancelled, counts["waiting"])
            counts["waiting"] -= counts["cancelled"]
    return out


async def _cancelled_marks(js: JetStreamContext) -> dict[str, int]:
    """tag -> marks of cancelled jobs still queued (GO_CANCELS keys `queued.<tag>.<job>`)."""
    marks: dict[str, int] = {}
    # Only the marks' subjects (the bucket also holds every cancel request), headers only, the
    # last message of each key, read with our own pulls: workers write (delete) marks, so a
    # mark's headers are a worker's to choose (services/common/streamreads.py).
    prefix = f"$KV.{CANCELS_BUCKET}."
    try:
        found = await read_all(client_of(js), f"KV_{CANCELS_BUCKET}",
                               f"{prefix}{subjects.CANCELLED_QUEUED}.>", last_per_subject=True,
                               headers_only=True)
    except NotFoundError:
        return marks
    keys = [m.subject[len(prefix):] for m in found
            if (m.headers or {}).get("KV-Operation") not in ("DEL", "PURGE")]
    for key in keys:
        if key.count(".") != 2:
            continue
        _, token, _ = key.split(".", 2)
        try:
            tag = subjects.decode_token(token)
        except InvalidInput:
            continue
        marks[tag] = marks.get(tag, 0) + 1
    return marks


async def _queued(js: JetStreamContext) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    consumers = []
    try:
        while True:  # the server answers at most 256 consumers per request
            page = await js.consumers_info(subjects.JOBS_STREAM, offset=len(consumers))
            consumers += page
            if len(page) < 256:
                break
    except NotFoundError:
        return out
    for info in consumers:
        subject = info.config.filter_subject or ""
        try:
            tag = subjects.tag_of_subject(subject)
        except InvalidInput:
            continue
        out[tag] = {"waiting": int(info.num_pending or 0), "running": int(info.num_ack_pending or 0)}
    try:
        stream = await js.stream_info(subjects.JOBS_STREAM, subjects_filter=subjects.JOBS_SUBJECTS)
    except NotFoundError:
        return out
    for subject, count in (stream.state.subjects or {}).items():
        try:
            tag = subjects.tag_of_subject(subject)
        except InvalidInput:
            continue
        if tag not in out:
            out[tag] = {"waiting": int(count), "running": 0}
    return out
