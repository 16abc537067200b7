"""The group's config: replay its events from GO_CONFIG, then follow live ones, folded in order.

A worker replays only its group's subject. Each message passes the gate of shared/admission.py
first: signed by the config service, the next event of this subject (the signed
`Go-Subject-Prev`), its hash intact. Anything else (junk, a forged `group.init_script_set`, a
replayed old event) is logged as `config_event_rejected` and skipped, and the follower goes on;
after a gap it keeps the config as of the last event it could check. An event type this version
does not know is skipped too. Once the replay has caught up, every live change is reported to
`on_change` (the worker applies it in place: hot reload).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common import bus
from services.common.log import Logger
from services.common.signingkeys import load_verifier
from shared import state as st
from shared import subjects
from shared.admission import Gate, Rejected
from shared.signing import Verifier


class ConfigFollower:
    """The folded config of one group (none without a group: WORKER_TAGS only)."""

    def __init__(self, js: JetStreamContext, group: str | None, logger: Logger,
                 on_change: Callable[[], Awaitable[None]], verifier: Verifier | None = None
                 ) -> None:
        self.js = js
        self.group = group
        self.logger = logger
        self.on_change = on_change
        self.state = st.ConfigState()
        self.live = False  # past the replay: report changes
        self._sub: Any = None
        # A worker of a group must check what it folds: no public key, no start. A worker
        # without a group (WORKER_TAGS only) follows nothing and needs none.
        self.gate = (Gate(verifier or load_verifier(), subject=subjects.group_subject(group))
                     if group else None)

    @property
    def group_config(self) -> st.GroupConfig | None:
        return self.state.groups.get(self.group) if self.group else None

    @property
    def version(self) -> int:
        """Sequence of the last record of the group folded; 0 without a group."""
        return self.state.seq if self.group else 0

    async def start(self, timeout: float = 60.0) -> None:
        """Replay the group's events; return once every event stored before the call is folded."""
        if self.group is None:
            return
        caught_up = asyncio.Event()
        self._sub = await bus.follow(self.js, subjects.CONFIG_STREAM,
                                     subjects.group_subject(self.group), self._on_msg, caught_up)
        await asyncio.wait_for(caught_up.wait(), timeout)

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                pass

    async def _on_msg(self, msg: Msg) -> None:
        assert self.gate is not None
        try:
            rec = self.gate.admit(msg.subject, msg.headers, msg.data)
        except Rejected as exc:
            self.logger.warning("config_event_rejected", seq=exc.seq, reason=exc.reason,
                                stream_seq=msg.metadata.sequence.stream, subject=msg.subject,
                                error=exc.message)
            return
        if rec is None:
            self.logger.warning("config_event_unknown_type_skipped", seq=self.gate.seq,
                                stream_seq=msg.metadata.sequence.stream)
            return
        self.state = st.evolve(self.state, rec)
        if self.live:
            await self.on_change()
