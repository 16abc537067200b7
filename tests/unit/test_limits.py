"""Job limits and sandbox settings on the config side: the `memory=512M,...` syntax and the HTTP
object (shared/limits.py), how limits read back, and the
command that decides `group.limits_set` / `group.sandbox_set` (only changed parts, nothing on a
refusal)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import isolation, limits
from shared.codec import encode
from shared.errors import Conflict, InvalidInput
from shared.events import GENESIS_HASH, GroupLimitsSet, GroupSandboxSet, JobLimits, seal
from shared.history import diff_states, summarize
from shared.state import ConfigState, fold

GiB, MiB, KiB = 1024**3, 1024**2, 1024
SETTINGS = settings(max_examples=200, deadline=None, database=None)


def refused(fn: Any, *args: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        fn(*args)
    assert info.value.status == 400
    return info.value


# --- the syntax ---------------------------------------------------------------------------------


def test_the_documented_example_parses_to_bytes_and_seconds() -> None:
    parsed = limits.parse(
        "memory=512M,cpu_seconds=600,processes=256,file_size=1G,max_timeout=3600")
    assert parsed == JobLimits(memory=512 * MiB, cpu_seconds=600, processes=256, file_size=GiB,
                               max_timeout=3600.0)
    assert parsed == limits.parse("memory=512M, cpu_seconds=600 ,processes=256,file_size=1G,"
                                  "max_timeout=3600")


@pytest.mark.parametrize(("text", "memory"), [
    ("512M", 512 * MiB), ("512m", 512 * MiB), ("512MB", 512 * MiB), ("512MiB", 512 * MiB),
    ("2G", 2 * GiB), ("1T", 1024 * GiB), ("20000K", 20000 * KiB), ("16777216", 16 * MiB),
    ("64 M", 64 * MiB),
])
def test_sizes_take_units(text: str, memory: int) -> None:
    assert limits.parse(f"memory={text}") == JobLimits(memory=memory)
    assert limits.validate({"memory": text}) == JobLimits(memory=memory)


@pytest.mark.parametrize("text", ["", "default", "  default  "])
def test_default_resets_every_limit(text: str) -> None:
    assert limits.parse(text) == JobLimits()


@pytest.mark.parametrize(("text", "field", "needle"), [
    ("memory=1", "limits.memory", "at least 16777216"),
    ("memory=15M", "limits.memory", "at least"),
    ("memory=lots", "limits.memory", "bytes, or a number with K, M, G or T"),
    ("memory=-5M", "limits.memory", "whole number (bytes, or a number with K, M, G or T)"),
    ("cpu_seconds=0", "limits.cpu_seconds", "at least 1"),
    ("processes=3", "limits.processes", "at least 4"),
    ("file_size=1", "limits.file_size", "at least 1024"),
    ("max_timeout=0.5", "limits.max_timeout", "at least 1.0"),
    ("max_timeout=soon", "limits.max_timeout", "a number of seconds"),
    ("processes=4.9", "limits.processes", "whole number"),
    ("cpu_seconds=600.5", "limits.cpu_seconds", "whole number"),
    ("cpu_seconds=" + "9" * 400, "limits.cpu_seconds", "at most 2147483648"),
    ("memory=" + "9" * 40, "limits.memory", "at most 4611686018427387904"),
    ("memory=" + "9" * 400, "limits.memory", "at most"),
    ("bogus=1", "limits.bogus", "not a limit; known: memory, cpu_seconds, processes, file_size,"
                                " max_timeout"),
    ("memory", "limits", "must look like name=value"),
    ("memory=", "limits", "must look like name=value"),
    ("=1G", "limits", "must look like name=value"),
    ("memory=1G,,processes=8", "limits", "must look like name=value"),
], ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_bad_limits_are_refused_naming_the_limit(text: str, field: str, needle: str) -> None:
    err = refused(limits.parse, text)
    assert err.field == field and needle in err.message, err.message


@pytest.mark.parametrize(("raw", "field"), [
    ({"memory": True}, "limits.memory"), ({"max_timeout": float("nan")}, "limits.max_timeout"),
    ({"max_timeout": float("inf")}, "limits.max_timeout"), ({"max_timeout": 10**400},
                                                            "limits.max_timeout"),
    ({"memory": 2**63}, "limits.memory"), ({"processes": 4.5}, "limits.processes"),
    ({"cpu_seconds": [1]}, "limits.cpu_seconds"), ("memory=1G", "limits"), ([1], "limits"),
])
def test_http_objects_are_checked_too(raw: Any, field: str) -> None:
    assert refused(limits.validate, raw).field == field


def test_http_objects_take_numbers_strings_and_nulls() -> None:
    assert limits.validate({"memory": 512 * MiB, "processes": "64", "max_timeout": 90,
                                      "file_size": None}) == JobLimits(
        memory=512 * MiB, processes=64, max_timeout=90.0)
    assert limits.validate(None) == limits.validate({}) == JobLimits()
    assert limits.validate(JobLimits(cpu_seconds=60)) == JobLimits(cpu_seconds=60)
    assert refused(limits.validate, JobLimits(cpu_seconds=0)).field == "limits.cpu_seconds"


def test_effective_limits_fill_in_the_defaults() -> None:
    assert limits.effective(None) == limits.effective(JobLimits()) == limits.DEFAULTS
    mixed = limits.effective(JobLimits(memory=GiB, max_timeout=60.0))
    assert mixed == msgspec.structs.replace(limits.DEFAULTS, memory=GiB, max_timeout=60.0)
    assert all(getattr(limits.DEFAULTS, f) is not None for f in limits.FIELDS)
    assert limits.as_dict(JobLimits(processes=8)) == {"processes": 8}


# --- reading limits back --------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "text"), [
    (512 * MiB, "512M"), (GiB, "1G"), (1536 * MiB, "1536M"), (2048 * GiB, "2T"),
    (20000 * KiB, "20000K"), (16 * MiB + 1, "16777217"), (0, "0"),
])
def test_sizes_read_in_the_largest_exact_unit(n: int, text: str) -> None:
    assert isolation.format_size(n) == text


def test_format_limits_is_the_cli_syntax() -> None:
    assert isolation.format_limits(JobLimits()) == "default"
    assert isolation.format_limits(JobLimits(memory=512 * MiB, max_timeout=3600.0)) == (
        "memory=512M,max_timeout=3600")
    assert isolation.format_limits(JobLimits(max_timeout=90.5, cpu_seconds=60)) == (
        "cpu_seconds=60,max_timeout=90.5")


_sizes = st.integers(16 * MiB, 2**62)
valid_limits = st.builds(
    JobLimits,
    memory=st.none() | _sizes,
    cpu_seconds=st.none() | st.integers(1, 2**31),
    processes=st.none() | st.integers(4, 2**22),
    file_size=st.none() | st.integers(KiB, 2**62),
    max_timeout=st.none() | st.floats(1.0, 315360000.0, allow_nan=False, allow_infinity=False),
)


@SETTINGS
@given(valid_limits)
def test_format_then_parse_gives_the_same_limits(value: JobLimits) -> None:
    assert limits.parse(isolation.format_limits(value)) == value
    assert limits.validate(limits.as_dict(value)) == value


@SETTINGS
@given(st.text(max_size=60))
def test_any_text_is_limits_or_invalid_input(text: str) -> None:
    try:
        limits.parse(text)
    except InvalidInput as exc:
        assert exc.field is not None and exc.field.startswith("limits")


@SETTINGS
@given(st.dictionaries(st.sampled_from(limits.FIELDS),
                       st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                       max_size=5))
def test_any_http_object_is_limits_or_invalid_input(raw: dict[str, Any]) -> None:
    try:
        limits.validate(raw)
    except InvalidInput as exc:
        assert exc.field is not None and exc.field.startswith("limits.")


# --- the command ----------------------------------------------------------------------------------


class Log:
    def __init__(self) -> None:
        self.state = ConfigState()
        self.prev = GENESIS_HASH

    def run(self, name: str = "gpu", **kwargs: Any) -> list[Any]:
        events = isolation.set_group(self.state, name, **kwargs)
        records = []
        for event in events:
            seq = self.state.seq + 1 + len(records)
            rec = seal(prev_hash=self.prev, seq=seq, id=f"e{seq}", time="2026-01-01T00:00:00Z",
                       actor="test", reason=None, event=event)
            self.prev = rec.hash
            records.append(rec)
        self.state = fold(records, self.state)
        return events


def test_a_new_group_with_limits_and_sandbox_is_one_command() -> None:
    log = Log()
    events = log.run(tags=["gpu"], limits={"memory": "512M"}, sandbox="bwrap", network=False)
    assert [type(e).__name__ for e in events] == [
        "GroupCreated", "GroupTagsSet", "GroupLimitsSet", "GroupSandboxSet"]
    group = log.state.groups["gpu"]
    assert (group.limits, group.sandbox, group.network) == (
        JobLimits(memory=512 * MiB), "bwrap", False)


def test_only_changed_parts_become_events() -> None:
    log = Log()
    log.run(limits={"memory": "512M", "max_timeout": 60}, sandbox="bwrap")
    assert log.run(limits={"memory": 512 * MiB, "max_timeout": "60"}) == []
    assert log.run(sandbox="bwrap") == [] and log.run(network=True) == []
    assert log.run(network=False) == [GroupSandboxSet(group="gpu", sandbox="bwrap", network=False)]
    # The sandbox is kept when only the network changes, and the network when only the sandbox.
    assert log.run(sandbox="none") == [GroupSandboxSet(group="gpu", sandbox="none", network=False)]
    assert log.run(sandbox="default", network=True) == [
        GroupSandboxSet(group="gpu", sandbox=None, network=True)]
    assert log.run(sandbox=None) == []
    # Limits are replaced as a whole: what is left out is back at its default.
    assert log.run(limits={"processes": 64}) == [
        GroupLimitsSet(group="gpu", limits=JobLimits(processes=64))]
    assert log.run(limits=None) == [GroupLimitsSet(group="gpu", limits=JobLimits())]
    assert log.run(limits={}) == []


def test_a_refused_field_writes_nothing_and_versions_are_checked() -> None:
    log = Log()
    log.run(tags=["a"])
    version = log.state.groups["gpu"].version
    for kwargs, field in (
        ({"tags": ["b"], "limits": {"memory": "1"}}, "limits.memory"),
        ({"limits": {"memory": "1G"}, "sandbox": "docker"}, "sandbox"),
        ({"sandbox": "bwrap", "network": "no"}, "network"),
        ({"tags": ["bad,tag"], "sandbox": "bwrap"}, "tags[0]"),
    ):
        with pytest.raises(InvalidInput) as info:
            log.run(**kwargs)
        assert info.value.field == field
    with pytest.raises(Conflict):
        log.run(network=False, expected_version=version - 1)
    assert log.run(network=False, expected_version=version)
    assert log.state.groups["gpu"].tags == ("a",)


def test_group_view_adds_the_effective_limits() -> None:
    log = Log()
    log.run(limits={"max_timeout": 60})
    view = msgspec.json.decode(encode(isolation.group_view(log.state.groups["gpu"])))
    assert view["limits"] == {"max_timeout": 60.0}
    assert view["effective_limits"] == {**msgspec.structs.asdict(limits.DEFAULTS),
                                        "max_timeout": 60.0}
    assert (view["sandbox"], view["network"]) == (None, True)


def test_history_reads_the_new_events() -> None:
    assert summarize(GroupLimitsSet(group="gpu", limits=JobLimits(memory=GiB, max_timeout=60.0))) == (
        "group gpu limits = memory=1G,max_timeout=60 (others default)")
    assert summarize(GroupLimitsSet(group="gpu")) == "group gpu limits reset to the defaults"
    assert summarize(GroupSandboxSet(group="gpu", sandbox="bwrap", network=False)) == (
        "group gpu sandbox = bwrap, network off")
    assert summarize(GroupSandboxSet(group="gpu")) == "group gpu sandbox = worker default, network on"

    log = Log()
    log.run(tags=["a"])
    before = log.state
    log.run(limits={"memory": "1G"}, sandbox="bwrap", network=False)
    assert diff_states(before, log.state) == [
        "~ group gpu: limits default -> memory=1G", "~ group gpu: sandbox worker default -> bwrap",
        "~ group gpu: network on -> off"]
    # A new group's line leaves out settings at their defaults.
    assert diff_states(ConfigState(), before) == ["+ group gpu: {tags=[a]}"]


@pytest.mark.parametrize(("value", "stored"), [
    ("bwrap", "bwrap"), ("none", "none"), ("default", None), (None, None)])
def test_sandbox_values(value: str | None, stored: str | None) -> None:
    assert isolation.validate_sandbox(value) == stored


@pytest.mark.parametrize("value", ["BWRAP", "docker", "", 1, True])
def test_other_sandboxes_are_refused(value: Any) -> None:
    assert refused(isolation.validate_sandbox, value).field == "sandbox"
