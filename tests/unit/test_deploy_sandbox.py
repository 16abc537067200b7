"""The shipped deployments run jobs in the bubblewrap sandbox: the image has every program of the
worker's exec chain (services/worker/sandbox.py), every worker of compose.yaml and of the
Kubernetes example sets JOB_SANDBOX=bwrap and gets exactly the container options bwrap needs
(docs/production.md, "Sandboxed workers in containers"), and a worker where bwrap cannot run
refuses to start with one line naming JOB_SANDBOX. Files are read, not run: no Docker engine or
cluster here (tests/unit/test_kubernetes.py validates the manifests against the API schemas)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.support import ROOT, compose, runs

K8S = ROOT / "deploy" / "kubernetes" / "manifests"
# Debian package of each program the exec chain starts, and whether Debian marks it Essential
# (then every image has it, python:*-slim included). A new program in the chain fails the test
# below until it is added here and, unless Essential, installed by the Dockerfile.
PROVIDERS = {"sh": ("dash", True), "prlimit": ("util-linux", True),
             "setpriv": ("util-linux", True), "bwrap": ("bubblewrap", False)}
# What compose workers need for unprivileged bwrap, and what they keep (compose.yaml says why).
COMPOSE_SECURITY_OPT = {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined",
                        "no-new-privileges=true"}


def _dockerfile_runs() -> list[str]:
    """The Dockerfile's RUN instructions, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return re.findall(r"^RUN\s+(.*)$", text, re.M)


def _chain_programs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The programs of the full exec chain: that of a root worker (setpriv included) whose runs
    join cgroups (the shell stage)."""
    from services.worker import sandbox
    from shared.events import JobLimits

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    policy = sandbox.Policy(kind="bwrap", network=False, limits=JobLimits(), uid=sandbox.JOB_UID)
    argv = sandbox.command(policy, ["the-runtime"], job_dir=None, ro=(),
                           procs_files=("/sys/fs/cgroup/run/cgroup.procs",))
    # Each stage ends its options with `--`; the next word is the next program.
    programs = [argv[0]] + [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == "--"]
    assert programs[-1] == "the-runtime"
    return [Path(p).name for p in programs[:-1]]


def test_the_image_installs_every_program_of_the_workers_exec_chain(
        monkeypatch: pytest.MonkeyPatch) -> None:
    programs = _chain_programs(monkeypatch)
    assert {"sh", "prlimit", "bwrap", "setpriv"} <= set(programs), programs
    installed = set()
    for run in _dockerfile_runs():
        for match in re.finditer(r"apt-get install ((?:-\S+\s+)*)([\w.+\s-]+?)(?:&&|$)", run):
            flags, packages = match.groups()
            # Lean: nothing the package merely recommends, and no apt lists left in the layer.
            assert "--no-install-recommends" in flags and "-y" in flags, run
            assert "apt-get update" in run and "rm -rf /var/lib/apt/lists/*" in run, run
            installed.update(packages.split())
    for program in programs:
        assert program in PROVIDERS, f"{program}: which Debian package has it? (add it here)"
        package, essential = PROVIDERS[program]
        assert essential or package in installed, f"the Dockerfile must install {package}"
    # The package versions this relies on are Debian 12's: the base image says so.
    assert re.search(r"^FROM python:3\.11-slim-bookworm\s*$", (ROOT / "Dockerfile").read_text(),
                     re.M)


def test_bubblewrap_is_installed_before_the_image_drops_to_its_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.index("bubblewrap") < [m.start() for m in re.finditer(r"^USER ", text, re.M)][-1]


def _compose_workers() -> dict[str, dict[str, Any]]:
    workers = {n: s for n, s in compose()["services"].items() if runs(s) == "worker"}
    assert set(workers) == {"worker-default", "worker-native", "worker-gpu"}
    return workers


def test_compose_workers_run_the_sandbox_with_what_bwrap_needs() -> None:
    for name, service in _compose_workers().items():
        assert service["environment"]["JOB_SANDBOX"] == "bwrap", name
        assert set(service["security_opt"]) == COMPOSE_SECURITY_OPT, name
        assert service["cap_drop"] == ["ALL"] and not service.get("cap_add"), name
        assert not service.get("privileged") and not service.get("user"), name
    # Nothing else gets the relaxed profiles.
    for name, service in compose()["services"].items():
        if runs(service) != "worker":
            assert "security_opt" not in service and not service.get("privileged"), name


def test_compose_is_new_enough_to_apply_systempaths_unconfined() -> None:
    """`systempaths=unconfined` is turned into empty MaskedPaths by Compose itself (since 2.15.0),
    not by the engine: an older Compose would pass it on and the engine would refuse it."""
    header = (ROOT / "compose.yaml").read_text()
    found = re.search(r"Needs Docker Compose (\d+)\.(\d+)\.(\d+) or later", header)
    assert found and tuple(map(int, found.groups())) >= (2, 15, 0)


def _k8s_workers() -> list[dict[str, Any]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if obj and obj["kind"] == "Deployment" and any(
                    (c.get("args") or [None])[0] == "worker"
                    for c in obj["spec"]["template"]["spec"]["containers"]):
                out.append(obj)
    assert {w["metadata"]["name"] for w in out} == {"worker-default", "worker-native",
                                                     "worker-gpu"}
    return out


def test_kubernetes_workers_run_the_sandbox_with_what_bwrap_needs() -> None:
    for workload in _k8s_workers():
        name, pod = workload["metadata"]["name"], workload["spec"]["template"]["spec"]
        assert workload["metadata"]["namespace"] == "getoperate-workers", name
        assert pod["hostUsers"] is False, name  # a user namespace of its own
        assert pod["securityContext"]["seccompProfile"] == {"type": "Unconfined"}, name
        assert pod["securityContext"]["appArmorProfile"] == {"type": "Unconfined"}, name
        for container in pod["containers"]:
            env = {v["name"]: v.get("value") for v in container["env"]}
            assert env["JOB_SANDBOX"] == "bwrap", name
            sc = container["securityContext"]
            assert sc["procMount"] == "Unmasked", name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged"), name


def test_a_worker_where_bwrap_cannot_run_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    """What a container without the options above shows (docs/production.md): bwrap fails
    there as it does in Docker with masked /proc paths, and the worker exits before NATS."""
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"bwrap: Can't mount proc on /newroot/proc:"
                    " Operation not permitted\" >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(ROOT), "JOB_SANDBOX": "bwrap", "GETOPERATE_DATA_DIR": str(tmp_path),
           "NATS_URL": "nats://127.0.0.1:1", "WORKER_DIR": str(tmp_path / "work")}
    done = subprocess.run([sys.executable, "-m", "cli.main", "worker"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("getoperate: error: JOB_SANDBOX=bwrap"), lines[0]
    assert "Can't mount proc" in lines[0] and "JOB_SANDBOX=none" in lines[0]
