"""compose.yaml is valid Compose and only uses commands, flags, env vars and HTTP paths the code
really has; every service has a health check and a restart policy; every worker group gets an
init script. (No Docker here: this reads the file, it does not start it.)"""

from __future__ import annotations

import json
import re

import jsonschema
import yaml

from tests.unit.support import (
    PORT_VARS, ROOT, SHELLS, authorization_block, bash_syntax_ok, cli_invocations, compose,
    init_script_paths, parse_cli, read_by_code, runs, served_paths,
)


def _built(services: dict) -> dict:  # type: ignore[type-arg]
    return {name: s for name, s in services.items() if "build" in s}


def test_compose_validates_against_the_compose_spec_schema() -> None:
    schema = json.loads((ROOT / "tests" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose())  # its $schema URL lacks the "#"


def test_every_service_command_and_env_var_exists_in_the_code() -> None:
    for name, service in _built(compose()["services"]).items():
        if service.get("entrypoint"):  # a shell script calling the CLI (the setup service)
            assert service["entrypoint"][0] in SHELLS, name
            calls = cli_invocations("\n".join(service["command"]))
            assert calls, f"{name}: its script calls no getoperate command"
            for argv in calls:
                parse_cli(argv)
        else:
            parse_cli(service["command"])
        for var in service["environment"]:
            assert read_by_code(var), f"{name}: {var} is not read by the code"


def test_worker_groups_are_replicas_with_worker_group() -> None:
    services = compose()["services"]
    groups = {s["environment"]["WORKER_GROUP"]: s["deploy"]["replicas"]
              for s in services.values() if s.get("command") == ["worker"]}
    assert groups == {"default": 2, "native": 1, "gpu": 1}


def test_deploy_nats_conf_carries_the_same_authorization_as_up() -> None:
    from services.common.natsauth import config_block

    assert authorization_block((ROOT / "deploy" / "nats.conf").read_text()) == config_block()


def test_every_service_connects_as_its_own_nats_user() -> None:
    from services.common import natsauth

    services = compose()["services"]
    users = {name: s["environment"].get("NATS_USER") for name, s in services.items() if runs(s)}
    assert users == {"config": "config", "router": "router", "worker-default": "worker:default",
                     "worker-native": "worker:native", "worker-gpu": "worker:gpu"}
    for name, service in services.items():
        env = service.get("environment") or {}
        if runs(service) == "worker":
            assert env["NATS_USER"] == natsauth.worker_user(env["WORKER_GROUP"]), name
            var = natsauth.worker_password_env(env["WORKER_GROUP"])
        elif runs(service):
            var = f"NATS_{env['NATS_USER'].upper()}_PASSWORD"
        else:
            assert "NATS_PASSWORD" not in env, name
            continue
        # Required: a missing password stops `docker compose up` with the variable's name.
        assert env["NATS_PASSWORD"] == f"${{{var}:?set {var}}}", name


def test_every_service_has_a_restart_policy_and_long_running_ones_a_health_check() -> None:
    for name, service in compose()["services"].items():
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name
        if service.get("restart") == "on-failure":  # one-shot: done when it exits 0
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check["test"][0] == "CMD", name


def test_health_checks_ask_readyz_on_the_port_the_service_binds() -> None:
    paths = served_paths()
    assert {"/healthz", "/readyz", "/metrics"} <= paths
    for name, service in compose()["services"].items():
        role = runs(service)
        if role is None:
            continue
        probe = " ".join(service["healthcheck"]["test"])
        port, path = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", probe).groups()  # type: ignore[union-attr]
        assert path == "/readyz" and path in paths, name
        assert service["environment"][PORT_VARS[role]] == port, name
        # Bound on all of the container's addresses, or the port is unreachable from outside.
        assert service["environment"]["HTTP_HOST"] == "0.0.0.0", name


def test_services_start_after_what_they_need_is_healthy() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services and "healthcheck" in services[dep], (name, dep)
            assert cond["condition"] == "service_healthy", (name, dep)
    assert "config" in services["setup"]["depends_on"]
    for name, service in services.items():
        if runs(service) == "worker":
            assert {"nats", "config"} <= set(service["depends_on"]), name


def test_gpu_workers_reserve_a_gpu() -> None:
    gpu = compose()["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d.get("count", 0) >= 1 for d in devices)
    assert gpu.get("profiles") == ["gpu"]  # opt-in: hosts without a GPU still `up` the rest


def test_every_worker_group_gets_an_init_script_from_setup() -> None:
    doc = compose()
    setup = doc["services"]["setup"]
    mounted = {c["target"]: c["source"] for c in setup["configs"]}
    script = "\n".join(setup["command"])
    for path in init_script_paths(script):
        assert path in mounted, f"{path} is not mounted into the setup service"
        assert mounted[path] in doc["configs"]
    groups = {s["environment"]["WORKER_GROUP"] for s in doc["services"].values()
              if runs(s) == "worker"}
    with_script = {ns.name for ns in map(parse_cli, cli_invocations(script))  # type: ignore[attr-defined]
                   if getattr(ns, "init_script", None)}
    assert groups <= with_script
    for config in doc["configs"].values():
        assert "$" not in config["content"].replace("$$", ""), "compose would interpolate a $"
        bash_syntax_ok(config["content"])


def test_init_scripts_are_the_same_as_the_kubernetes_example() -> None:
    doc = compose()
    setup = doc["services"]["setup"]
    by_target = {c["target"]: doc["configs"][c["source"]]["content"] for c in setup["configs"]}
    manifest = ROOT / "deploy" / "kubernetes" / "manifests" / "50-setup.yaml"
    configmap = next(d for d in yaml.safe_load_all(manifest.read_text())
                     if d and d["kind"] == "ConfigMap")
    assert {f"/init/{k}": v for k, v in configmap["data"].items()} == by_target


def test_named_volumes_are_declared() -> None:
    doc = compose()
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in doc["volumes"], (name, source)
