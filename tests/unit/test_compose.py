"""compose.yaml is valid Compose and only uses commands and env vars the code really has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml

from cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_validates_against_the_compose_spec_schema() -> None:
    schema = json.loads((ROOT / "tests" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(_compose())  # its $schema URL lacks the "#"


def test_every_service_command_and_env_var_exists_in_the_code() -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    code = "\n".join(p.read_text() for p in ROOT.glob("*/**/*.py") if "tests" not in p.parts)
    for name, service in _compose()["services"].items():
        if "build" not in service:
            continue
        assert service["command"][0] in commands, name
        for var in service["environment"]:
            assert re.search(rf"[\"']{var}[\"']", code), f"{name}: {var} is not read by the code"


def test_worker_groups_are_replicas_with_worker_group() -> None:
    services = _compose()["services"]
    groups = {s["environment"]["WORKER_GROUP"]: s["deploy"]["replicas"]
              for s in services.values() if s.get("command") == ["worker"]}
    assert groups == {"default": 2, "native": 1, "gpu": 1}


def test_deploy_nats_conf_carries_the_same_permissions_as_up() -> None:
    from services.common.natsauth import config_block

    assert config_block() in (ROOT / "deploy" / "nats.conf").read_text()


def test_every_service_connects_as_its_own_nats_user() -> None:
    services = _compose()["services"]
    users = {name: s["environment"].get("NATS_USER") for name, s in services.items() if "build" in s}
    assert users == {"config": "config", "router": "router", "worker-default": "worker",
                     "worker-native": "worker", "worker-gpu": "worker"}
