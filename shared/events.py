"""Config events: msgspec tagged structs with a schema version, and the envelope that chains them.

Evolution rules:
- Add fields with defaults, keeping `v`: decoding never forbids unknown fields, so an older
  service reads a newer event's known part, and a newer one reads an old event's defaults.
- A change of what an existing field means raises that event's `v` (the class's default).
  Readers fold only versions they know (`readable`): an older service skips a newer `v`, as it
  skips a type it does not know, rather than misreading it. The release that raises a `v` adds
  the reading of the older version's meaning where records are decoded (`decode_known`, and
  shared/admission.py for followers), with a test that folds a log of the old version. No event
  has changed meaning yet, so there is no such reading today.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Union

import msgspec

from shared import subjects
from shared.codec import encode

GENESIS_HASH = "0" * 64


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Common base: `v` is the schema version of the event's own fields."""

    v: int = 1


class GroupCreated(_Event, tag="group.created", kw_only=True):
    """A worker group now exists (with no tags until tags are set)."""

    group: str


class GroupTagsSet(_Event, tag="group.tags_set", kw_only=True):
    """The full list of tags the group's workers listen to (replaces the previous list)."""

    group: str
    tags: tuple[str, ...]


class GroupInitScriptSet(_Event, tag="group.init_script_set", kw_only=True):
    """Bash run by every worker of the group before it takes a job; None removes it."""

    group: str
    init_script: str | None = None


class GroupDeleted(_Event, tag="group.deleted", kw_only=True):
    """The group's stored config is gone; its workers fall back to listening to no tag."""

    group: str


class GroupDedicatedSet(_Event, tag="group.dedicated_set", kw_only=True):
    """Dedicate the group's workers to deployed scripts/flows (`ws:path`, `ws:flow/path`)."""

    group: str
    targets: tuple[str, ...] = ()


class GroupPrioritiesSet(_Event, tag="group.priorities_set", kw_only=True):
    """Tag priorities of the group (1..255, higher pulled first; unlisted tags have 0)."""

    group: str
    priorities: dict[str, int] = msgspec.field(default_factory=dict)


class GroupEnvSet(_Event, tag="group.env_set", kw_only=True):
    """Static environment variables every job of the group's workers gets (env_vars_static)."""

    group: str
    env: dict[str, str] = msgspec.field(default_factory=dict)


class JobLimits(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Resource limits of every job of a group; None means the worker's default (docs/security.md).

    Sizes are bytes, times seconds. `max_timeout` also caps the timeout a workspace may ask for.
    """

    memory: int | None = None
    cpu_seconds: int | None = None
    processes: int | None = None
    file_size: int | None = None
    max_timeout: float | None = None


class GroupLimitsSet(_Event, tag="group.limits_set", kw_only=True):
    """The resource limits of the group's jobs (replaces the previous limits; unset = default)."""

    group: str
    limits: JobLimits = JobLimits()


class GroupSandboxSet(_Event, tag="group.sandbox_set", kw_only=True):
    """How the group's jobs are isolated: `sandbox` bwrap|none (None = the worker's JOB_SANDBOX),
    and whether they may use the network."""

    group: str
    sandbox: str | None = None
    network: bool = True


class ScriptDeployed(_Event, tag="script.deployed", kw_only=True):
    """A new version of a deployed script; the log keeps every version."""

    workspace: str
    path: str
    language: str
    content: str
    tag: str | None = None
    timeout: float | None = None


class ScriptLocked(_Event, tag="script.locked", kw_only=True):
    """What a deployed python3 script's dependency job resolved (shared/pydeps.py): the lock
    its runs use, or why resolving failed. `version` is the seq of the deploy it locks; a lock
    of an older version is kept in the log but changes nothing."""

    workspace: str
    path: str
    version: int
    requirements: tuple[str, ...] = ()
    lock: str | None = None
    error: str | None = None
    job_id: str | None = None


class FlowStep(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One step: a deployed script of the flow's workspace (`script`) or inline code."""

    name: str | None = None
    script: str | None = None
    language: str | None = None
    content: str | None = None
    tag: str | None = None


class FlowDeployed(_Event, tag="flow.deployed", kw_only=True):
    """A new version of a deployed flow: ordered steps, an optional flow-level tag."""

    workspace: str
    path: str
    steps: tuple[FlowStep, ...]
    tag: str | None = None
    preserve_step_tags: bool = False


class AssignableTagSet(_Event, tag="tags.assignable_set", kw_only=True):
    """A custom tag users may assign, optionally restricted to (`only`) or from (`exclude`) workspaces."""

    tag: str
    only: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


class AssignableTagRemoved(_Event, tag="tags.assignable_removed", kw_only=True):
    """The custom tag is no longer assignable."""

    tag: str


class TokenCreated(_Event, tag="token.created", kw_only=True):
    """An API token was issued: its name, its workspace (None = admin) and the SHA-256 of its
    value. The value itself never enters the log."""

    name: str
    workspace: str | None = None
    token_hash: str


class TokenRevoked(_Event, tag="token.revoked", kw_only=True):
    """The named token no longer authenticates."""

    name: str


ConfigEvent = Union[
    GroupCreated, GroupTagsSet, GroupInitScriptSet, GroupDeleted, GroupDedicatedSet,
    GroupPrioritiesSet, ScriptDeployed, FlowDeployed, AssignableTagSet, AssignableTagRemoved,
    TokenCreated, TokenRevoked, GroupEnvSet, GroupLimitsSet, GroupSandboxSet, ScriptLocked,
]
GROUP_EVENTS = (
    GroupCreated, GroupTagsSet, GroupInitScriptSet, GroupDeleted, GroupDedicatedSet,
    GroupPrioritiesSet, GroupEnvSet, GroupLimitsSet, GroupSandboxSet,
)


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored in the log and published on the stream: position, identity, chain."""

    seq: int
    id: str
    time: str
    actor: str
    reason: str | None = None
    prev_hash: str
    hash: str
    event: ConfigEvent


def event_type(event: ConfigEvent) -> str:
    """The stable tag of an event (`group.tags_set`)."""
    return type(event).__struct_config__.tag  # type: ignore[return-value]


def subject_for(event: ConfigEvent) -> str:
    """The stream subject an event is published on: per group, so workers replay only theirs."""
    if isinstance(event, GROUP_EVENTS):
        return subjects.group_subject(event.group)
    if isinstance(event, (ScriptDeployed, ScriptLocked)):
        return subjects.script_subject(event.workspace, event.path)
    if isinstance(event, FlowDeployed):
        return subjects.flow_subject(event.workspace, event.path)
    if isinstance(event, (TokenCreated, TokenRevoked)):
        return subjects.CONFIG_TOKENS_SUBJECT
    return subjects.CONFIG_TAGS_SUBJECT


class RawRecorded(msgspec.Struct, frozen=True, kw_only=True):
    """The envelope with the event left as its stored bytes: what the hash chain covers.

    Hashing stored bytes (not a re-encoding of the decoded event) keeps the chain valid across
    schema evolution: an older service that drops a newer field, or a newer one that adds a
    default, still computes the hash over exactly what was written.
    """

    seq: int
    id: str
    time: str
    actor: str
    reason: str | None = None
    prev_hash: str
    hash: str
    event: msgspec.Raw


_raw_decoder = msgspec.json.Decoder(RawRecorded)


def chain_hash(
    *, prev_hash: str, seq: int, id: str, time: str, actor: str, reason: str | None,
    event_bytes: bytes,
) -> str:
    """SHA-256 over the previous hash, this record's fields and its event's stored JSON bytes."""
    head = encode([prev_hash, seq, id, time, actor, reason])
    return hashlib.sha256(head + b"\n" + bytes(event_bytes)).hexdigest()


def seal(
    *, prev_hash: str, seq: int, id: str, time: str, actor: str, reason: str | None,
    event: ConfigEvent,
) -> Recorded:
    """Build the Recorded envelope with its hash."""
    h = chain_hash(prev_hash=prev_hash, seq=seq, id=id, time=time, actor=actor, reason=reason,
                   event_bytes=encode(event))
    return Recorded(
        seq=seq, id=id, time=time, actor=actor, reason=reason, prev_hash=prev_hash, hash=h, event=event
    )


def _as_raw(record: Recorded | RawRecorded | bytes) -> RawRecorded:
    if isinstance(record, RawRecorded):
        return record
    if isinstance(record, Recorded):  # freshly sealed, never stored: its encoding is what is stored
        return _raw_decoder.decode(encode(record))
    return _raw_decoder.decode(record)


def verify_chain(
    records: "Iterable[Recorded | RawRecorded | bytes]", *, prev_hash: str = GENESIS_HASH,
    start_seq: int = 1,
) -> int | None:
    """Return the first sequence whose record breaks the chain, or None when all are intact.

    Give stored bytes (SQLite rows, stream messages) to verify exactly what was written.
    """
    expected_seq = start_seq
    for item in records:
        rec = _as_raw(item)
        if rec.seq != expected_seq:
            return expected_seq
        if rec.prev_hash != prev_hash:
            return rec.seq
        if chain_hash(
            prev_hash=rec.prev_hash, seq=rec.seq, id=rec.id, time=rec.time, actor=rec.actor,
            reason=rec.reason, event_bytes=rec.event,
        ) != rec.hash:
            return rec.seq
        prev_hash = rec.hash
        expected_seq += 1
    return None


def _version(event_type: type) -> int:
    return next(f.default for f in msgspec.structs.fields(event_type) if f.name == "v")


# Each event type this version folds, with the newest schema version of it that it understands.
KNOWN_VERSIONS: dict[str, int] = {
    t.__struct_config__.tag: _version(t) for t in ConfigEvent.__args__  # type: ignore[attr-defined]
}
KNOWN_TYPES: frozenset[str] = frozenset(KNOWN_VERSIONS)


class _TypeOnly(msgspec.Struct):
    type: str
    v: int = 1


def readable(head: _TypeOnly) -> bool:
    """Does this version know this event's type, in this schema version or an older one?"""
    return head.v <= KNOWN_VERSIONS.get(head.type, 0)


def decode_known(body: bytes) -> Recorded | None:
    """Decode a stored envelope; None for an event this version cannot read (a type it does not
    know, or a newer schema version of one: a newer writer's), so readers skip it instead of
    failing or misreading it. Malformed input still raises."""
    from shared.codec import decode

    raw = decode(body, RawRecorded)
    if not readable(decode(raw.event, _TypeOnly)):
        return None
    return decode(body, Recorded)
