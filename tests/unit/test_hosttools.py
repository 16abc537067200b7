"""Host tools' bounds (services/worker/hosttools.py): capped files, pruned caches."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from services.worker import hosttools


def _entry(folder: Path, name: str, size: int, used_ago: float) -> Path:
    entry = folder / name
    entry.mkdir()
    (entry / "data").write_bytes(b"x" * size)
    hosttools.touch(entry)
    at = time.time() - used_ago
    os.utime(entry / hosttools.USED, (at, at))
    return entry


def test_prune_removes_the_least_recently_used_first(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosttools, "CACHE_MAX_BYTES", 2500)
    _entry(tmp_path, "oldest", 1000, 9000)
    _entry(tmp_path, "old", 1000, 8000)
    _entry(tmp_path, "recent", 1000, 10)  # in use a moment ago: never removed
    keep = _entry(tmp_path, "new", 1000, 9500)  # the one just built
    assert hosttools.prune(tmp_path, keep=keep) == ["oldest", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "recent"]


def test_a_cache_under_its_size_is_left_alone(tmp_path: Path) -> None:
    _entry(tmp_path, "a", 100, 99999)
    assert hosttools.prune(tmp_path) == [] and (tmp_path / "a").exists()
    assert hosttools.prune(tmp_path / "missing") == []


def test_an_entry_too_large_is_deleted_and_refused(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosttools, "MAX_ENTRY_BYTES", 500)
    big = _entry(tmp_path, "big", 1000, 0)
    with pytest.raises(hosttools.ToolFailed, match="the limit is 500"):
        hosttools.check_entry(big, "the environment")
    assert not big.exists()


def test_a_tool_writing_past_the_file_cap_fails_naming_it(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosttools, "FILE_BYTES", 1 << 20)
    with pytest.raises(hosttools.ToolFailed, match="larger than 1048576 bytes"):
        asyncio.run(hosttools.run(["dd", "if=/dev/zero", "of=big", "bs=1M", "count=4"],
                                  cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=30))
    out, _ = asyncio.run(hosttools.run(["cat"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
                                       timeout=30, stdin=b"fine"))
    assert out == b"fine"


def test_a_tool_past_its_time_is_killed(tmp_path: Path) -> None:
    with pytest.raises(hosttools.ToolFailed, match="within 0.2s"):
        asyncio.run(hosttools.run(["sleep", "30"], cwd=tmp_path,
                                  env={"PATH": "/usr/bin:/bin"}, timeout=0.2))


def test_sizes_in_the_environment_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.errors import InvalidInput

    monkeypatch.setenv("WORKER_CACHE_MAX_BYTES", "lots")
    with pytest.raises(InvalidInput, match="WORKER_CACHE_MAX_BYTES must be a number"):
        hosttools.parse_size("WORKER_CACHE_MAX_BYTES", 1)
    monkeypatch.setenv("WORKER_CACHE_MAX_BYTES", "5")
    with pytest.raises(InvalidInput, match="at least 1048576"):
        hosttools.parse_size("WORKER_CACHE_MAX_BYTES", 1)
