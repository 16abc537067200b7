"""The routers' key for flow grants (services/router/keys.py): from GETOPERATE_ROUTER_KEY, else a
private file the first router creates and every router of the data dir then shares."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.router.keys import KEY_ENV, KEY_FILE, RouterKeyError, router_key


def test_the_first_router_creates_a_private_key_file_the_others_share(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    data = tmp_path / "data"
    old = os.umask(0)
    try:
        with ThreadPoolExecutor(8) as pool:  # routers starting together agree on one key
            keys = set(pool.map(lambda _: router_key(data), range(8)))
    finally:
        os.umask(old)
    assert len(keys) == 1 and len(keys.pop()) >= 32
    assert stat.S_IMODE((data / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert [p.name for p in data.iterdir()] == [KEY_FILE]  # no temp file left behind


def test_the_environment_wins_and_a_short_key_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "x" * 40)
    assert router_key(tmp_path) == b"x" * 40
    assert not (tmp_path / KEY_FILE).exists()
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(RouterKeyError) as info:
        router_key(tmp_path)
    assert info.value.field == KEY_ENV and "5 characters long" in info.value.message
