"""The authority: nats-server's auth callout, answering who a new connection is and what it may do.

nats-server names one user in its config (`config`, which hosts this); every other connection is
sent here as a signed request (`$SYS.REQ.USER.AUTH`) and gets back a user JWT with its
permissions, signed with the deployment's issuer key (natsauth.issuer). The password of user U
is checked with one HMAC (natsauth.password), so worker credentials can be per group and groups
can be created at any time. Permissions come from services/common/permissions.py; a worker's
depend on the config folded here (its group's tags now), which is why this lives in the config
service: it is the first to know a change.

A connection's `name` carries what it declares about itself, as `key=value` words: `inbox=X`
(required: the prefix `_INBOX.X` of its replies, a random token; it may subscribe to nothing
else of `_INBOX`), and for workers `worker=<id>` (its heartbeat key), `part=jobs|control` (only
a jobs connection may pull and ack its tags' jobs) and `seq=N` (the config sequence it has seen:
the answer waits, a short while, until this service has folded as much).
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections import OrderedDict
from typing import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.common import bus, natsauth, natsjwt, permissions
from services.common.log import Logger
from shared import state as st
from shared import subjects

QUEUE = "authority"
_INBOX_TOKEN = re.compile(r"^[A-Za-z0-9]{8,64}$")
_WORKER_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
INBOX_OWNERS = 100_000  # inbox tokens remembered with their user (about 10 MB at most)
SEQ_WAIT = 1.0  # how long a worker's `seq=N` may hold its connection while the fold catches up
_SEQ = re.compile(r"^[0-9]{1,12}$")


class Refused(Exception):
    """The connection is refused; the message goes to nats-server's log (not to the client)."""


class Authority:
    """Answers nats-server's auth requests for every user but `config`."""

    def __init__(self, nc: NATS, secret: bytes, state: Callable[[], st.ConfigState],
                 logger: Logger) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.secret = secret
        self.key = natsauth.issuer(secret)
        self.state = state
        self.logger = logger
        self._sub: object | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ensured: dict[str, int] = {}  # tag -> config seq its consumer was last ensured at
        # inbox token -> the user that declared it first (the newest INBOX_OWNERS of them)
        self._inbox_owner: OrderedDict[str, str] = OrderedDict()

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(permissions.AUTH_SUBJECT, queue=QUEUE,
                                            cb=self._on_request)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()  # type: ignore[attr-defined]
        for task in list(self._tasks):
            task.cancel()

    async def _on_request(self, msg: Msg) -> None:
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        try:
            request = natsjwt.claims(msg.data.decode())["nats"]
            user_nkey, server = request["user_nkey"], request["server_id"]["id"]
        except (ValueError, KeyError, TypeError) as exc:
            self.logger.warning("nats_auth_request_unreadable", error=str(exc))
            return
        opts = request.get("connect_opts") or {}
        user = str(opts.get("user") or "")
        try:
            perms, what = await self._decide(user, str(opts.get("pass") or ""),
                                             natsauth.declared(str(opts.get("name") or "")))
        except Refused as exc:
            self.logger.warning("nats_connection_refused", user=user[:80], reason=str(exc),
                                host=(request.get("client_info") or {}).get("host"))
            body = {"error": str(exc), "type": "authorization_response", "version": 2}
        else:
            user_jwt = self.key.sign({"sub": user_nkey, "aud": "$G", "name": user,
                                      "nats": {**perms.jwt(), "type": "user", "version": 2}})
            body = {"jwt": user_jwt, "type": "authorization_response", "version": 2}
            self.logger.info("nats_connection_authorized", user=user, **what)
        await msg.respond(self.key.sign({"sub": user_nkey, "aud": server, "nats": body}).encode())

    async def _decide(self, user: str, password: str,
                      names: dict[str, str]) -> tuple[permissions.Perms, dict[str, object]]:
        if not user or not hmac.compare_digest(password.encode(),
                                               natsauth.password(self.secret, user).encode()):
            raise Refused("unknown user or wrong password")
        inbox_token = names.get("inbox", "")
        if user == "admin" and not inbox_token:
            return permissions.static("admin"), {}
        if not _INBOX_TOKEN.match(inbox_token):
            raise Refused("the connection name must declare its inbox prefix: `inbox=X` with X"
                          " 8 to 64 letters or digits, and the client must use `_INBOX.X`")
        self._claim_inbox(inbox_token, user)
        inbox = f"_INBOX.{inbox_token}"
        if user in natsauth.ROLES:
            if user == natsauth.AUTH_USER:
                raise Refused("the config user is not authorized here")
            return permissions.static(user, inbox=inbox), {}
        tags = await self._worker_tags(user, names)
        worker_id = names.get("worker", "")
        if not _WORKER_ID.match(worker_id):
            raise Refused("a worker's connection name must declare `worker=<id>`")
        jobs = names.get("part", "jobs") == "jobs"
        if jobs:
            await self._ensure_consumers(tags)
        group = (natsauth.worker_scope(user) or (None, None))[0]
        return (permissions.worker(tags, subjects.heartbeat_key(user, worker_id,
                                                         subjects.heartbeat_nonce(inbox_token)),
                                   inbox, group=group, jobs=jobs),
                {"tags": len(tags), "part": "jobs" if jobs else "control"})

    def _claim_inbox(self, token: str, user: str) -> None:
        """An inbox token belongs to the user that declared it first: a connection of another
        user (another group's worker) that learnt it may not declare it to read its replies.
        A reconnect, which declares the same token with the same user, is let through."""
        owner = self._inbox_owner.get(token)
        if owner is not None and owner != user:
            raise Refused("this inbox token is another user's: declare one of your own")
        self._inbox_owner[token] = user
        self._inbox_owner.move_to_end(token)
        while len(self._inbox_owner) > INBOX_OWNERS:
            self._inbox_owner.popitem(last=False)

    async def _worker_tags(self, user: str, names: dict[str, str]) -> list[str]:
        """The tags a worker's credentials cover now: its group's (dedicated tags included), or
        the fixed list of `worker-tags:` credentials."""
        scope = natsauth.worker_scope(user)
        if scope is None:
            raise Refused("unknown user")
        group_name, fixed = scope
        if fixed is not None:
            if not fixed:
                raise Refused("worker-tags credentials name no tag")
            return list(fixed)
        seen = names.get("seq", "0")
        wanted = int(seen) if _SEQ.match(seen) else 0
        deadline = time.monotonic() + SEQ_WAIT
        while self.state().seq < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        state = self.state()
        group = state.groups.get(group_name or "")
        return list(st.group_tags(state, group)) if group is not None else []

    async def _ensure_consumers(self, tags: list[str]) -> None:
        """Workers may not create the shared tag consumers: they exist before a worker may pull.
        Each tag's is ensured once per config sequence, not per connection (a flood of worker
        connections must not become a flood of JetStream API calls)."""
        seq = self.state().seq
        missing = [t for t in tags if self._ensured.get(t) != seq]
        results = await asyncio.gather(*(bus.ensure_tag_consumer(self.js, t) for t in missing),
                                       return_exceptions=True)
        for tag, result in zip(missing, results):
            if isinstance(result, BaseException):
                self.logger.warning("tag_consumer_not_ensured", tag=tag, error=repr(result))
            else:
                self._ensured[tag] = seq
