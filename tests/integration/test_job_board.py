"""The routers' job board (services/router/board.py): reads and waits answered from memory, the
same answers the stream gives, and the stream still read where the board may not answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import nats
import pytest

from cli.client import CliError
from shared import seals, subjects
from tests.integration.conftest import Suite, running_suite


def _hold_read(s: Suite, job_id: str) -> dict[str, Any]:
    """The job as its holder reads it over `go.router.job`: always from the stream."""
    key = (s.root / ".getoperate" / "router.key").read_text().strip().encode()

    async def read() -> dict[str, Any]:
        nc = await nats.connect(s.nats_url)
        try:
            reply = await nc.request(
                subjects.JOB_SUBJECT, json.dumps({"id": job_id, "history": True}).encode(),
                timeout=10, headers={subjects.HOLD_HEADER: seals.hold_key(key, job_id)})
            return json.loads(reply.data)  # type: ignore[no-any-return]
        finally:
            await nc.close()

    import asyncio
    return asyncio.run(read())


def _purge_history(s: Suite, job_id: str) -> None:
    async def purge() -> None:
        nc = await nats.connect(s.nats_url)
        try:
            await nc.jetstream().purge_stream(subjects.JOB_EVENTS_STREAM,
                                              subject=subjects.job_events_subject(job_id))
        finally:
            await nc.close()

    import asyncio
    asyncio.run(purge())


def test_the_board_answers_as_the_stream_does(suite: Suite) -> None:
    """A finished, a failed and a cancelled job: `GET /jobs/{id}` (from the board) equals the
    view the stream gives its holder, apart from what a history read leaves out."""
    s = suite
    ok = s.api.submit("echo fine", workspace="main")["id"]
    bad = s.api.submit("echo oops >&2; exit 3", workspace="main")["id"]
    views = {j: s.api.job(j) for j in (ok, bad)}
    assert views[ok]["status"] == "success" and views[ok]["result"] == "fine"
    assert views[bad]["status"] == "failure"
    for job_id, view in views.items():
        held = _hold_read(s, job_id)
        assert held["view"] == {**view, "logs": "", "result": None}, (held, view)
        assert [e["type"] for e in held["history"]] == ["job.queued", "job.started",
                                                       "job.finished"]


def test_a_read_of_a_followed_job_needs_no_stream(suite: Suite) -> None:
    """The job's events are purged from GO_JOB_EVENTS after it ended: the board still answers
    (from memory), while its holder, who always reads the stream, finds nothing."""
    s = suite
    job = s.api.submit("echo remembered", workspace="main")["id"]
    assert s.api.job(job)["status"] == "success"
    _purge_history(s, job)
    view = s.api.call("GET", "router", f"/jobs/{job}")
    assert (view["status"], view["result"]) == ("success", "remembered")
    assert _hold_read(s, job)["error"] == "not_found"


@pytest.fixture(scope="module")
def boardless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("boardless"),
                       env={"ROUTER_JOB_BOARD_BYTES": "0"}) as s:
        s.api.wait_workers(lambda ws: any(w["group"] == "default" and w["state"] == "ready"
                                          for w in ws))
        yield s


def test_without_a_board_reads_come_from_the_stream(boardless: Suite) -> None:
    """`ROUTER_JOB_BOARD_BYTES=0` turns the board off: the same purge now leaves nothing to
    read (so the test above is the board's doing), and reads and waits still work."""
    s = boardless
    job = s.api.submit("sleep 0.3; echo streamed", workspace="main")["id"]
    assert s.api.job(job)["result"] == "streamed"  # a waiting read, on the stream
    _purge_history(s, job)
    with pytest.raises(CliError, match="404"):
        s.api.call("GET", "router", f"/jobs/{job}")


def test_a_bad_board_size_stops_the_router_naming_the_variable(tmp_path: Path) -> None:
    from tests.integration.harness import Proc, free_port_base

    up = Proc(["up", "--port-base", str(free_port_base())], cwd=tmp_path,
              env={"ROUTER_JOB_BOARD_BYTES": "lots"}, name="up")
    try:
        up.p.wait(timeout=60)
    finally:
        up.stop()
    assert up.p.returncode != 0
    assert "ROUTER_JOB_BOARD_BYTES must be a whole number of bytes, not 'lots'" in up.output()
