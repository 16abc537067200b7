"""The permission table has one source (services/common/permissions.py): docs/security.md shows
it verbatim, nats-server's config is rendered from it, and its rules mean what the table says."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as hs

from services.common import natsauth, permissions
from services.common.subjectmatch import allowed, covers
from shared import subjects

ROOT = Path(__file__).resolve().parents[2]
TOKEN = hs.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True)


def test_docs_show_the_generated_table() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    shown = re.search(r"<!-- permissions-table:start -->\n(.*?)\n<!-- permissions-table:end -->",
                      text, re.S)
    assert shown is not None
    assert shown.group(1) == permissions.table(), (
        "docs/security.md's table is stale: paste the output of"
        " `python -c 'from services.common.permissions import table; print(table())'`")


def test_nats_server_config_renders_the_config_users_rules() -> None:
    block = natsauth.config_block()
    assert permissions.static("config").conf() in block
    assert "auth_callout" in block and "auth_users: [config]" in block


@given(hs.lists(TOKEN, min_size=1, max_size=5))
def test_a_literal_subject_is_covered_by_itself_and_by_full_wildcards(tokens: list[str]) -> None:
    subject = ".".join(tokens)
    assert covers(subject, subject)
    assert covers(">", subject)
    assert covers(".".join(["*"] * len(tokens)), subject)
    assert not covers(subject + ".x", subject)


@given(hs.lists(TOKEN, min_size=1, max_size=4))
def test_a_wildcard_subscription_needs_a_pattern_at_least_as_wide(tokens: list[str]) -> None:
    literal = ".".join(tokens)
    assert not covers(literal, literal + ".>") and not covers(literal, ">")
    assert covers(">", literal + ".>") and covers(literal + ".>", literal + ".>")


def test_every_role_has_allow_lists_and_none_allows_everything() -> None:
    for role in permissions.STATIC_ROLES:
        perms = permissions.static(role, inbox="_INBOX.abc")
        assert perms.pub_allow and perms.sub_allow, role
        assert not allowed(">", perms.sub_allow, perms.sub_deny), role
        assert not allowed("$SYS.REQ.SERVER.PING", perms.pub_allow, perms.pub_deny), role


def test_a_workers_rights_follow_its_tags_and_its_key() -> None:
    perms = permissions.worker(["gpu", "a b"], "k.me", "_INBOX.abc")
    pull = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.JOBS_STREAM}."
    assert allowed(pull + subjects.tag_consumer("gpu"), perms.pub_allow)
    assert allowed(pull + subjects.tag_consumer("a b"), perms.pub_allow)
    assert not allowed(pull + subjects.tag_consumer("bash"), perms.pub_allow)
    assert allowed(subjects.wake_subject("gpu"), perms.sub_allow)
    assert not allowed(subjects.wake_subject("bash"), perms.sub_allow)
    assert not allowed(subjects.job_subject("gpu"), perms.sub_allow)
    assert allowed("$KV.GO_WORKERS.k.me", perms.pub_allow)
    assert not allowed("$KV.GO_WORKERS.k.other", perms.pub_allow)
    assert allowed("_INBOX.abc.x", perms.sub_allow) and not allowed("_INBOX.abd.x", perms.sub_allow)
    control = permissions.worker(["gpu"], "k.me", "_INBOX.abc", group="g", jobs=False)
    assert not allowed(pull + subjects.tag_consumer("gpu"), control.pub_allow)
    create = f"$JS.API.CONSUMER.CREATE.{subjects.CONFIG_STREAM}"
    for p in (perms, control):
        assert allowed(f"{create}.n.{subjects.CONFIG_TAGS_SUBJECT}", p.pub_allow)
        assert not allowed(f"{create}.n.{subjects.group_subject('h')}", p.pub_allow)
        assert not allowed(create, p.pub_allow) and not allowed(f"{create}.n", p.pub_allow)
        assert not allowed(f"$JS.API.STREAM.MSG.GET.{subjects.CONFIG_STREAM}", p.pub_allow)
    assert allowed(f"{create}.n.{subjects.group_subject('g')}", control.pub_allow)
    assert not allowed(f"{create}.n.{subjects.group_subject('g')}", perms.pub_allow)  # no group
    for read in ("CONSUMER.CREATE", "STREAM.MSG.GET"):
        assert not allowed(f"$JS.API.{read}.{subjects.JOB_EVENTS_STREAM}", control.pub_allow)
    for create in ("CREATE", "DURABLE.CREATE"):
        assert not allowed(f"$JS.API.CONSUMER.{create}.{subjects.JOBS_STREAM}.tag_gpu",
                           perms.pub_allow)
    # A stolen worker credential and the marks of cancelled queued jobs: its own tags' marks
    # only (a count on its own tags' page rows), never another tag's, never a cancel request.
    job = "01a22aa369855cf4c6401b0d61c311d0"
    assert allowed(f"$KV.GO_CANCELS.{subjects.cancelled_queued_key('gpu', job)}",
                   perms.pub_allow)
    assert not allowed(f"$KV.GO_CANCELS.{subjects.cancelled_queued_key('bash', job)}",
                       perms.pub_allow)
    assert not allowed(f"$KV.GO_CANCELS.{job}", perms.pub_allow)
    assert not allowed(f"$KV.GO_CANCELS.{subjects.cancelled_queued_key('gpu', job)}",
                       control.pub_allow)


@given(hs.text(min_size=1, max_size=12))
def test_no_tag_widens_a_workers_rights(tag: str) -> None:
    """A tag is one subject token: its consumer and wake-up subject are literal, never a wildcard."""
    perms = permissions.worker([tag], "k.me", "_INBOX.abc")
    # The patterns this tag brings (a tag like `tags` also spells a token of a fixed pattern,
    # such as the config subject `go.config.tags`: those are the same for every tag).
    fixed = permissions.worker(["another-tag"], "k.me", "_INBOX.abc")
    for pattern in {*perms.pub_allow, *perms.sub_allow} - {*fixed.pub_allow, *fixed.sub_allow}:
        tokens = pattern.split(".")
        assert "*" not in tokens, pattern
    assert not allowed(subjects.wake_subject(tag + "x"), perms.sub_allow)
