"""What each NATS role may publish and subscribe to: the one source of the permission table.

nats-server's config (the `config` user, which the auth callout does not cover), the permissions
the authority (services/common/authority.py) issues to every other connection, and the table in
docs/security.md are all generated from here; tests/unit/test_permissions_table.py keeps the
three equal. Every role has an allow list for publish and for subscribe: nothing is allowed by
default. Deny lists are on top, for what an allow pattern would otherwise cover.

Inboxes are per connection: a connection declares a random inbox prefix (`_INBOX.<X>`, see
bus.connect) and may subscribe to `_INBOX.<X>.>` only, so nobody reads another connection's
replies (a worker's pulled jobs, a router's answers). The `config` user's static permissions
cannot name a random prefix: it uses `_INBOX.config.<X>`, which no other role can be granted
(a declared X has no dot).

A worker's permissions depend on its credentials' scope (a group, or a fixed WORKER_TAGS list)
and on the config at the moment it connects: it may pull from (and ack) only the consumers of
its scope's tags, be woken only for them, and write its heartbeat under its own key only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from shared import subjects

STREAMS = (subjects.CONFIG_STREAM, subjects.JOBS_STREAM, subjects.JOB_EVENTS_STREAM,
           subjects.DEAD_STREAM, f"KV_{subjects.WORKERS_BUCKET}", "KV_GO_CANCELS",
           "OBJ_GO_SNAPSHOTS")
_JS = "$JS.API"
AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
CONFIG_INBOX = "_INBOX.config"
STATIC_ROLES = ("config", "router", "admin", "client")
ROLES = (*STATIC_ROLES, "worker")


@dataclass(frozen=True)
class Perms:
    pub_allow: tuple[str, ...]
    sub_allow: tuple[str, ...]
    pub_deny: tuple[str, ...] = ()
    sub_deny: tuple[str, ...] = ()
    responses: bool = False  # may answer requests it received (reply subjects), once each

    def jwt(self) -> dict[str, object]:
        """The `pub`/`sub`/`resp` claims of a user JWT."""
        out: dict[str, object] = {
            "pub": _rule(self.pub_allow, self.pub_deny), "sub": _rule(self.sub_allow, self.sub_deny)}
        if self.responses:
            out["resp"] = {"max": 1, "ttl": 0}
        return out

    def conf(self) -> str:
        """The same as a nats-server config `permissions` value."""
        def block(allow: tuple[str, ...], deny: tuple[str, ...]) -> str:
            parts = [f"{k}: [{', '.join(_q(s) for s in v)}]"
                     for k, v in (("allow", allow), ("deny", deny)) if v]
            return "{" + ", ".join(parts) + "}"
        resp = ", allow_responses: true" if self.responses else ""
        return (f"{{publish: {block(self.pub_allow, self.pub_deny)},"
                f" subscribe: {block(self.sub_allow, self.sub_deny)}{resp}}}")


def _rule(allow: tuple[str, ...], deny: tuple[str, ...]) -> dict[str, list[str]]:
    rule = {"allow": list(allow)}
    if deny:
        rule["deny"] = list(deny)
    return rule


def _q(subject: str) -> str:
    return '"' + subject + '"'


def _streams(template: str, names: Iterable[str] = STREAMS) -> list[str]:
    return [template.format(s=name) for name in names]


# Destroying history or queued jobs is no service's business (an operator does it as admin).
_DESTROY = (f"{_JS}.STREAM.DELETE.>", f"{_JS}.STREAM.PURGE.>", f"{_JS}.STREAM.MSG.DELETE.>",
            f"{_JS}.CONSUMER.DELETE.{subjects.JOBS_STREAM}.>")
# Declaring the suite's streams and buckets (config service and routers do, in any start order).
_DECLARE = (f"{_JS}.INFO", f"{_JS}.STREAM.NAMES", f"{_JS}.STREAM.LIST", *_streams(_JS + ".STREAM.CREATE.{s}"),
            *_streams(_JS + ".STREAM.UPDATE.{s}"), *_streams(_JS + ".STREAM.INFO.{s}"))
# Reading streams: message gets, ephemeral consumers (replays, watches, object reads), their
# pulls, acks and flow control. GO_JOBS is not in it: only workers pull jobs, by tag.
_READ_STREAMS = tuple(s for s in STREAMS if s != subjects.JOBS_STREAM)
_READ = (*_streams(_JS + ".STREAM.MSG.GET.{s}", _READ_STREAMS),
         *_streams(_JS + ".DIRECT.GET.{s}", _READ_STREAMS),
         *_streams(_JS + ".DIRECT.GET.{s}.>", _READ_STREAMS),
         *_streams(_JS + ".CONSUMER.CREATE.{s}", _READ_STREAMS),
         *_streams(_JS + ".CONSUMER.CREATE.{s}.>", _READ_STREAMS),
         *_streams(_JS + ".CONSUMER.INFO.{s}.>", _READ_STREAMS),
         *_streams(_JS + ".CONSUMER.DELETE.{s}.>", _READ_STREAMS),
         *_streams(_JS + ".CONSUMER.MSG.NEXT.{s}.>", _READ_STREAMS),
         *_streams("$JS.ACK.{s}.>", _READ_STREAMS), *_streams("$JS.FC.{s}.>", _READ_STREAMS))
# The queue's state without taking jobs: waiting jobs per tag (metrics, the Workers page).
_QUEUE_STATE = (f"{_JS}.STREAM.INFO.{subjects.JOBS_STREAM}",
                f"{_JS}.CONSUMER.LIST.{subjects.JOBS_STREAM}",
                f"{_JS}.CONSUMER.NAMES.{subjects.JOBS_STREAM}",
                f"{_JS}.CONSUMER.INFO.{subjects.JOBS_STREAM}.>")


def static(role: str, inbox: str | None = None) -> Perms:
    """Permissions of a role whose rights do not depend on the config. `inbox` is the prefix the
    connection declared (`_INBOX.<X>`); None gives the pattern for the table."""
    own_inbox = f"{inbox}.>" if inbox else "_INBOX.<X>.>"
    if role == "config":
        return Perms(
            pub_allow=(*_DECLARE, *_READ, *_QUEUE_STATE,
                       f"{_JS}.CONSUMER.DURABLE.CREATE.{subjects.JOBS_STREAM}.>",
                       f"{_JS}.CONSUMER.CREATE.{subjects.JOBS_STREAM}.>",  # tag consumers
                       subjects.CONFIG_SUBJECTS, "$O.GO_SNAPSHOTS.>",
                       # the outbox removes foreign messages from its own stream; a re-signed
                       # log replaces the old copies; a new snapshot replaces the old one
                       f"{_JS}.STREAM.MSG.DELETE.{subjects.CONFIG_STREAM}",
                       f"{_JS}.STREAM.PURGE.{subjects.CONFIG_STREAM}",
                       f"{_JS}.STREAM.PURGE.OBJ_GO_SNAPSHOTS",
                       # dependency jobs of deployed scripts, queued and read with its admin
                       # token like any client's (services/config/locks.py)
                       subjects.SUBMIT_SUBJECT, subjects.JOB_SUBJECT),
            pub_deny=tuple(_streams(_JS + ".STREAM.DELETE.{s}")) + tuple(
                f"{_JS}.STREAM.{op}.{s}" for op in ("PURGE", "MSG.DELETE")
                for s in STREAMS if s not in (subjects.CONFIG_STREAM, "OBJ_GO_SNAPSHOTS"))
            + (f"{_JS}.CONSUMER.DELETE.{subjects.JOBS_STREAM}.>",),
            sub_allow=(f"{CONFIG_INBOX}.>", AUTH_SUBJECT),
            responses=True)  # the authority answers nats-server's auth requests
    if role == "router":
        # No stream declarations: the config service declares the streams (a stolen router
        # credential must not shrink a stream's limits, which would purge it), routers wait.
        return Perms(
            pub_allow=(f"{_JS}.INFO", f"{_JS}.STREAM.NAMES", *_streams(_JS + ".STREAM.INFO.{s}"),
                       *_READ, *_QUEUE_STATE, subjects.JOBS_SUBJECTS,
                       subjects.JOB_EVENTS_SUBJECTS, f"{subjects.WAKE_PREFIX}.*",
                       "$KV.GO_CANCELS.>"),
            pub_deny=(*_DESTROY, "$O.GO_SNAPSHOTS.>"),
            # submissions only in the routers' queue group: one router takes each, none copies
            sub_allow=(own_inbox, f"{subjects.SUBMIT_SUBJECT} {subjects.ROUTER_QUEUE_GROUP}",
                       f"{subjects.JOB_SUBJECT} {subjects.ROUTER_QUEUE_GROUP}",
                       # a job read that waits listens on the job's subject (no consumer)
                       subjects.JOB_EVENTS_SUBJECTS),
            responses=True)  # answers go.router.submit and go.router.job
    if role == "admin":  # the operator's own tools: everything of the suite's, no system account
        return Perms(pub_allow=("go.>", "$JS.>", "$KV.>", "$O.>", "_INBOX.>"),
                     sub_allow=("go.>", "$JS.EVENT.>", "$KV.>", "$O.>", "_INBOX.>"),
                     responses=True)
    if role == "client":  # integrators: submit and read jobs (with a token), get the answers
        return Perms(pub_allow=(subjects.SUBMIT_SUBJECT, subjects.JOB_SUBJECT),
                     sub_allow=(own_inbox,))
    raise ValueError(f"no static permissions for role {role!r}")


def worker(tags: Iterable[str], heartbeat_key: str | None, inbox: str | None,
           group: str | None = None, jobs: bool = True) -> Perms:
    """A worker's permissions: its tags' consumers only (pull, ack, wake-ups), its heartbeat key
    only, its inbox only, its group's config and the assignable tags only (`group` None: a
    `WORKER_TAGS` worker, which has no group). `jobs=False` leaves the tags out (a worker's
    control connection, which does not change when the group's tags do). None for `inbox`
    gives the table's patterns."""
    tag_list = sorted(set(tags))
    consumers = [subjects.tag_consumer(t) for t in tag_list]
    # Config is read only through consumers whose create request names the subject (bus.py:
    # follow_pulled): the server checks the request's subject, so no other group's config.
    config_subjects = [subjects.CONFIG_TAGS_SUBJECT]
    if group is not None:
        config_subjects.append(subjects.group_subject(group))
    pub: list[str] = [
        f"{_JS}.STREAM.NAMES",  # waiting for the streams to exist (not their subjects)
        # binding the two buckets it uses (their keys: heartbeats, job ids to cancel)
        *_streams(_JS + ".STREAM.INFO.{s}", (f"KV_{subjects.WORKERS_BUCKET}", "KV_GO_CANCELS")),
        *(f"{_JS}.CONSUMER.CREATE.{subjects.CONFIG_STREAM}.*.{s}" for s in config_subjects),
        f"{_JS}.CONSUMER.MSG.NEXT.{subjects.CONFIG_STREAM}.*",
        f"{_JS}.CONSUMER.INFO.{subjects.CONFIG_STREAM}.*",
        # following the cancels with its own pulls (services/common/streamreads.py)
        f"{_JS}.CONSUMER.CREATE.KV_GO_CANCELS", f"{_JS}.CONSUMER.MSG.NEXT.KV_GO_CANCELS.*",
        f"$KV.{subjects.WORKERS_BUCKET}.{heartbeat_key or '<its key>'}",
        # job events: written (sealed, shared/seals.py), never read; a job is read from a router
        subjects.JOB_EVENTS_SUBJECTS, subjects.DEAD_SUBJECTS, subjects.SUBMIT_SUBJECT,
        subjects.JOB_SUBJECT,
    ]
    sub: list[str] = [f"{inbox}.>" if inbox else "_INBOX.<X>.>"]
    if jobs:
        if inbox is None:  # the table's pattern
            pub += [f"{_JS}.CONSUMER.MSG.NEXT.{subjects.JOBS_STREAM}.<its tags' consumers>",
                    f"$JS.ACK.{subjects.JOBS_STREAM}.<its tags' consumers>.>",
                    f"$KV.GO_CANCELS.{subjects.CANCELLED_QUEUED}.<its tags>.>"]
            sub += [f"{subjects.WAKE_PREFIX}.<its tags>"]
        else:
            pub += [f"{_JS}.CONSUMER.MSG.NEXT.{subjects.JOBS_STREAM}.{c}" for c in consumers]
            pub += [f"$JS.ACK.{subjects.JOBS_STREAM}.{c}.>" for c in consumers]
            # the marks of its tags' cancelled queued jobs, removed as it drops them
            pub += [f"$KV.GO_CANCELS.{subjects.CANCELLED_QUEUED}.{subjects.encode_token(t)}.>"
                    for t in tag_list]
            sub += [subjects.wake_subject(t) for t in tag_list]
    return Perms(pub_allow=tuple(pub), sub_allow=tuple(sub))


def nobody() -> Perms:
    """What a refused scope gets if it were ever issued: nothing."""
    return Perms(pub_allow=(), sub_allow=(), pub_deny=(">",), sub_deny=(">",))


# --- the table in docs/security.md --------------------------------------------------------

_PROBES: list[tuple[str, str, str]] = [
    # (direction, subject, what it is)
    ("pub", subjects.group_subject("g"), "append a config event"),
    ("pub", "$O.GO_SNAPSHOTS.C.x", "write a config snapshot"),
    ("pub", subjects.job_subject("t"), "put a job on a queue"),
    ("pub", f"{_JS}.CONSUMER.CREATE.{subjects.CONFIG_STREAM}.x.{subjects.group_subject('g')}",
     "replay group g's config"),
    ("pub", f"{_JS}.CONSUMER.CREATE.{subjects.CONFIG_STREAM}.x.{subjects.group_subject('h')}",
     "replay another group's config"),
    ("pub", f"{_JS}.CONSUMER.CREATE.{subjects.CONFIG_STREAM}", "replay any config"),
    ("pub", subjects.job_events_subject("j"), "write a job event"),
    ("pub", f"{_JS}.CONSUMER.CREATE.{subjects.JOB_EVENTS_STREAM}", "read job events"),
    ("pub", f"{_JS}.STREAM.MSG.GET.{subjects.JOB_EVENTS_STREAM}", "read one job event"),
    ("pub", f"{_JS}.STREAM.INFO.{subjects.JOB_EVENTS_STREAM}", "list a stream's subjects (job ids)"),
    ("pub", f"{_JS}.STREAM.MSG.GET.KV_{subjects.WORKERS_BUCKET}", "read heartbeats"),
    ("pub", subjects.JOB_SUBJECT, "read a job from a router (token, grant or hold key)"),
    ("sub", subjects.JOB_SUBJECT, "answer job reads (routers' queue group)"),
    ("pub", subjects.dead_subject("t"), "park a dead letter"),
    ("pub", subjects.SUBMIT_SUBJECT, "submit a job (with a token)"),
    ("sub", subjects.SUBMIT_SUBJECT, "answer submissions (routers' queue group)"),
    ("pub", subjects.wake_subject("t"), "wake workers of a tag"),
    ("sub", subjects.wake_subject("t"), "be woken for a tag"),
    ("sub", subjects.job_subject("t"), "read queued jobs as they are published"),
    ("sub", "_INBOX.other.>", "read another connection's replies"),
    ("sub", ">", "read everything"),
    ("pub", f"{_JS}.CONSUMER.MSG.NEXT.{subjects.JOBS_STREAM}.tag_t", "pull a job of tag t"),
    ("pub", f"{_JS}.CONSUMER.DURABLE.CREATE.{subjects.JOBS_STREAM}.tag_t",
     "create or change a tag consumer"),
    ("pub", f"{_JS}.CONSUMER.DELETE.{subjects.JOBS_STREAM}.tag_t", "delete a tag consumer"),
    ("pub", f"{_JS}.STREAM.CREATE.{subjects.JOBS_STREAM}", "declare a stream"),
    ("pub", f"{_JS}.STREAM.PURGE.{subjects.JOBS_STREAM}", "purge a stream"),
    ("pub", f"{_JS}.STREAM.MSG.DELETE.{subjects.CONFIG_STREAM}", "delete a stored message"),
    ("pub", f"$KV.{subjects.WORKERS_BUCKET}.g.w.n", "write a heartbeat"),
    ("pub", "$KV.GO_CANCELS.j", "ask for a cancel"),
    ("sub", AUTH_SUBJECT, "answer nats-server's auth requests"),
    ("pub", "$SYS.REQ.SERVER.PING", "reach the system account"),
]


def table() -> str:
    """The role x subject table of docs/security.md (markdown)."""
    from services.common.subjectmatch import allowed

    roles = [(r, static(r, inbox="_INBOX.own")) for r in STATIC_ROLES]
    roles.append(("worker", worker(["t"], "g.w.n", "_INBOX.own", group="g")))
    head = "| action | subject | " + " | ".join(r for r, _ in roles) + " |"
    lines = [head, "|" + "---|" * (len(roles) + 2)]
    for direction, subject, what in _PROBES:
        cells = []
        for _, perms in roles:
            allow = perms.pub_allow if direction == "pub" else perms.sub_allow
            deny = perms.pub_deny if direction == "pub" else perms.sub_deny
            cells.append("yes" if allowed(subject, allow, deny) else "no")
        lines.append(f"| {what} ({direction}) | `{subject}` | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Worker column: a worker of group `g` whose tags include `t` (or started with"
                 " `WORKER_TAGS` listing it: then no group's config), heartbeat key `g.w.n`"
                 " (its credentials' user, its id, its control connection's inbox token). For"
                 " any other tag, every `t` row is `no`.")
    return "\n".join(lines)
