"""Properties of the tag <-> subject token codec (shared/subjects.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import subjects
from shared.errors import InvalidInput
from shared.subjects import (
    decode_token,
    encode_token,
    job_subject,
    tag_consumer,
    tag_of_subject,
)
from shared.tags import MAX_TAG_LENGTH, validate_tag

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# JetStream stream/consumer names: no whitespace, '.', '*', '>', path separators; at most 255 chars
# (nats-server JSMaxNameLen, error 10102 "consumer name is too long, maximum allowed is 255").
CONSUMER_NAME_RE = re.compile(r"^[^\s.*>/\\]+$")
JETSTREAM_MAX_NAME_LEN = 255

SETTINGS = settings(max_examples=200, deadline=None, database=None)


def _is_valid_tag(text: str) -> bool:
    try:
        validate_tag(text)
    except InvalidInput:
        return False
    return True


valid_tags = st.text(min_size=1, max_size=MAX_TAG_LENGTH).filter(_is_valid_tag)


# --- round trip, injectivity, alphabet ------------------------------------------------------------


@SETTINGS
@given(st.text(min_size=1))
def test_encode_decode_round_trip(text: str) -> None:
    assert decode_token(encode_token(text)) == text


@SETTINGS
@given(st.text(min_size=1), st.text(min_size=1))
def test_encode_is_injective(a: str, b: str) -> None:
    if a != b:
        assert encode_token(a) != encode_token(b)
    else:
        assert encode_token(a) == encode_token(b)


@SETTINGS
@given(st.text(min_size=1))
def test_token_alphabet_is_subject_safe(text: str) -> None:
    token = encode_token(text)
    assert TOKEN_RE.fullmatch(token), token
    for forbidden in (".", "*", ">", " ", "\t", "\n", "\r"):
        assert forbidden not in token


@SETTINGS
@given(st.text(alphabet="abcXYZ019-", min_size=1))
def test_safe_characters_are_kept_verbatim(text: str) -> None:
    assert encode_token(text) == text


@SETTINGS
@given(st.text(min_size=1))
def test_decode_accepts_only_canonical_tokens(candidate: str) -> None:
    """Anything decode_token accepts is exactly what encode_token produces for the result."""
    try:
        text = decode_token(candidate)
    except InvalidInput as exc:
        assert exc.field == "token"
        return
    assert encode_token(text) == candidate


@SETTINGS
@given(st.text(alphabet="_0123456789ABCDEFabcdef-", min_size=1, max_size=12))
def test_decode_of_escape_soup_is_canonical_or_rejected(candidate: str) -> None:
    try:
        text = decode_token(candidate)
    except InvalidInput:
        return
    assert encode_token(text) == candidate


# --- explicit examples ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "token"),
    [
        (".", "_2E"),
        ("*", "_2A"),
        (">", "_3E"),
        (" ", "_20"),
        ("$", "_24"),
        ("_", "_5F"),
        ("gpu", "gpu"),
        ("a.b", "a_2Eb"),
        ("gpu-é", "gpu-_C3_A9"),
        ("🚀", "_F0_9F_9A_80"),
        ("normal-$workspace", "normal-_24workspace"),
        ("A-z_0", "A-z_5F0"),
    ],
)
def test_known_encodings(tag: str, token: str) -> None:
    assert encode_token(tag) == token
    assert decode_token(token) == tag


@pytest.mark.parametrize(
    "token",
    [
        "",  # empty
        "_41",  # 'A' escaped: not canonical
        "_2D",  # '-' escaped: not canonical
        "_4",  # truncated escape
        "_",  # lone escape char
        "_4a",  # lowercase hex is not produced by the encoder
        "a.b",  # two tokens
        "a*",
        ">",
        "a b",
        "é",  # raw non-ASCII
        "_C3",  # truncated UTF-8 sequence
        "_FF",  # never valid UTF-8
        "_C3_28",  # invalid continuation byte
    ],
)
def test_decode_rejects_malformed_tokens(token: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_token(token)
    assert info.value.field == "token"


def test_encode_rejects_empty() -> None:
    with pytest.raises(InvalidInput) as info:
        encode_token("")
    assert info.value.field == "tag"


# --- job subjects and consumers -------------------------------------------------------------------


@SETTINGS
@given(st.text(min_size=1))
def test_job_subject_has_four_tokens_and_inverts(tag: str) -> None:
    subject = job_subject(tag)
    parts = subject.split(".")
    assert len(parts) == 4
    assert parts[:3] == ["go", "jobs", "q"]
    assert parts[3] == encode_token(tag)
    assert subject.startswith(subjects.JOBS_PREFIX + ".")
    assert tag_of_subject(subject) == tag


@pytest.mark.parametrize(
    "tag", [".", "*", ">", " ", "$", "gpu-é", "🚀🔥", "a.b.c", "go.jobs.q.x"]
)
def test_job_subject_examples(tag: str) -> None:
    subject = job_subject(tag)
    assert subject.count(".") == 3
    assert "*" not in subject and ">" not in subject and " " not in subject
    assert tag_of_subject(subject) == tag


@pytest.mark.parametrize(
    "subject",
    [
        "go.jobs.q",
        "go.jobs.q.",
        "go.jobs.q.a.b",
        "go.jobs.x.gpu",
        "go.jobev.gpu",
        "gpu",
        "go.jobs.q._41",
        "go.jobs.q.*",
        "go.jobs.q.>",
    ],
)
def test_tag_of_subject_rejects_non_job_subjects(subject: str) -> None:
    with pytest.raises(InvalidInput):
        tag_of_subject(subject)


@SETTINGS
@given(valid_tags)
def test_tag_consumer_uses_only_name_safe_characters(tag: str) -> None:
    name = tag_consumer(tag)
    assert CONSUMER_NAME_RE.fullmatch(name), name
    assert TOKEN_RE.fullmatch(name), name
    if name.startswith("tag_"):
        assert decode_token(name[len("tag_"):]) == tag
    else:  # too long to spell out within JetStream's 255-character limit: named by its hash
        assert name.startswith("tagh_") and len(name) == 5 + 64


@SETTINGS
@given(valid_tags, valid_tags)
def test_tag_consumer_is_injective(a: str, b: str) -> None:
    assert (tag_consumer(a) == tag_consumer(b)) == (a == b)


def test_tag_consumer_of_short_tag() -> None:
    assert tag_consumer("gpu") == "tag_gpu"
    assert tag_consumer("gpu-é") == "tag_gpu-_C3_A9"


@pytest.mark.parametrize(
    "tag",
    ["$" * 84, "$" * MAX_TAG_LENGTH, "é" * MAX_TAG_LENGTH, "🚀" * MAX_TAG_LENGTH],
    ids=["dollar-x84", "dollar-x100", "e-acute-x100", "emoji-x100"],
)
def test_tag_consumer_fits_jetstream_name_limit_for_every_valid_tag(tag: str) -> None:
    assert validate_tag(tag) == tag  # documented as a valid tag
    assert len(tag_consumer(tag)) <= JETSTREAM_MAX_NAME_LEN
