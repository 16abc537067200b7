"""Tags a group change leaves with waiting jobs and no group to serve them.

When the last group that served a tag stops (its tags changed, a dedicated script was dropped,
the group was deleted), jobs already queued there would wait for a worker that will not come.
The change is not refused (the operator may mean it), but its answer warns, naming the count
and how to move them (`getoperate jobs requeue`).
"""

from __future__ import annotations

from nats.js import JetStreamContext

from services.common.queues import waiting_per_tag
from shared.state import ConfigState, groups_by_tag


async def stranded(js: JetStreamContext, before: ConfigState, after: ConfigState) -> list[str]:
    """Warnings for tags served before the change, not after, that hold waiting jobs."""
    lost = set(groups_by_tag(before)) - set(groups_by_tag(after))
    if not lost:
        return []
    try:
        queues = await waiting_per_tag(js)
    except Exception as exc:  # the change is stored: a warning we cannot compute is said so
        return [f"tags {', '.join(sorted(lost))} are no longer served by any group; whether"
                f" jobs wait there could not be read ({exc!r})"]
    out = []
    for tag in sorted(lost):
        waiting = queues.get(tag, {}).get("waiting", 0)
        if waiting:
            out.append(f"tag {tag!r} has {waiting} waiting job(s) and no group serves it any"
                       " more: they wait until one does; move them with `getoperate jobs"
                       f" requeue --tag {tag} --to OTHER_TAG`")
    return out
