"""Waiting jobs per tag, read from JetStream consumer info (the metrics and the workers page)."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared import subjects
from shared.errors import InvalidInput


async def waiting_per_tag(js: JetStreamContext) -> dict[str, dict[str, int]]:
    """tag -> {"waiting": jobs no worker has taken, "running": taken and not yet acked}.

    Every tag a worker ever listened to has a durable consumer filtered on its subject; a tag no
    worker ever served has none, and its jobs are counted from the stream's subjects instead.
    """
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
