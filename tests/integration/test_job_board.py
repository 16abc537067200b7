"""The routers' job board (services/router/board.py): reads and waits answered from memory, the
same answers the stream gives, and the stream still read where the board may not answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import nats
import pytest

from cli.client import CliError
from shared import seals, subjects
from tests.integration.conftest import Suite, running_suite
from tests.integration.harness import wait_until
from tests.integration.natsclients import hold_read


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


def _fake_heartbeat(victim: str) -> dict[str, str]:
    """The headers of a JetStream idle heartbeat naming a 'stalled' reply subject: here a cancel
    of `victim`, which a nats-py push consumer publishes with its reader's rights."""
    return {"Status": "100", "Description": "Idle Heartbeat",
            "Nats-Consumer-Stalled": f"$KV.GO_CANCELS.{victim}"}


def _publish_as_worker(s: Suite, subject: Any, data: bytes = b"",
                       headers: dict[str, str] | None = None, part: str = "control") -> None:
    """One message written with a stolen `default` worker credential, over its control or jobs
    connection; `subject` may be a function of the connection's inbox token (a heartbeat key)."""
    import asyncio

    from services.common import natsauth
    from tests.integration.natsclients import creds

    async def publish() -> None:
        user = natsauth.worker_user("default")
        options = natsauth.connection_options("probe", user, worker="probe-w", part=part)
        token = options["inbox_prefix"].rsplit(".", 1)[1]
        nc = await nats.connect(s.plain_nats_url, user=user, password=creds(s)[user], **options)
        try:
            await nc.jetstream().publish(subject(token) if callable(subject) else subject, data,
                                         timeout=10, headers=headers)
        finally:
            await nc.close()

    asyncio.run(publish())


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
        held = hold_read(s, job_id)
        assert held["view"] == {**view, "logs": "", "result": None}, (held, view)
        types = [e["type"] for e in held["history"]]  # job.started only past 0.25 s of run
        assert types in (["job.queued", "job.finished"],
                         ["job.queued", "job.started", "job.finished"]), types


def test_a_read_of_a_followed_job_needs_no_stream(suite: Suite) -> None:
    """The job's events are purged from GO_JOB_EVENTS after it ended: the board still answers
    (from memory), while its holder, who always reads the stream, finds nothing."""
    s = suite
    job = s.api.submit("echo remembered", workspace="main")["id"]
    assert s.api.job(job)["status"] == "success"
    _purge_history(s, job)
    view = s.api.call("GET", "router", f"/jobs/{job}")
    assert (view["status"], view["result"]) == ("success", "remembered")
    assert hold_read(s, job)["error"] == "not_found"


@pytest.fixture(scope="module")
def boardless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("boardless"),
                       env={"ROUTER_JOB_BOARD_BYTES": "0"}, ready=("default",)) as s:
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


# --- what a stolen worker credential (or a job's holder) tried against the board -------------


def _router_rss_kib(s: Suite) -> int:
    """Resident memory of this suite's router (a child of its `up`)."""
    import subprocess

    ps = subprocess.run(["ps", "-eo", "pid,ppid,args", "-ww"], capture_output=True,
                        text=True).stdout
    pid = next(int(line.split()[0]) for line in ps.splitlines()[1:]
               if "cli.main router" in line and int(line.split()[1]) == s.up.p.pid)
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


def test_a_stored_fake_heartbeat_makes_no_router_publish(suite: Suite) -> None:
    """The red team's attack: with a worker's credentials, a job event with an empty body and
    the headers of a JetStream idle heartbeat naming a 'stalled' reply subject: nats-py's push
    consumers publish to that subject with the router's rights (here: a cancel of another
    job). The board pulls on its own and takes a stored message for a stored message."""
    import uuid


    s = suite
    victim = s.api.submit("sleep 2; echo survived", workspace="main")["id"]

    _publish_as_worker(s, f"go.jobev.{uuid.uuid4().hex}", headers=_fake_heartbeat(victim))
    view = s.api.job(victim)
    assert (view["status"], view["result"]) == ("success", "survived"), view
    later = s.api.submit("echo after", workspace="main")["id"]
    assert s.api.job(later)["result"] == "after"  # the board's follow went past it
    assert s.api.call("GET", "router", f"/jobs/{later}")["status"] == "success"


def test_headers_and_fake_jobs_do_not_grow_the_routers_memory(suite: Suite) -> None:
    """The red team's attack: 1,000 fake `job.queued` events with 60 KB of headers each (60 MB)
    raised a router's memory by what it received, outside the board's bound. Only a router's
    own job.queued starts a job on the board now, and no header but the seal is kept."""
    import asyncio
    import uuid

    from shared.codec import encode
    from shared.jobs import JobQueued
    from tests.integration.natsclients import connect_as

    s = suite
    before = _router_rss_kib(s)

    async def flood() -> None:
        nc = await connect_as(s, "worker")
        try:
            js = nc.jetstream()
            for _ in range(1000):
                job = uuid.uuid4().hex
                body = encode(JobQueued(job_id=job, time=0.0, tag="t", workspace="main",
                                        language="bash"))
                await js.publish(f"go.jobev.{job}", body, timeout=10,
                                 headers={"X-Pad": "p" * 60_000, subjects.SEAL_HEADER: "f" * 64})
        finally:
            await nc.close()

    asyncio.run(flood())
    job = s.api.submit("echo still", workspace="main")["id"]
    assert s.api.job(job)["result"] == "still"
    grown_mib = (_router_rss_kib(s) - before) / 1024
    assert grown_mib < 30, f"the router grew by {grown_mib:.0f} MiB for 60 MB of fake events"


@pytest.fixture(scope="module")
def tiny_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("tiny-board"),
                       env={"ROUTER_JOB_BOARD_BYTES": "2500"}) as s:
        yield s


def test_a_holder_cannot_move_its_job_where_the_board_forgot_it(tiny_board: Suite) -> None:
    """The red team's attack: the board forgot a job (evicted for room), then the job's holder
    wrote a second `job.queued`, sealed with its hold key, naming another workspace; the board
    took it for the job's first. A board entry starts only from a router's job.queued now."""
    import asyncio

    from shared.codec import encode
    from shared.jobs import JobQueued

    s = tiny_board
    job = s.api.submit("true", workspace="main", tag="nobody-serves-this")["id"]
    for _ in range(6):  # more jobs than the 2,500 bytes hold: the first is forgotten
        s.api.submit("true", workspace="main", tag="nobody-serves-this")
    key = (s.root / ".getoperate" / "router.key").read_text().strip().encode()
    hold = seals.hold_key(key, job)
    moved = encode(JobQueued(job_id=job, time=0.0, tag="nobody-serves-this", workspace="other",
                             language="bash"))

    async def write() -> None:
        nc = await nats.connect(s.nats_url)
        try:
            await nc.jetstream().publish(subjects.job_events_subject(job), moved, timeout=10,
                                         headers={subjects.SEAL_HEADER: seals.seal(hold, moved)})
        finally:
            await nc.close()

    asyncio.run(write())
    for _ in range(3):
        assert s.api.call("GET", "router", f"/jobs/{job}")["workspace"] == "main"


def test_a_fake_heartbeat_among_the_cancel_marks_cancels_nothing(suite: Suite) -> None:
    """The same trick on GO_CANCELS, where a worker's jobs connection may write (delete) its
    tags' cancelled-queued marks: every worker's cancel watch and the router's waiting counts
    read that bucket, and a push consumer would have published where the mark said (here: a
    cancel of a running job) and stalled. They pull on their own now: nothing is published,
    and a real cancel still reaches the job's worker."""


    s = suite
    victim = s.api.submit("sleep 3; echo survived", workspace="main")["id"]

    tag = subjects.encode_token("bash")
    _publish_as_worker(s, f"$KV.GO_CANCELS.{subjects.CANCELLED_QUEUED}.{tag}.fake",
                       headers=_fake_heartbeat(victim), part="jobs")
    import urllib.request

    # A scrape makes the router read the marks (waiting counts per tag).
    urllib.request.urlopen(f"http://127.0.0.1:{s.base + 2}/metrics", timeout=30).read()
    view = s.api.job(victim)
    assert (view["status"], view["result"]) == ("success", "survived"), view
    slow = s.api.submit("sleep 20; echo never", workspace="main")["id"]
    wait_until(lambda: s.api.job(slow, wait=False)["status"] == "running", "the job running")
    s.api.call("POST", "router", f"/jobs/{slow}/cancel")
    view = s.api.job(slow, timeout=30)
    assert view["status"] == "cancelled", view


def test_a_heartbeat_dressed_as_a_server_message_makes_no_router_publish(suite: Suite) -> None:
    """A worker writes its own heartbeat key in GO_WORKERS, headers included; the routers read
    the bucket (live workers). Written with the headers of an idle heartbeat naming a cancel,
    it made a push consumer publish the cancel with the router's rights."""

    from services.common import natsauth

    s = suite
    victim = s.api.submit("sleep 3; echo survived", workspace="main")["id"]

    user = natsauth.worker_user("default")
    _publish_as_worker(s, lambda token: "$KV.GO_WORKERS." + subjects.heartbeat_key(
        user, "probe-w", subjects.heartbeat_nonce(token)), headers=_fake_heartbeat(victim))
    s.api.workers()  # the routers have read the bucket since
    view = s.api.job(victim)
    assert (view["status"], view["result"]) == ("success", "survived"), view
    assert any(w["group"] == "default" for w in s.api.workers())  # still following it


def test_an_event_dressed_as_a_server_error_does_not_break_the_job_list(suite: Suite) -> None:
    """`GET /jobs` scans the newest job events; one stored with a `Status: 400` header made
    nats-py's fetch raise, and every listing failed while it was in the window."""
    import asyncio
    import uuid

    from tests.integration.natsclients import connect_as

    s = suite
    job = s.api.submit("echo listed", workspace="main")["id"]
    assert s.api.job(job)["result"] == "listed"

    async def plant() -> None:
        nc = await connect_as(s, "worker")
        try:
            await nc.jetstream().publish(f"go.jobev.{uuid.uuid4().hex}", b"", timeout=10,
                                         headers={"Status": "400", "Description": "Bad Request"})
        finally:
            await nc.close()

    asyncio.run(plant())
    listed = s.api.call("GET", "router", "/jobs?limit=1000")
    assert job in [v["id"] for v in listed]


def test_a_worker_cannot_roll_up_the_cancel_requests(suite: Suite) -> None:
    """The second red team: a worker may write its tags' cancelled-queued marks, and one mark
    written with `Nats-Rollup: all` purged GO_CANCELS whole (a cancelled queued job then ran),
    one heartbeat GO_WORKERS whole. The buckets refuse rollups now, and the cancel stays."""
    import asyncio

    from nats.js.errors import APIError


    s = suite
    job = s.api.submit("echo never", workspace="main", tag="t-rollup-unserved")["id"]
    s.api.call("POST", "router", f"/jobs/{job}/cancel")

    tag = subjects.encode_token("bash")
    with pytest.raises(APIError):
        _publish_as_worker(s, f"$KV.GO_CANCELS.{subjects.CANCELLED_QUEUED}.{tag}.x",
                           headers={"Nats-Rollup": "all"}, part="jobs")

    async def kept() -> bool:
        admin = await nats.connect(s.nats_url)
        try:
            kv = await admin.jetstream().key_value("GO_CANCELS")
            return (await kv.get(job)).value is not None
        finally:
            await admin.close()

    assert asyncio.run(kept())


def test_junk_events_of_a_megabyte_do_not_stall_the_job_list(suite: Suite) -> None:
    """The second red team: 300 junk events of about 1 MB made every `GET /jobs` read the whole
    window (20,000 events) and answer 503 after 30 s. A listing reads at most the newest 64 MiB
    of events now, sized first from their headers."""
    import asyncio
    import uuid

    from tests.integration.natsclients import connect_as

    s = suite

    async def junk() -> None:
        nc = await connect_as(s, "worker")
        try:
            js = nc.jetstream()
            for _ in range(80):
                await js.publish(f"go.jobev.{uuid.uuid4().hex}", b"j" * 900_000, timeout=10)
        finally:
            await nc.close()

    asyncio.run(junk())
    job = s.api.submit("echo newest", workspace="main")["id"]
    assert s.api.job(job)["result"] == "newest"
    listed = s.api.call("GET", "router", "/jobs?limit=10", timeout=20)
    assert job in [v["id"] for v in listed]
