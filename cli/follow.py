"""`getoperate events --follow`: stream new config events live from NATS (Ctrl-C stops).

Only events signed by the config service are printed (its public key: GETOPERATE_CONFIG_PUBLIC_KEY
or config-signing.pub in the data dir); anything else on the stream is reported on stderr and
skipped, so nobody who can write to NATS can put a line into an audit trail.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import nats
from nats.js import api

from cli import output
from shared import subjects
from shared.admission import Rejected, check_signed, decode_raw
from shared.codec import to_builtins
from shared.events import decode_known, event_type
from shared.history import summarize
from shared.signing import Verifier


def follow_events(url: str, *, after: int | None, group: str | None, type_: str | None,
                  actor: str | None, as_json: bool, verifier: Verifier,
                  auth: dict[str, str] | None = None) -> int:
    return asyncio.run(_follow(url, after, group, type_, actor, as_json, verifier, auth or {}))


async def _follow(url: str, after: int | None, group: str | None, type_: str | None,
                  actor: str | None, as_json: bool, verifier: Verifier,
                  auth: dict[str, str]) -> int:
    nc = await nats.connect(url.split(","), **auth)
    js = nc.jetstream()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    last = after or 0

    async def on_msg(msg: object) -> None:
        nonlocal last
        data: bytes = msg.data  # type: ignore[attr-defined]
        try:
            raw = decode_raw(data)
            check_signed(raw, msg.subject, msg.headers, data, verifier)  # type: ignore[attr-defined]
        except Rejected as exc:
            print(f"getoperate: skipped stream seq {msg.metadata.sequence.stream}"  # type: ignore[attr-defined]
                  f" ({exc.reason}): {exc.message}", file=sys.stderr, flush=True)
            return
        if raw.seq <= last:  # printed already (or before `after`)
            return
        last = raw.seq
        rec = decode_known(data)
        if rec is None:
            return
        if (type_ and event_type(rec.event) != type_) or (actor and rec.actor != actor):
            return
        if as_json:
            print(json.dumps(to_builtins(rec)), flush=True)
        else:
            print(output.event_line({"seq": rec.seq, "time": rec.time, "actor": rec.actor,
                                     "reason": rec.reason, "type": event_type(rec.event),
                                     "summary": summarize(rec.event)}), flush=True)

    subject = subjects.group_subject(group) if group else subjects.CONFIG_SUBJECTS
    # From the event after `after` (the log's end when the history was read), never from
    # "new": events written between that read and this subscription would be lost.
    cfg = (api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                              opt_start_seq=after + 1) if after is not None else
           api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW))
    sub = await js.subscribe(subject, stream=subjects.CONFIG_STREAM, cb=on_msg,
                             ordered_consumer=True, config=cfg)
    await stop.wait()
    await sub.unsubscribe()
    await nc.close()
    return 0
