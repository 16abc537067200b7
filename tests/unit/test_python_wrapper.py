"""The cold python3 wrapper (services/worker/languages/python.py WRAPPER), run as a worker runs
it, without the sandbox: what it writes back is what json.dumps(default=str) would, with and
without json's C core, and it imports none of the modules it no longer needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.worker.languages.python import WRAPPER

RESULT = ("{'text': 'é\\n\"', 'nums': [1, 2.5, -0.0, 10**30, float('nan'), float('inf')],"
          " 'none': None, 'flag': True, 'set': {3}, 'nested': [[{}]]}")


def _run(tmp_path: Path, script: str, args: dict, prelude: str = "") -> tuple[dict, str]:
    (tmp_path / "script.py").write_text(script)
    (tmp_path / "args.json").write_text(json.dumps(args))
    read, write = os.pipe()
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", prelude + WRAPPER, str(write)],
                          cwd=tmp_path, pass_fds=(write,), capture_output=True, text=True,
                          timeout=30)
    os.close(write)
    with os.fdopen(read) as fh:
        return json.loads(fh.read()), proc.stderr


@pytest.mark.parametrize("prelude", ["", "import sys; sys.modules['_json'] = None\n"],
                         ids=["json's C core", "json itself"])
def test_results_are_written_as_json_dumps_would(tmp_path: Path, prelude: str) -> None:
    script = f"def main(x, previous_result=None):\n    return {RESULT}\n"
    reply, _ = _run(tmp_path, script, {"x": 1}, prelude)
    expected = json.loads(json.dumps({"ok": True, "result": eval(RESULT)}, default=str))
    assert json.dumps(reply, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_arguments_and_previous_result(tmp_path: Path) -> None:
    args = {"x": 2, "previous_result": [1]}
    assert _run(tmp_path, "def main(x):\n    return x\n", args)[0]["result"] == 2
    assert _run(tmp_path, "def main(x, **kw):\n    return kw\n", args)[0]["result"] == {
        "previous_result": [1]}
    assert _run(tmp_path, "def main(x, *, previous_result):\n    return previous_result\n",
                args)[0]["result"] == [1]


def test_a_failure_names_the_error_and_prints_its_traceback(tmp_path: Path) -> None:
    reply, stderr = _run(tmp_path, "def main():\n    raise ValueError('boom')\n", {})
    assert reply == {"ok": False, "error": "ValueError: boom"}
    assert 'File "script.py", line 2, in main' in stderr


def test_the_script_is_a_module_that_pickles_its_own_classes(tmp_path: Path) -> None:
    script = ("import dataclasses, pickle\n@dataclasses.dataclass\nclass P:\n    x: int\n"
              "def main():\n    return pickle.loads(pickle.dumps(P(3))).x\n")
    assert _run(tmp_path, script, {})[0] == {"ok": True, "result": 3}


def test_the_wrapper_imports_no_heavy_module(tmp_path: Path) -> None:
    script = ("import sys\ndef main():\n    return sorted(m for m in"
              " ('json', 're', 'inspect', 'importlib.util', 'traceback') if m in sys.modules)\n")
    assert _run(tmp_path, script, {})[0]["result"] == []
