"""docs/asyncapi.json is current, covers every subject, and its schemas accept real messages.

The document is generated from the msgspec types (cli/asyncapi.py); these tests make sure the
committed copy is what the code generates, that no subject of shared/subjects.py is left out, and
that what the services really write validates against the schemas it publishes.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from cli.main import main
from cli import asyncapi
from shared import subjects
from shared.codec import encode
from shared.errors import InvalidInput
from shared.events import GENESIS_HASH, FlowDeployed, FlowStep, seal
from shared.jobs import (
    DeadLetter, Job, JobFinished, JobQueued, JobStarted, JobSubmit, StepSummary, SubmitAnswer,
    WorkerStatus,
)
from shared.routing import PlannedStep
from shared.signing import Signer, new_private_key
from shared.snapshots import seal_snapshot
from shared.state import ConfigState, GroupConfig
from tests.asyncapi_check import validator

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "asyncapi.json"
REGENERATE = "regenerate with `getoperate asyncapi --output docs/asyncapi.json`"
JOB_ID = "01a22593f8ae52f9749766be01a491ad"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi.document()


def _addresses(doc: dict[str, Any]) -> list[str]:
    return [c["address"] for c in doc["channels"].values() if c["address"] is not None]


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    """Follow a local `#/a/b` JSON pointer; KeyError when it points nowhere."""
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


# --- (1) the committed file is current --------------------------------------------------------


def test_committed_document_is_current() -> None:
    assert DOC_PATH.exists(), f"docs/asyncapi.json is missing: {REGENERATE}"
    current = DOC_PATH.read_text() == asyncapi.render()  # no giant diff on failure
    assert current, f"docs/asyncapi.json is stale: {REGENERATE}"


def test_document_is_plain_json_data(doc: dict[str, Any]) -> None:
    """No tuples or other Python-only values: what tools read is exactly what `document()` says."""
    assert json.loads(asyncapi.render()) == doc


def test_version_is_the_package_version(doc: dict[str, Any]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert doc["info"]["version"] == project["version"], "update cli/asyncapi.py VERSION"


# --- (2) every subject is documented ------------------------------------------------------------


def test_every_subject_of_shared_subjects_has_a_channel(doc: dict[str, Any]) -> None:
    addresses = _addresses(doc)
    streams = {c.get("x-stream") for c in doc["channels"].values()}
    queues = {op.get("bindings", {}).get("nats", {}).get("queue")
              for op in doc["operations"].values()}
    headers = {h for m in doc["components"]["messages"].values()
               for h in (m.get("headers") or {}).get("properties", {})}
    constants = {name: value for name, value in vars(subjects).items()
                 if name.isupper() and not name.startswith("_") and isinstance(value, str)}
    for name, value in constants.items():
        where = f"subjects.{name} ({value!r}) is not in cli/asyncapi.py; add it, {REGENERATE}"
        if value.startswith(subjects.PREFIX + "."):  # a subject, a prefix or a wildcard
            base = value.removesuffix(".>")
            assert any(a == base or a.startswith(base + ".") for a in addresses), where
        elif name.endswith("_STREAM"):
            assert value in streams, where
        elif name.endswith("_BUCKET"):  # a KV bucket, or an object store
            assert any(a.startswith((f"$KV.{value}.", f"$O.{value}.")) for a in addresses), where
        elif name == "SNAPSHOT_NAME":  # the one object of the snapshot store
            assert any(f"`{value}`" in m.get("summary", "")
                       for m in doc["components"]["messages"].values()), where
        elif name.endswith("_QUEUE_GROUP"):
            assert value in queues, where
        elif name.endswith("_HEADER"):
            assert value in headers, where
        elif name == "CANCELLED_QUEUED":  # a key prefix in the cancels bucket
            assert any(a.startswith(f"$KV.{subjects.CANCELS_BUCKET}.{value}.")
                       for a in addresses), where
        else:
            assert name == "PREFIX", (f"subjects.{name} is new: document it in cli/asyncapi.py"
                                      " and tell this test which kind of name it is")


def test_channel_addresses_match_the_subject_functions(doc: dict[str, Any]) -> None:
    """A template filled with tokens gives what the code publishes to."""
    enc = subjects.encode_token

    def fill(channel: str, **values: str) -> str:
        return str(doc["channels"][channel]["address"].format(
            **{k: enc(v) for k, v in values.items()}))

    assert fill("configGroup", group="gpu_pool") == subjects.group_subject("gpu_pool")
    assert (fill("configScript", workspace="main", path="f/double")
            == subjects.script_subject("main", "f/double"))
    assert fill("configFlow", workspace="ws 1", path="a/b") == subjects.flow_subject("ws 1", "a/b")
    assert fill("jobQueue", tag="main:f/double") == subjects.job_subject("main:f/double")
    assert fill("deadLetters", tag="é") == subjects.dead_subject("é")
    assert fill("jobEvents", jobId=JOB_ID) == subjects.job_events_subject(JOB_ID)
    assert (fill("workers", user="worker:default", worker="my.worker_1", nonce="n1")
            == f"$KV.{subjects.WORKERS_BUCKET}."
            + subjects.heartbeat_key("worker:default", "my.worker_1", "n1"))


def test_names_owned_by_services_match_the_document(doc: dict[str, Any]) -> None:
    """shared/ cannot import services/common/bus.py (it does I/O), so compare here."""
    from services.common import bus

    addresses = _addresses(doc)
    assert any(a.startswith(f"$KV.{subjects.CANCELS_BUCKET}.") for a in addresses)
    assert any(a.startswith(f"$O.{subjects.SNAPSHOT_BUCKET}.") for a in addresses)
    server = doc["servers"]["local"]
    assert f"{server['protocol']}://{server['host']}" == bus.DEFAULT_NATS_URL


def test_channel_parameters_match_their_address(doc: dict[str, Any]) -> None:
    for cid, channel in doc["channels"].items():
        names = set(re.findall(r"\{(\w+)\}", channel["address"] or ""))
        assert names == set(channel.get("parameters", {})), cid


def test_every_reference_resolves_and_everything_is_used(doc: dict[str, Any]) -> None:
    for ref in _refs(doc):
        assert ref.startswith("#/"), ref
        _resolve(doc, ref)  # raises KeyError when dangling
    for oid, op in doc["operations"].items():
        chan = op["channel"]["$ref"]
        assert all(m["$ref"].startswith(chan + "/messages/") for m in op["messages"]), oid
        if "reply" in op:
            reply = op["reply"]["channel"]["$ref"]
            assert all(m["$ref"].startswith(reply + "/messages/") for m in op["reply"]["messages"])
    used = {op["channel"]["$ref"] for op in doc["operations"].values()}
    used |= {op["reply"]["channel"]["$ref"] for op in doc["operations"].values() if "reply" in op}
    assert used == {f"#/channels/{c}" for c in doc["channels"]}
    in_channels = {m["$ref"] for c in doc["channels"].values() for m in c["messages"].values()}
    assert in_channels == {f"#/components/messages/{m}" for m in doc["components"]["messages"]}


# --- (3) the schemas are valid JSON Schema ------------------------------------------------------


def test_every_schema_is_valid_json_schema(doc: dict[str, Any]) -> None:
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for message in doc["components"]["messages"].values():
        for part in ("payload", "headers"):
            if part in message:
                jsonschema.Draft202012Validator.check_schema(message[part])


def test_every_example_validates(doc: dict[str, Any]) -> None:
    for name, message in doc["components"]["messages"].items():
        for example in message["examples"]:
            if "payload" in example:
                validator(doc, name).validate(example["payload"])
            if "headers" in example:
                jsonschema.Draft202012Validator(message["headers"]).validate(example["headers"])


# --- (4) real messages validate against their schema --------------------------------------------


def _real_messages() -> list[tuple[str, Any]]:
    steps = (PlannedStep(index=1, name="fetch", language="bash", code="echo 20", tag="bash"),
             PlannedStep(index=2, name="double", language="python3", code="def main(n): ...",
                         tag="python3", path="f/double", script_version=5))
    flow = Job(id=JOB_ID, workspace="main", language="flow", code="", tag="flow",
               submitted_at=1795926572.7175603, kind="flow", path="f/pipeline", version=7,
               steps=steps)
    finished = JobFinished(
        job_id=JOB_ID, time=1795926785.08, status="success", result={"n": 40, "ok": [True]},
        logs="step 1 (fetch) ...", worker="default-vm-1-abcd", group="default", duration_ms=637.6,
        steps=[StepSummary(index=1, name="fetch", job_id="01a2", tag="bash", status="success")])
    record = seal(prev_hash=GENESIS_HASH, seq=1, id="d870c02884e6473c83680a1e51f08a9f",
                  time="2026-11-29T04:32:47.383669Z", actor="admin", reason=None,
                  event=FlowDeployed(workspace="main", path="f/pipeline", steps=(
                      FlowStep(name="fetch", language="bash", content="echo 20"),
                      FlowStep(script="f/double"))))
    return [
        ("Job", flow),
        ("JobSubmit", JobSubmit(path="f/double", args={"n": 21}, require_worker=True)),
        ("JobSubmit", JobSubmit(language="bash", code="echo hi", tag="gpu-$workspace",
                                workspace="ws1", timeout=60.0)),
        ("WorkerStatus", WorkerStatus(
            id="fast-vm-21769-f23b", group=None, tags=["python3"], tags_source="env",
            config_version=0, init_status="failed", init_error="boom", hostname="vm", pid=1,
            started_at=1.5, heartbeat_at=2.5, priorities={"python3": 3}, config_applied_at=2.0)),
        ("Recorded", record),
        ("SubmitAnswer", SubmitAnswer(id=JOB_ID, tag="gpu-ws1", warning="no live worker")),
        ("SubmitError", InvalidInput("tag 'gpu' is not available", field="tag").to_dict()),
        ("SubmitError", {"error": "internal", "message": "TimeoutError()"}),
        ("JobQueued", JobQueued(job_id=JOB_ID, time=1.0, tag="flow", workspace="main",
                                language="flow", kind="flow", path="f/pipeline")),
        ("JobStarted", JobStarted(job_id=JOB_ID, time=2.0, worker="w", attempt=2)),
        ("JobFinished", finished),
        ("DeadLetter", DeadLetter(job=flow, deliveries=6, time=3.0, history=[finished])),
        ("SignedSnapshot", seal_snapshot(Signer(new_private_key()), ConfigState(
            seq=3, groups={"gpu": GroupConfig(name="gpu", tags=("gpu",))}), "0" * 64, 3)),
        ("CancelRequest", "cancelled by admin"),
    ]


@pytest.mark.parametrize(("message", "value"), _real_messages(),
                         ids=[m for m, _ in _real_messages()])
def test_real_messages_validate_against_their_schema(doc: dict[str, Any], message: str,
                                                     value: Any) -> None:
    name = "ConfigSnapshot" if message == "SignedSnapshot" else message
    validator(doc, name).validate(json.loads(encode(value)))


def test_the_workers_pull_requests_validate(doc: dict[str, Any]) -> None:
    """nats-py's `fetch(1, timeout=w)` asks for one message that may wait `w` less 0.1 ms
    (tests/integration/test_worker_parts.py checks these bytes on the wire)."""
    from services.worker import pulls

    for wait in (pulls.NOW, pulls.SOON):
        body = json.dumps({"batch": 1, "expires": int(wait * 1e9) - 100_000}).encode()
        validator(doc, "PullRequest").validate(json.loads(body))
        msgspec.json.decode(body, type=asyncapi.PullRequest)


def test_schemas_really_constrain(doc: dict[str, Any]) -> None:
    """A validator that silently resolved nothing would accept anything: show it refuses."""
    with pytest.raises(jsonschema.ValidationError):
        validator(doc, "Job").validate({"workspace": "main"})  # no id, code, tag...
    with pytest.raises(jsonschema.ValidationError):
        validator(doc, "JobSubmit").validate({"language": "bash", "code": "x", "prio": 1})
    with pytest.raises(jsonschema.ValidationError):  # a group.created without its group
        validator(doc, "Recorded").validate({
            "seq": 1, "id": "x", "time": "t", "actor": "a", "prev_hash": "0", "hash": "1",
            "event": {"type": "group.created"}})


# --- (5) the CLI prints the same document -------------------------------------------------------


def test_cli_prints_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asyncapi"]) == 0
    assert capsys.readouterr().out == asyncapi.render()


def test_cli_writes_the_document(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    assert main(["asyncapi", "--output", str(out)]) == 0
    assert out.read_text() == asyncapi.render()
