"""The docs' command blocks, run as written against a real deployment.

A block is run when its section is listed in RUNNABLE: every ```sh block of the section, and the
`$ ` commands of every ```console block (with their continuation lines and here-documents), in
one bash, with `getoperate` as the CLI of this checkout; every ```yaml / ```json block whose
first line names a file (`# pipeline.yaml`) is written first. A ```json block right after a
console block is the result the docs promise: the last `--wait` command's result must equal it.
What a section needs that the docs leave to the reader (a gpu worker for `--tag gpu`) is started
here. Sections not listed need what a test cannot have here (a public URL, a database of the
reader's): their languages have their own tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Iterator

import pytest

from services.worker.languages import registry
from tests.integration.conftest import Suite, running_suite
from tests.integration.harness import ROOT, cli, cli_env

# (document, section heading): what each needs started first (groups to serve its tags)
RUNNABLE = {
    ("docs/tags.md", "## Scripts and flows"): ["gpu"],
    ("docs/languages.md", "## bash"): [],
    ("docs/languages.md", "## python3"): [],
    ("docs/languages.md", "## deno"): [],
    ("docs/languages.md", "## go"): [],
    ("docs/languages.md", "## bun"): [],
}
_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def section(doc: str, heading: str) -> str:
    text = (ROOT / doc).read_text()
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end != -1 else None]


def blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(text)]


def console_commands(body: str) -> list[str]:
    """The `$ ` commands of a console block, each with its continuation lines (a trailing
    backslash) and here-document; the output lines shown between them are not commands."""
    lines = body.splitlines()
    commands: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.startswith("$ "):
            continue
        command = [line[2:]]
        while command[-1].endswith("\\") and i < len(lines):
            command.append(lines[i])
            i += 1
        heredoc = re.search(r"<<\s*'?(\w+)'?", command[0])
        if heredoc:
            while i < len(lines):
                command.append(lines[i])
                i += 1
                if command[-1] == heredoc.group(1):
                    break
        commands.append("\n".join(command))
    return commands


def last_result(output: str) -> object:
    """The result `run --wait` printed last (text output: JSON after `--- result ---`)."""
    _, marker, rest = output.rpartition("--- result ---\n")
    assert marker, f"no result printed:\n{output}"
    return json.loads(rest.split("\n--- ", 1)[0])


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("docs"), kill_extra=False, ready=("default",)) as s:
        yield s


@pytest.mark.parametrize(("doc", "heading"), sorted(RUNNABLE))
def test_a_docs_section_runs_as_written(suite: Suite, doc: str, heading: str) -> None:
    language = heading.removeprefix("## ")
    if doc == "docs/languages.md" and language not in registry().found \
            and not os.environ.get("GETOPERATE_REQUIRE_LANGUAGES"):
        pytest.skip(f"no {language} runtime here (.ci/run installs it)")
    for group in RUNNABLE[doc, heading]:  # the workers the section's tags need
        cli("group", "set", group, "--tags", group, cwd=suite.root, check=True)
        suite.worker(group, WORKER_GROUP=group).wait_for('"worker_ready"', timeout=60)
    shell = [f'getoperate() {{ "{sys.executable}" -m cli.main "$@"; }}', "set -e"]
    expected: object = None
    previous = ""
    for kind, body in blocks(section(doc, heading)):
        first = body.splitlines()[0] if body.strip() else ""
        if kind in ("yaml", "json") and (named := re.match(r"#\s*(\S+\.(?:ya?ml|json))", first)):
            (suite.root / named.group(1)).write_text(body)
        elif kind == "json" and previous == "console":
            expected = json.loads(body)
        elif kind == "sh":
            shell.append(body)
        elif kind == "console":
            shell += console_commands(body)
        previous = kind
    done = subprocess.run(["bash", "-c", "\n".join(shell)], cwd=suite.root, env=cli_env(),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{doc} {heading}:\n{done.stdout}\n{done.stderr}"
    if expected is not None:
        assert last_result(done.stdout) == expected, done.stdout
    if (doc, heading) == ("docs/tags.md", "## Scripts and flows"):
        assert '"result: 42"' in done.stdout, done.stdout  # what the doc says the flow returns
