"""Property-based API fuzzing with schemathesis against each service's own /openapi.json: no input,
however wrong, gets a 5xx. Runs against its own `getoperate up` (the fuzzer changes config)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.integration.conftest import Suite, running_suite

# Derandomized in CI so a run is reproducible; FUZZ_RANDOM=1 FUZZ_EXAMPLES=500 explores afresh.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "25")), deadline=None,
                suppress_health_check=list(HealthCheck), database=None,
                derandomize=os.environ.get("FUZZ_RANDOM") != "1")


@pytest.fixture(scope="module")
def fuzz_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("fuzz")) as s:
        yield s


def _spec(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _token(suite: Suite) -> str:
    return (Path(suite.root) / ".getoperate" / "admin.token").read_text().strip()


def _fuzz(suite: Suite, port: int) -> tuple[list[str], list[str]]:
    """Every operation of the service's own spec, with schemathesis-generated requests (valid
    and invalid); returns the operations exercised."""
    schema = schemathesis.openapi.from_dict(_spec(f"http://127.0.0.1:{port}/openapi.json"))
    done: list[str] = []
    calls: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            if case.path == "/jobs/{id}" and case.query is not None:
                case.query["timeout"] = "0"  # don't let the fuzzer wait up to 300 s per example
            calls.append(case.method)
            response = case.call(base_url=f"http://127.0.0.1:{port}",
                                 headers={"Authorization": f"Bearer {_token(suite)}"}, timeout=30)
            assert response.status_code < 500, (case.method, case.formatted_path, case.body,
                                                response.text)
            if response.status_code >= 400:
                assert response.json()["message"]

        run()
        done.append(f"{operation.method.upper()} {operation.path}")
    return done, calls


def test_config_api_never_answers_5xx(fuzz_suite: Suite) -> None:
    done, calls = _fuzz(fuzz_suite, fuzz_suite.base + 1)
    assert "PUT /groups/{name}" in done and "GET /" in done and len(done) == 26
    assert len(calls) >= 5 * len(done)  # the fuzzer really generated requests


def test_router_api_never_answers_5xx(fuzz_suite: Suite) -> None:
    done, calls = _fuzz(fuzz_suite, fuzz_suite.base + 2)
    assert {"POST /jobs", "POST /jobs/batch"} <= set(done) and len(done) == 9
    assert len(calls) >= 5 * len(done)
