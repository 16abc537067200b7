"""A package adds a language through the entry-point group `getoperate.languages`.

The test builds a real wheel of a small plugin (language `sh`: POSIX sh, the last line of stdout
is the result), installs it with pip into a folder on the worker's PYTHONPATH, and runs a job
through it; a second entry point that fails to import costs only its own language.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from cli.client import CliError
from tests.integration.conftest import Suite, running_suite
from tests.integration.harness import ROOT, wait_until

PLUGIN = '''
"""getoperate language plugin: POSIX sh (dash)."""
import shutil

from services.worker.languages import Launch


class Sh:
    name = "sh"
    how_to_get = "dash (Debian package dash)"

    def find_runtime(self):
        return shutil.which("dash") or shutil.which("sh")

    async def launch(self, job, ctx):
        args = "".join(f"{k}={v}\\n" for k, v in job.args.items())
        return Launch(argv=[ctx.runtime, "-c", "set -a; . ./args.env; set +a; . ./script.sh"],
                      files={"script.sh": job.code.encode(), "args.env": args.encode()},
                      result="stdout")
'''


def _wheel(folder: Path) -> Path:
    dist = "getoperate_sh-1.0.dist-info"
    files = {
        "getoperate_sh.py": PLUGIN,
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: getoperate-sh\nVersion: 1.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[getoperate.languages]\nsh = getoperate_sh:Sh\n"
                                    "broken = getoperate_sh_missing:Nothing\n",
        f"{dist}/RECORD": "",
    }
    path = folder / "getoperate_sh-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("suite"), ready=("default",)) as s:
        yield s


def test_an_installed_plugin_adds_a_language(suite: Suite, tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", "--target", str(target), str(wheel)], check=True,
                   capture_output=True)
    # Without the plugin: the job names what to install.
    plain = suite.api.job(suite.api.submit('echo "hi $who"', language="sh", tag="bash",
                                           args={"who": "x"})["id"])
    assert plain["status"] == "failure", plain
    assert "no executor for language 'sh'" in plain["error"]
    assert "getoperate.languages" in plain["error"], plain["error"]
    with pytest.raises(CliError) as refused:
        suite.api.submit("echo", language="sh", tag="sh-jobs", require_worker=True)
    assert "409" in refused.value.message

    worker = suite.worker("plugin", WORKER_TAGS="sh-jobs", PYTHONPATH=f"{target}:{ROOT}")
    worker.wait_for('"worker_ready"', timeout=60)
    assert '"language_plugin_failed"' in worker.output() and "broken" in worker.output()
    mine = wait_until(lambda: [w for w in suite.api.workers() if w["tags"] == ["sh-jobs"]],
                      "the plugin worker's heartbeat", 30)
    assert "sh" in mine[0]["runtimes"] and "broken" not in mine[0]["runtimes"], mine
    answer = suite.api.submit('echo "log line"\necho "hi $who"', language="sh", tag="sh-jobs",
                              args={"who": "plugin"}, require_worker=True)
    assert answer["live_workers"] == 1 and answer["warning"] is None, answer
    view = suite.api.job(answer["id"])
    assert view["status"] == "success" and view["result"] == "hi plugin", view
    assert view["logs"].startswith("log line"), view
    worker.stop()
