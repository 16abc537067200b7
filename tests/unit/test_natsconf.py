"""nats-server's configuration has one source (services/common/natsconf.py): the deployment
files are what it renders, and every server `up` and the tests run (one node or a cluster)
follows GETOPERATE_NATS_SYNC and GETOPERATE_STORE_BYTES."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from services.common import natsconf, natsserver


def test_the_deployment_files_are_what_natsconf_renders() -> None:
    """Edit natsconf.py and run `python -m services.common.natsconf`, not the files."""
    assert natsconf.COMPOSE_FILE.read_text() == natsconf.compose()
    manifest = natsconf.KUBERNETES_FILE.read_text()
    assert natsconf.with_configmap(manifest, natsconf.kubernetes()) == manifest


def test_with_configmap_replaces_only_the_configmaps_text() -> None:
    manifest = "a: 1\ndata:\n  nats.conf: |\n    old\n---\nkind: Service\n"
    out = natsconf.with_configmap(manifest, "listen: x\n\njetstream {\n}\n")
    assert out == ("a: 1\ndata:\n  nats.conf: |\n    listen: x\n\n    jetstream {\n    }\n"
                   "---\nkind: Service\n")


@pytest.mark.parametrize("sync, line", [("always", "sync_interval: always"),
                                        ("1s", "sync_interval: 1s"), ("interval", None)])
def test_a_cluster_node_follows_getoperate_nats_sync(tmp_path: Path, monkeypatch, sync: str,
                                                     line: str | None) -> None:
    monkeypatch.setenv(natsserver.SYNC_ENV, sync)
    monkeypatch.setenv("GETOPERATE_STORE_BYTES", "1048576")
    cluster = natsserver.NatsCluster(tmp_path, size=3)
    text = cluster._conf(1).read_text()
    synced = re.findall(r"^\s*sync_interval: (\S+)$", text, re.M)
    assert synced == ([line.split(": ")[1]] if line else [])
    assert re.search(r"^\s*max_file_store: 1048576$", text, re.M)
    routes = re.findall(r"nats-route://127\.0\.0\.1:(\d+)", text)
    assert sorted(map(int, routes)) == sorted(r for i, r in enumerate(cluster.routes) if i != 1)


def test_a_single_server_and_a_cluster_node_share_every_setting(tmp_path: Path,
                                                                monkeypatch) -> None:
    monkeypatch.setenv(natsserver.SYNC_ENV, "200ms")
    one = natsserver.write_config(tmp_path / "one.conf", port=4999, store_dir=tmp_path / "js",
                                  sync_always=None).read_text()
    node = natsserver.NatsCluster(tmp_path / "c", size=2)._conf(0).read_text()

    def settings(text: str) -> set[str]:
        keep = ("max_payload", "sync_interval", "max_file_store")
        return {line.strip() for line in text.splitlines() if line.strip().startswith(keep)}
    assert settings(one) == settings(node) == {
        f"max_payload: {natsconf.MAX_PAYLOAD}", "sync_interval: 200ms",
        f"max_file_store: {natsserver.DEFAULT_STORE_BYTES}"}


def test_nats_server_accepts_a_rendered_cluster_node(tmp_path: Path) -> None:
    try:
        binary = natsserver.find_binary()
    except natsserver.NatsServerError:
        pytest.skip("no nats-server binary")
    conf = natsserver.NatsCluster(tmp_path, size=3)._conf(0)
    done = subprocess.run([binary, "-c", str(conf), "-t"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
