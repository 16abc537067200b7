"""Config events: msgspec tagged structs with a schema version, and the envelope that chains them.

Evolution rule: add fields with defaults only; a breaking change is a new tag plus an upcaster.
Decoding never forbids unknown fields, so an older service reads a newer event's known part.
"""

from __future__ import annotations

import hashlib
from typing import Union

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


ConfigEvent = Union[GroupCreated, GroupTagsSet, GroupInitScriptSet, GroupDeleted]
GROUP_EVENTS = (GroupCreated, GroupTagsSet, GroupInitScriptSet, GroupDeleted)


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
    return subjects.CONFIG_GLOBAL_SUBJECT


def chain_hash(
    *, prev_hash: str, seq: int, id: str, time: str, actor: str, reason: str | None,
    event: ConfigEvent,
) -> str:
    """SHA-256 over the previous hash and this record's content: editing any row breaks the chain."""
    body = encode([prev_hash, seq, id, time, actor, reason, event])
    return hashlib.sha256(body).hexdigest()


def seal(
    *, prev_hash: str, seq: int, id: str, time: str, actor: str, reason: str | None,
    event: ConfigEvent,
) -> Recorded:
    """Build the Recorded envelope with its hash."""
    h = chain_hash(prev_hash=prev_hash, seq=seq, id=id, time=time, actor=actor, reason=reason, event=event)
    return Recorded(
        seq=seq, id=id, time=time, actor=actor, reason=reason, prev_hash=prev_hash, hash=h, event=event
    )


def verify_chain(records: list[Recorded], *, prev_hash: str = GENESIS_HASH, start_seq: int = 1) -> int | None:
    """Return the first sequence whose record breaks the chain, or None when all are intact."""
    expected_seq = start_seq
    for rec in records:
        if rec.seq != expected_seq or rec.prev_hash != prev_hash:
            return expected_seq if rec.seq != expected_seq else rec.seq
        if chain_hash(
            prev_hash=rec.prev_hash, seq=rec.seq, id=rec.id, time=rec.time, actor=rec.actor,
            reason=rec.reason, event=rec.event,
        ) != rec.hash:
            return rec.seq
        prev_hash = rec.hash
        expected_seq += 1
    return None
