"""compose.yaml is valid Compose and only uses commands, flags, env vars and HTTP paths the code
really has; every service has a health check and a restart policy; every worker group gets an
init script. (No Docker here: this reads the file, it does not start it.)"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
CODE = "\n".join(p.read_text() for p in ROOT.glob("*/**/*.py")
                 if "tests" not in p.parts and "build" not in p.parts)
# The subcommands that run a service (the rest are CLI commands talking to one).
SERVICE_COMMANDS = {"config", "router", "worker"}
# Which env var holds the HTTP port of each service's probes and /metrics.
PORT_VARS = {"config": "CONFIG_PORT", "router": "ROUTER_PORT", "worker": "METRICS_PORT"}
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def read_by_code(var: str) -> bool:
    """The code reads env vars as quoted strings: os.environ.get("X"), env("X", ...)."""
    return re.search(rf"[\"']{re.escape(var)}[\"']", CODE) is not None


def served_paths() -> set[str]:
    """GET paths the services' HTTP apps register (aiohttp add_get)."""
    code = "\n".join(p.read_text() for p in (ROOT / "services").rglob("*.py"))
    return set(re.findall(r"add_get\(\s*[\"'](/[^\"']*)[\"']", code))


def parse_cli(argv: list[str]) -> object:
    """Parse argv with the real CLI parser: unknown commands or flags fail the test."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`getoperate {shlex.join(argv)}` is not a valid command") from exc


def cli_invocations(script: str) -> list[list[str]]:
    """Every `getoperate ...` call of a shell script (lines split at ||, && and ;), without
    its redirections, as argv lists."""
    calls = []
    for line in script.splitlines():
        for part in re.split(r"\|\||&&|;", line):
            words = shlex.split(part, comments=True)
            if words and words[0] == "getoperate":
                calls.append([w for w in words[1:] if not re.fullmatch(r"\d*>.*|<.*", w)])
    return calls


def init_script_paths(script: str) -> set[str]:
    """Files given to `group set --init-script` in a shell script."""
    paths = set()
    for argv in cli_invocations(script):
        ns = parse_cli(argv)
        if getattr(ns, "init_script", None):
            paths.add(ns.init_script)  # type: ignore[attr-defined]
    return paths


def bash_syntax_ok(script: str) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr


def authorization_block(conf: str) -> str:
    """A nats.conf's one `authorization { ... }` block, from its first line to its closing brace
    (the only brace at the start of a line in it), checked to be the only auth setting."""
    settings = re.findall(r"^\s*(authorization|accounts|no_auth_user|operator|resolver)\b",
                          conf, re.MULTILINE)
    assert settings == ["authorization"], settings
    block = re.search(r"^authorization \{\n.*?^\}", conf, re.MULTILINE | re.DOTALL)
    assert block is not None, "no authorization block at the start of a line"
    return block.group(0)


def _built(services: dict) -> dict:  # type: ignore[type-arg]
    return {name: s for name, s in services.items() if "build" in s}


def _runs(service: dict) -> str | None:  # type: ignore[type-arg]
    """The service subcommand a compose service runs (config, router, worker), if any."""
    command = service.get("command") or []
    if "entrypoint" not in service and command and command[0] in SERVICE_COMMANDS:
        return str(command[0])
    return None


def test_compose_validates_against_the_compose_spec_schema() -> None:
    schema = json.loads((ROOT / "tests" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(_compose())  # its $schema URL lacks the "#"


def test_every_service_command_and_env_var_exists_in_the_code() -> None:
    for name, service in _built(_compose()["services"]).items():
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
    services = _compose()["services"]
    groups = {s["environment"]["WORKER_GROUP"]: s["deploy"]["replicas"]
              for s in services.values() if s.get("command") == ["worker"]}
    assert groups == {"default": 2, "native": 1, "gpu": 1}


def test_deploy_nats_conf_carries_the_same_authorization_as_up() -> None:
    from services.common.natsauth import config_block

    assert authorization_block((ROOT / "deploy" / "nats.conf").read_text()) == config_block()


def test_every_service_connects_as_its_own_nats_user() -> None:
    from services.common import natsauth

    services = _compose()["services"]
    users = {name: s["environment"].get("NATS_USER") for name, s in services.items() if _runs(s)}
    assert users == {"config": "config", "router": "router", "worker-default": "worker:default",
                     "worker-native": "worker:native", "worker-gpu": "worker:gpu"}
    for name, service in services.items():
        env = service.get("environment") or {}
        if _runs(service) == "worker":
            assert env["NATS_USER"] == natsauth.worker_user(env["WORKER_GROUP"]), name
            var = natsauth.worker_password_env(env["WORKER_GROUP"])
        elif _runs(service):
            var = f"NATS_{env['NATS_USER'].upper()}_PASSWORD"
        else:
            assert "NATS_PASSWORD" not in env, name
            continue
        # Required: a missing password stops `docker compose up` with the variable's name.
        assert env["NATS_PASSWORD"] == f"${{{var}:?set {var}}}", name


def test_every_service_has_a_restart_policy_and_long_running_ones_a_health_check() -> None:
    for name, service in _compose()["services"].items():
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name
        if service.get("restart") == "on-failure":  # one-shot: done when it exits 0
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check["test"][0] == "CMD", name


def test_health_checks_ask_readyz_on_the_port_the_service_binds() -> None:
    paths = served_paths()
    assert {"/healthz", "/readyz", "/metrics"} <= paths
    for name, service in _compose()["services"].items():
        role = _runs(service)
        if role is None:
            continue
        probe = " ".join(service["healthcheck"]["test"])
        port, path = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", probe).groups()  # type: ignore[union-attr]
        assert path == "/readyz" and path in paths, name
        assert service["environment"][PORT_VARS[role]] == port, name
        # Bound on all of the container's addresses, or the port is unreachable from outside.
        assert service["environment"]["HTTP_HOST"] == "0.0.0.0", name


def test_services_start_after_what_they_need_is_healthy() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services and "healthcheck" in services[dep], (name, dep)
            assert cond["condition"] == "service_healthy", (name, dep)
    assert "config" in services["setup"]["depends_on"]
    for name, service in services.items():
        if _runs(service) == "worker":
            assert {"nats", "config"} <= set(service["depends_on"]), name


def test_gpu_workers_reserve_a_gpu() -> None:
    gpu = _compose()["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d.get("count", 0) >= 1 for d in devices)
    assert gpu.get("profiles") == ["gpu"]  # opt-in: hosts without a GPU still `up` the rest


def test_every_worker_group_gets_an_init_script_from_setup() -> None:
    compose = _compose()
    setup = compose["services"]["setup"]
    mounted = {c["target"]: c["source"] for c in setup["configs"]}
    script = "\n".join(setup["command"])
    for path in init_script_paths(script):
        assert path in mounted, f"{path} is not mounted into the setup service"
        assert mounted[path] in compose["configs"]
    groups = {s["environment"]["WORKER_GROUP"] for s in compose["services"].values()
              if _runs(s) == "worker"}
    with_script = {ns.name for ns in map(parse_cli, cli_invocations(script))  # type: ignore[attr-defined]
                   if getattr(ns, "init_script", None)}
    assert groups <= with_script
    for config in compose["configs"].values():
        assert "$" not in config["content"].replace("$$", ""), "compose would interpolate a $"
        bash_syntax_ok(config["content"])


def test_init_scripts_are_the_same_as_the_kubernetes_example() -> None:
    compose = _compose()
    setup = compose["services"]["setup"]
    by_target = {c["target"]: compose["configs"][c["source"]]["content"] for c in setup["configs"]}
    manifest = ROOT / "deploy" / "kubernetes" / "manifests" / "50-setup.yaml"
    configmap = next(d for d in yaml.safe_load_all(manifest.read_text())
                     if d and d["kind"] == "ConfigMap")
    assert {f"/init/{k}": v for k, v in configmap["data"].items()} == by_target


def test_named_volumes_are_declared() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], (name, source)
