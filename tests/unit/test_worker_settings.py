"""Worker settings from the environment: a bad value stops the worker naming its variable."""

from __future__ import annotations

import pytest

from services.worker.settings import settings_from_env
from shared.errors import InvalidInput


@pytest.mark.parametrize("value", ["-1", "61", "soon", "nan", "inf"])
def test_a_bad_started_after_names_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                value: str) -> None:
    monkeypatch.setenv("WORKER_STARTED_AFTER", value)
    monkeypatch.setenv("WORKER_DIR", "/tmp")
    with pytest.raises(InvalidInput) as err:
        settings_from_env()
    assert err.value.field == "WORKER_STARTED_AFTER"
    assert "WORKER_STARTED_AFTER must be a number of seconds" in err.value.message


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("1.5", 1.5), (None, 0.25)])
def test_started_after_is_read_in_seconds(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                          seconds: float) -> None:
    if value is None:
        monkeypatch.delenv("WORKER_STARTED_AFTER", raising=False)
    else:
        monkeypatch.setenv("WORKER_STARTED_AFTER", value)
    monkeypatch.setenv("WORKER_DIR", "/tmp")
    assert settings_from_env().started_after == seconds
