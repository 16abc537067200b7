"""What several unit test modules share: the deployment files (compose.yaml and what its
services run, checked against the real CLI and code) and a config log built the way the
services build it (command functions -> events -> sealed records -> fold)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from cli.main import build_parser
from shared.events import GENESIS_HASH, ConfigEvent, FlowStep, Recorded, seal
from shared.state import (
    ConfigState,
    deploy_flow,
    deploy_script,
    fold,
    set_assignable_tag,
    set_group,
)

ROOT = Path(__file__).resolve().parents[2]
CODE = "\n".join(p.read_text() for p in ROOT.glob("*/**/*.py")
                 if "tests" not in p.parts and "build" not in p.parts)
# The subcommands that run a service (the rest are CLI commands talking to one).
SERVICE_COMMANDS = {"config", "router", "worker"}
# Which env var holds the HTTP port of each service's probes and /metrics.
PORT_VARS = {"config": "CONFIG_PORT", "router": "ROUTER_PORT", "worker": "METRICS_PORT"}
SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash"}


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def read_by_code(var: str) -> bool:
    """The code reads env vars as quoted strings: os.environ.get("X"), env("X", ...)."""
    return re.search(rf"[\"']{re.escape(var)}[\"']", CODE) is not None


def served_paths() -> set[str]:
    """GET paths the services serve: their operation tables, which are their routes
    (services/common/openapi.py: mount), and /openapi.json."""
    from services.config.app import OPS as CONFIG_OPS
    from services.router.app import OPS as ROUTER_OPS
    from services.worker.main import PROBE_OPS

    return {op.path for op in (*CONFIG_OPS, *ROUTER_OPS, *PROBE_OPS)
            if op.method == "GET"} | {"/openapi.json"}


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


def runs(service: dict) -> str | None:  # type: ignore[type-arg]
    """The service subcommand a compose service runs (config, router, worker), if any."""
    command = service.get("command") or []
    if "entrypoint" not in service and command and command[0] in SERVICE_COMMANDS:
        return str(command[0])
    return None


# --- a config log -------------------------------------------------------------------------------

TIME = "2024-01-01T00:00:00Z"
WS = "dev"


class Log:
    """Command results sealed with consecutive sequences and chained hashes, folded into state."""

    def __init__(self) -> None:
        self.records: list[Recorded] = []
        self.state = ConfigState()

    def append(self, events: Sequence[ConfigEvent]) -> None:
        prev = self.records[-1].hash if self.records else GENESIS_HASH
        recs: list[Recorded] = []
        for i, event in enumerate(events):
            seq = self.state.seq + 1 + i
            rec = seal(prev_hash=prev, seq=seq, id=f"ev-{seq}", time=TIME, actor="test",
                       reason=None, event=event)
            recs.append(rec)
            prev = rec.hash
        self.state = fold(recs, self.state)
        self.records += recs

    # small conveniences over the command functions
    def assignable(self, *specs: str) -> Log:
        for spec in specs:
            self.append(set_assignable_tag(self.state, spec))
        return self

    def script(self, path: str, *, workspace: str = WS, language: str = "python3",
               tag: str | None = None, content: str = "print(1)") -> Log:
        self.append(deploy_script(self.state, workspace, path, language=language, content=content,
                                  tag=tag))
        return self

    def flow(self, path: str, steps: Sequence[FlowStep], *, workspace: str = WS,
             tag: str | None = None, preserve: bool = False) -> Log:
        self.append(deploy_flow(self.state, workspace, path, steps=list(steps), tag=tag,
                                preserve_step_tags=preserve))
        return self

    def dedicate(self, group: str, *targets: str) -> Log:
        self.append(set_group(self.state, group, dedicated=list(targets)))
        return self
