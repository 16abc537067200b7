"""The group's config: replay its events from GO_CONFIG, then follow live ones, folded in order.

A worker replays only its group's subject, and the assignable tags' (`go.config.tags`, folded
apart: it checks every job's workspace against their restrictions on receipt,
services/worker/attempt.py). Each message passes the gate of shared/admission.py first (one gate
per subject): signed by the config service, the next event of its subject (the signed
`Go-Subject-Prev`), its hash intact. Anything else (junk, a forged `group.init_script_set`, a
replayed old event) is logged as `config_event_rejected` and skipped, and the follower goes on;
after a gap it keeps the config as of the last event it could check. An event type this version
does not know is skipped too. Once the replay has caught up, every live change of the group is
reported to `on_change` (the worker applies it in place: hot reload); tag rules need no reload.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common import bus
from services.common.log import Logger
from services.common.signingkeys import load_verifier
from shared import state as st
from shared import subjects
from shared.admission import Gate, Rejected, Sampled
from shared.events import Recorded
from shared.signing import Verifier


class ConfigFollower:
    """The folded config of one group (none without a group: WORKER_TAGS only), and the
    assignable tags."""

    def __init__(self, js: JetStreamContext, group: str | None, logger: Logger,
                 on_change: Callable[[], Awaitable[None]], verifier: Verifier | None = None
                 ) -> None:
        self.js = js
        self.group = group
        self.logger = logger
        self.on_change = on_change
        self.state = st.ConfigState()
        # The assignable tags, from their own subject: folded apart so that `state.seq` stays
        # the group's version (two subscriptions deliver in no common order).
        self.tags = st.ConfigState()
        self.live = False  # past the replay: report changes
        self._sub: Any = None
        self._tags_sub: Any = None
        self._access: tuple[int, int, st.ConfigState] = (-1, -1, st.ConfigState())
        # A worker must check what it folds: no public key, no start (every worker follows the
        # tag rules, a worker of a group its group's subject too).
        verifier = verifier or load_verifier()
        self.gate = (Gate(verifier, subject=subjects.group_subject(group)) if group else None)
        self.tags_gate = Gate(verifier, subject=subjects.CONFIG_TAGS_SUBJECT)
        self._repeats = Sampled()  # republished copies of folded events: log a few

    @property
    def group_config(self) -> st.GroupConfig | None:
        return self.state.groups.get(self.group) if self.group else None

    @property
    def version(self) -> int:
        """Sequence of the last record of the group folded; 0 without a group."""
        return self.state.seq if self.group else 0

    @property
    def access(self) -> st.ConfigState:
        """What jobs are checked against: the group (its dedicated tags) and the assignable
        tags, as one state for the pure rule (shared/tagaccess.py); rebuilt only on a change."""
        seqs = (self.state.seq, self.tags.seq)
        if self._access[:2] != seqs:
            merged = msgspec.structs.replace(self.state, assignable=self.tags.assignable)
            self._access = (*seqs, merged)
        return self._access[2]

    async def start(self, timeout: float = 60.0) -> None:
        """Replay the group's events and the tag rules; return once every event stored before
        the call is folded (a worker without a group follows the tag rules only)."""
        tags_caught_up = asyncio.Event()
        # Pulled, with the subject in the consumer's create request: the only way the worker's
        # permissions let it read config (services/common/bus.py: follow_pulled).
        self._tags_sub = await bus.follow_pulled(self.js, subjects.CONFIG_STREAM,
                                                 subjects.CONFIG_TAGS_SUBJECT, self._on_tags_msg,
                                                 tags_caught_up, self.logger)
        if self.group is not None:
            caught_up = asyncio.Event()
            self._sub = await bus.follow_pulled(self.js, subjects.CONFIG_STREAM,
                                                subjects.group_subject(self.group), self._on_msg,
                                                caught_up, self.logger)
            await asyncio.wait_for(caught_up.wait(), timeout)
        await asyncio.wait_for(tags_caught_up.wait(), timeout)

    async def stop(self) -> None:
        for sub in (self._sub, self._tags_sub):
            if sub is not None:
                await sub.stop()

    async def _on_msg(self, msg: Msg) -> None:
        assert self.gate is not None
        rec = self._admit(self.gate, msg)
        if rec is None:
            return
        self.state = st.evolve(self.state, rec)
        if self.live:
            await self.on_change()

    async def _on_tags_msg(self, msg: Msg) -> None:
        rec = self._admit(self.tags_gate, msg)
        if rec is not None:
            self.tags = st.evolve(self.tags, rec)

    def _admit(self, gate: Gate, msg: Msg) -> Recorded | None:
        """The record to fold, or None (logged) when the gate rejects it or its type is unknown."""
        try:
            rec = gate.admit(msg.subject, msg.headers, msg.data)
        except Rejected as exc:
            if exc.reason == "repeat" and not self._repeats.worth_logging():
                return None  # a republished log (the config service repairing its stream)
            self.logger.warning("config_event_rejected", seq=exc.seq, reason=exc.reason,
                                stream_seq=msg.metadata.sequence.stream, subject=msg.subject,
                                error=exc.message)
            return None
        if rec is None:
            self.logger.warning("config_event_unknown_type_skipped", seq=gate.seq,
                                stream_seq=msg.metadata.sequence.stream)
        return rec
