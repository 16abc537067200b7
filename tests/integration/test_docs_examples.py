"""Every command block of README.md and docs/*.md, run as written against a real deployment.

PYTEST_DONT_REWRITE: the checks word their own failures.

Command blocks are ```sh, ```bash, ```shell and ```python blocks (bash runs the shell ones, python3
the python ones) and the `$ ` commands of ```console blocks (with their continuation lines,
multi-line strings and here-documents; the other lines are the output the docs show). An unlabeled
block fails the test: label it (```text for output, a diagram or a config file). Other blocks are
not commands: a ```yaml or ```json block whose first line names a file (`# pipeline.yaml`) is
written to that file; a ```json or ```text block right after a command block (blank lines only
between) is what that block prints, or after a ```console block the result of its last job.

Each document runs against a `getoperate up` in a temp folder: its own where its examples show a
fresh log's sequence numbers or break the deployment (OWN_DEPLOYMENT), else one shared by the
others. Its blocks run in document order in one bash, so variables, files and background workers
carry over, and every command must exit 0; a document's run reports all its problems at once.
A block that cannot run here is marked right above it, with the reason:
`<!-- docs-test: skip (needs Docker) -->`. The test refuses to run an unmarked block that needs
what a test must not touch (NOT_HERE: Docker, Kubernetes, sudo, package installs, an editor) and
fails on a command that is not installed, so no block is left out silently. It prints, per
document, how many blocks ran and which were skipped, and why. A block whose jobs need a runtime
this machine lacks is skipped like the language tests (`why_not_here`).

What the docs leave to the reader, filled in here, in one place each:
- placeholders (`substitutions`): 127.0.0.1:4222, :8001 and :8002 become the deployment's ports,
  /home/me/demo its folder, `PASSWORD` in a NATS URL the admin's password from up's credentials
  file, which the shell variable $PASSWORD holds too;
- values only a real run knows (VOLATILE, and keys ending in `_at`: ids, tokens, worker names,
  times, hashes): a value the docs show there is matched by its kind only. An id, token or worker
  name the docs show is remembered with the real one (ALIASED), which replaces it in every later
  command and expected output: `curl .../jobs/<the id the docs show>` reads the job submitted
  above. A block of variable assignments only (http-api.md's `TOKEN=`, `AUTH=`, `WS=`) runs
  again before each later block, so it picks up what was learned since. A worker's
  `current_job` (RACY) is not compared: its heartbeat may still name a job that just ended;
- files the docs assume exist (FILES), and workers for the tags a section uses (WORKERS);
- commands that run until stopped: `getoperate up` is the deployment's own (the output the docs
  show must match its output); `getoperate worker` and `--follow` run in the background once
  they show life, and stop with the document's bash.

Expected output: JSON (a ```json block, or console output starting with `{` or `[`) must equal
what ran, key for key, except where the docs elide with `...` (`{"id": "...", ..., ...}`: these
keys and more). Text must appear line by line, in order, among the lines printed; `...` matches
anything, runs of spaces any spacing, and times, durations, ids and `myhost` worker names match
their kind (TEXT_KINDS). Console lines starting with `#` are comments.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.worker.languages import registry
from tests.integration.conftest import Suite, running_suite
from tests.integration.harness import HAS_SANDBOX, ROOT, Proc, cli, cli_env

DOCS = ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))
SHELL = {"sh", "bash", "shell"}
COMMANDS = SHELL | {"console", "python"}
# What a test must never run (it changes this machine, or needs what a test cannot have).
NOT_HERE = re.compile(r"(^|[\s;&|(])(sudo|apt-get|apt|dnf|docker|kubectl|systemctl|open|"
                      r"\$EDITOR)\s|pip3? install|-m pytest|-m bench\b")
LONG_RUNNING = [(re.compile(r"\bgetoperate\s+worker\b"), '"worker_ready"'),
                (re.compile(r"\s--follow\b"), "")]  # what each prints once it is alive
VOLATILE = {"id", "job_id", "token", "worker", "time", "ts", "duration_ms", "hash", "prev_hash",
            "token_hash", "hostname", "pid", "jobs_done", "runtimes", "sandbox_note"}  # and *_at
if not HAS_SANDBOX:  # the docs show bubblewrap's workers; here they say why they have none
    VOLATILE.add("sandbox")
ALIASED = {"id", "job_id", "token", "worker"}
RACY = {"current_job"}  # a heartbeat's, which may still name a job that has just ended
TEXT_KINDS = [  # (what the docs show, the regex it stands for), first match wins
    (r"\.\.\.", r".*?"),
    (_TIME := r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?Z?", _TIME),
    (r"[\w-]*myhost[\w-]*", r"\S+"),
    (r"\b[0-9a-f]{8,}\b", r"[0-9a-f]+"),
    (r"\b\d+(?:\.\d+)? ms\b", r"[\d.]+ ms"),
    (r"\b\d+s ago\b", r"\d+s ago"),
    (r" {2,}", r"\s+"),
    (r"\bbwrap\b", "bwrap" if HAS_SANDBOX else r"(?:none|NONE \(see above\))"),
]
_TEXT_KIND = re.compile("|".join(f"({p})" for p, _ in TEXT_KINDS))
FILES = {  # what a document's commands read that the reader is assumed to have
    "README.md": {
        "install-drivers.sh": "echo drivers installed\n",
        "train.py": "def main():\n    return 'trained'\n",
        "double.py": "def main(n):\n    return n * 2\n",
        "pipeline.yaml": "docs/tags.md",  # the file that document shows
    },
    "docs/languages.md": {
        "slugify.py": "def main(text):\n    return text.lower().replace(' ', '-')\n",
    },
}
WORKERS = {("docs/tags.md", "## Scripts and flows"): ["gpu"]}  # groups served before a section
# Documents whose examples show a fresh log's sequence numbers, or that break the deployment
# (production.md purges GO_CONFIG), get a `getoperate up` of their own; the others share one.
OWN_DEPLOYMENT = {"README.md", "docs/history.md", "docs/http-api.md", "docs/production.md"}
# Documents this test may not edit, whose blocks wait for their owners' skip markers.
AWAITING_MARKERS: dict[str, str] = {}  # a document whose owner has yet to mark a block


@dataclass
class Block:
    doc: str
    line: int
    kind: str
    body: str
    section: str
    skip: str | None  # the marker's reason
    adjacent: bool  # only blank lines between the previous block and this one


def blocks(doc: str) -> list[Block]:
    """The fenced blocks of `doc`, in order, with their section and skip marker."""
    lines = (ROOT / doc).read_text().splitlines()
    out: list[Block] = []
    section, i, last_end = "", 0, -2
    while i < len(lines):
        fence = re.match(r"( *)```(\S*)\s*$", lines[i])
        if lines[i].startswith("## "):
            section = lines[i]
        if not fence:
            i += 1
            continue
        indent, kind, start = len(fence.group(1)), fence.group(2), i
        i += 1
        body: list[str] = []
        while not re.match(r" *```\s*$", lines[i]):
            body.append(lines[i][indent:])
            i += 1
        above = next((s.strip() for s in reversed(lines[:start]) if s.strip()), "")
        marker = re.fullmatch(r"<!--\s*docs-test:(.*)-->", above)
        skip = None
        if marker:
            reason = re.fullmatch(r"\s*skip\s*\((.+)\)\s*", marker.group(1))
            assert reason, f"{doc}:{start}: unknown marker {above!r} (skip (reason) only)"
            skip = reason.group(1)
        adjacent = all(not s.strip() for s in lines[last_end + 1:start])
        out.append(Block(doc, start + 1, kind, "\n".join(body) + "\n", section, skip, adjacent))
        last_end = i
        i += 1
    return out


def _complete(text: str) -> bool:
    if text.rstrip().endswith("\\"):
        return False
    for delimiter in re.findall(r"<<-?\s*['\"]?(\w+)['\"]?", text):
        if not re.search(rf"^\s*{delimiter}\s*$", text, re.MULTILINE):
            return False
    syntax = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True, check=False)
    return syntax.returncode == 0


@dataclass
class Command:
    text: str
    shown: list[str] = field(default_factory=list)  # the output the docs show (console)


def commands(block: Block) -> list[Command]:
    """A shell or console block as whole commands (continuations, quotes, here-documents)."""
    out: list[Command] = []
    lines = block.body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if block.kind == "console":
            if not line.startswith("$ "):
                if out and line.strip() and not line.startswith("#"):
                    out[-1].shown.append(line)
                continue
            line = line[2:]
        elif not line.strip() or line.lstrip().startswith("#"):
            continue
        text = [line]
        while not _complete("\n".join(text)):
            assert i < len(lines), f"{block.doc}:{block.line}: command never ends: {text[0]!r}"
            text.append(lines[i])
            i += 1
        out.append(Command("\n".join(text)))
    return out


def _assignments_only(block: Block) -> bool:
    return block.kind in SHELL and all(
        re.match(r"\w+=(\"[^\"]*\"|'[^']*'|\$\([^)]*\)|\S*)\s*(#.*)?$", c.text)
        for c in commands(block))


# -- expected output ------------------------------------------------------------------------

class Learned:
    """Substitutions (placeholders -> this deployment) and aliases learned from real output."""

    def __init__(self, substitutions: dict[str, str]):
        self.map = dict(substitutions)

    def apply(self, text: str) -> str:
        for shown in sorted(self.map, key=len, reverse=True):
            text = text.replace(shown, self.map[shown])
        return text

    def learn(self, shown: Any, real: Any, where: str) -> None:
        if not isinstance(shown, str) or not isinstance(real, str) or "..." in shown:
            return
        if shown in self.map:
            assert self.map[shown] == real, \
                f"{where}: the docs' {shown!r} was {self.map[shown]!r} before, now {real!r}"
        elif len(shown) >= 8:
            self.map[shown] = real


def parse_shown_json(text: str) -> list[Any]:
    """The JSON values the docs show, one after another; `...` elides keys or items."""
    text = re.sub(r",\s*\.\.\.\s*}", ', "...": true}', text)
    text = re.sub(r"{\s*\.\.\.\s*,", '{"...": true,', text)
    text = re.sub(r",\s*\.\.\.\s*]", ', "..."]', text)
    return json_values(text)


def json_values(text: str) -> list[Any]:
    """The JSON values printed one after another (curl prints no newline between answers)."""
    decoder, values, i = json.JSONDecoder(), list[Any](), 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return values
        value, i = decoder.raw_decode(text, i)
        values.append(value)


def learn_aliases(shown: Any, real: Any, learned: Learned, where: str) -> None:
    if isinstance(shown, dict) and isinstance(real, dict):
        for key, value in shown.items():
            if key in ALIASED:
                learned.learn(value, real.get(key), f"{where}.{key}")
            learn_aliases(value, real.get(key), learned, f"{where}.{key}")
    elif isinstance(shown, list) and isinstance(real, list):
        for i, (s, r) in enumerate(zip(shown, real)):
            learn_aliases(s, r, learned, f"{where}[{i}]")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__.replace("int", "float")


def same_json(shown: Any, real: Any, where: str = "$") -> None:
    """Fail unless `real` is what the docs show (see the module's docstring)."""
    if shown == "...":
        return
    if isinstance(shown, dict):
        assert isinstance(real, dict), f"{where}: the docs show an object, got {real!r}"
        if shown.get("...") is True:
            missing = set(shown) - {"..."} - set(real)
            assert not missing, f"{where}: missing keys {sorted(missing)} in {real!r}"
        else:
            assert set(shown) == set(real), (f"{where}: keys differ: the docs show "
                                             f"{sorted(set(shown) - set(real))} in addition, the"
                                             f" answer {sorted(set(real) - set(shown))}")
        for key, value in shown.items():
            if key == "..." or key in RACY:
                continue
            if key in VOLATILE or key.endswith("_at"):
                assert _kind(value) == _kind(real[key]), \
                    f"{where}.{key}: the docs show {value!r}, got {real[key]!r}"
            else:
                same_json(value, real[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(real, list), f"{where}: the docs show a list, got {real!r}"
        more = bool(shown) and shown[-1] == "..."  # these items, then any number more
        items = shown[:-1] if more else shown
        assert len(real) >= len(items) if more else len(real) == len(items), \
            f"{where}: the docs show {len(items)} items, got {len(real)}: {real!r}"
        for i, (s, r) in enumerate(zip(items, real)):
            same_json(s, r, f"{where}[{i}]")
    elif isinstance(shown, str):  # `...` in it matches anything
        pattern = ".*?".join(map(re.escape, shown.split("...")))
        assert isinstance(real, str) and re.fullmatch(pattern, real, re.DOTALL), \
            f"{where}: the docs show {shown!r}, got {real!r}"
    else:
        assert type(shown) is type(real) or {type(shown), type(real)} == {int, float}, \
            f"{where}: the docs show {shown!r}, got {real!r}"
        assert shown == real, f"{where}: the docs show {shown!r}, got {real!r}"


def same_jsons(shown: str, printed: str, learned: Learned, where: str) -> None:
    want = parse_shown_json(learned.apply(shown))
    try:
        got = json_values(printed)
    except ValueError:
        raise AssertionError(f"{where}: the docs show JSON, the commands printed:\n{printed}")
    assert len(got) == len(want), \
        f"{where}: the docs show {len(want)} answers, {len(got)} came:\n{printed}"
    for i, (s, r) in enumerate(zip(want, got)):
        learn_aliases(s, r, learned, f"{where}[{i}]")
    for i, (s, r) in enumerate(zip(parse_shown_json(learned.apply(shown)), got)):
        same_json(s, r, f"{where}[{i}]")


def text_pattern(line: str) -> str:
    parts, at = [], 0
    for m in _TEXT_KIND.finditer(line):
        parts.append(re.escape(line[at:m.start()]))
        parts.append(next(TEXT_KINDS[i][1] for i, g in enumerate(m.groups()) if g is not None))
        at = m.end()
    return "".join(parts) + re.escape(line[at:])


def same_text(shown: list[str], printed: str, learned: Learned, where: str) -> None:
    real = [line.rstrip() for line in printed.splitlines()]
    at = 0
    for line in shown:
        pattern = text_pattern(learned.apply(line.rstrip()))
        found = next((i for i in range(at, len(real)) if re.fullmatch(pattern, real[i])), None)
        assert found is not None, f"{where}: the docs show {line!r}; printed:\n{printed}"
        at = found + 1


def same_output(shown: list[str], printed: str, learned: Learned, where: str) -> None:
    if shown and shown[0].lstrip().startswith(("{", "[")):
        same_jsons("\n".join(shown), printed, learned, where)
    elif shown:
        same_text(shown, printed, learned, where)


@contextlib.contextmanager
def noted(problems: list[str]) -> Iterator[None]:
    """A failed check is noted and the document goes on: its run reports every problem at once."""
    try:
        yield
    except AssertionError as exc:
        problems.append(str(exc))


def last_result(output: str) -> object:
    """The result `run --wait` printed last (text output: JSON after `--- result ---`)."""
    _, marker, rest = output.rpartition("--- result ---\n")
    assert marker, f"no result printed:\n{output}"
    return json.loads(rest.split("\n--- ", 1)[0])


# -- running -------------------------------------------------------------------------------

class Bash:
    """One bash for a document: each command sourced in turn (so state carries over), its
    output in files; everything it started is stopped with its process group."""

    def __init__(self, cwd: Path, work: Path, variables: dict[str, str]):
        work.mkdir()
        (work / "bin").mkdir()
        wrapper = work / "bin" / "getoperate"  # the CLI of this checkout, whatever is installed
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cli.main "$@"\n')
        wrapper.chmod(0o755)
        env = cli_env({"PATH": f"{work / 'bin'}:{os.environ['PATH']}", **variables})
        self.work, self.n = work, 0
        self.p = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  start_new_session=True)

    def run(self, text: str, timeout: float = 180) -> tuple[int, str, Path]:
        """Source `text`; its exit status, stdout+stderr, and where its output goes on."""
        self.n += 1
        script, out = self.work / f"{self.n}.sh", self.work / f"{self.n}.out"
        script.write_text(text + "\n")
        assert self.p.stdin and self.p.stdout
        self.p.stdin.write(f'source "{script}" > "{out}" 2>&1 < /dev/null; echo "rc=$?"\n')
        self.p.stdin.flush()
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)  # bash answers when done
        assert ready, f"{text!r} still running after {timeout}s:\n{out.read_text()[-3000:]}"
        line = self.p.stdout.readline()
        assert line.startswith("rc="), f"bash ended ({self.p.poll()}) while running {text!r}"
        return int(line[3:]), out.read_text(errors="replace"), out

    def _all_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.p.poll()  # reap the bash (its children are reaped by init)
            try:
                os.killpg(self.p.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM to the bash and all it started (workers stop cleanly), then wait until none
        is left, so nothing of this document lives on into the next one."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                break
            if self._all_gone(timeout=30):
                break
        self.p.wait()
        for pipe in (self.p.stdin, self.p.stdout):
            if pipe:
                pipe.close()


def substitutions(suite: Suite) -> dict[str, str]:
    creds = json.loads((suite.root / ".getoperate" / "nats-credentials.json").read_text())
    return {"127.0.0.1:4222": f"127.0.0.1:{suite.base}",
            "127.0.0.1:8001": f"127.0.0.1:{suite.base + 1}",
            "127.0.0.1:8002": f"127.0.0.1:{suite.base + 2}",
            "/home/me/demo": str(suite.root),
            "admin:PASSWORD@": f"admin:{creds['admin']}@"}


def why_not_here(block: Block) -> str | None:
    """A runtime a block's jobs need and this machine lacks (skipped like the language tests:
    .ci/run installs every runtime and sets GETOPERATE_REQUIRE_LANGUAGES, so there it runs)."""
    found = registry()
    for language in re.findall(r"--language[ =](\w+)", block.body):
        if language in found.languages and language not in found.found \
                and not os.environ.get("GETOPERATE_REQUIRE_LANGUAGES"):
            return f"no {language} runtime here (.ci/run installs it)"
    return None


def run_document(doc: str, suite: Suite, work: Path) -> dict[str, int]:
    all_blocks = blocks(doc)
    learned = Learned(substitutions(suite))
    for name, text in FILES.get(doc, {}).items():
        if text.startswith("docs/"):
            text = next(b.body for b in blocks(text) if b.body.startswith(f"# {name}\n"))
        (suite.root / name).write_text(text)
    creds = json.loads((suite.root / ".getoperate" / "nats-credentials.json").read_text())
    bash = Bash(suite.root, work, {"PASSWORD": creds["admin"]})
    env_blocks: list[Block] = []
    served: dict[str, Proc] = {}
    problems: list[str] = []
    ran = 0
    try:
        for n, block in enumerate(all_blocks):
            nxt = all_blocks[n + 1] if n + 1 < len(all_blocks) else None
            shows = nxt if nxt and nxt.adjacent and nxt.kind in ("json", "text") else None
            where = f"{doc}:{block.line}"
            first = block.body.splitlines()[0] if block.body.strip() else ""
            named = re.match(r"#\s*(\S+\.(?:ya?ml|json))\s*$", first)
            if block.kind in ("yaml", "json") and named:
                (suite.root / named.group(1)).write_text(block.body)
            if block.kind not in COMMANDS or block.skip or why_not_here(block):
                continue
            for group in WORKERS.get((doc, block.section), []):
                if group not in served:
                    cli("group", "set", group, "--tags", group, cwd=suite.root, check=True)
                    served[group] = suite.worker(group, WORKER_GROUP=group)
                    served[group].wait_for('"worker_ready"', timeout=60)
            for env_block in env_blocks:
                rc, printed, _ = bash.run(learned.apply(env_block.body))
                assert rc == 0, f"{doc}:{env_block.line}: exited {rc}:\n{printed}"
            ran += 1
            if _assignments_only(block):
                env_blocks.append(block)
            printed = run_block(block, bash, suite, learned, where, problems)
            with noted(problems):
                if shows and block.kind == "console":
                    assert shows.kind == "json", f"{where}: a console block shows output inline"
                    assert last_result(printed) == json.loads(shows.body), \
                        f"{doc}:{shows.line}: the docs show the result {shows.body}:\n{printed}"
                elif shows:
                    same_output(shows.body.splitlines(), printed, learned, f"{doc}:{shows.line}")
    finally:
        bash.stop()  # and the workers it started
        for proc in served.values():
            proc.stop()
    assert not problems, f"{doc}: {len(problems)} problem(s):\n\n" + "\n\n".join(problems)
    return {"ran": ran}


def run_block(block: Block, bash: Bash, suite: Suite, learned: Learned, where: str,
              problems: list[str]) -> str:
    """Run one block's commands in turn; what they printed, together."""
    if block.kind == "python":
        todo = [Command(f'"{sys.executable}" "{bash.work}/{block.line}.py"')]
        (bash.work / f"{block.line}.py").write_text(learned.apply(block.body))
    else:
        todo = commands(block)
    printed_all = ""
    for command in todo:
        text = learned.apply(command.text)
        if re.fullmatch(r"getoperate up\b[^|;&]*", command.text.split("#")[0].strip()):
            printed_all += suite.up.output()  # the deployment's own `up`
            with noted(problems):
                same_output(command.shown, suite.up.output(), learned, f"{where}: getoperate up")
            continue
        alive = next((sign for pattern, sign in LONG_RUNNING if pattern.search(text)
                      and not text.rstrip().endswith("&")), None)
        if alive is not None:  # runs until stopped: in the background, once it shows life
            rc, _, out = bash.run(f"{{ {text}\n}} &")
            deadline = time.monotonic() + 60
            while alive not in out.read_text(errors="replace") or not out.stat().st_size:
                assert time.monotonic() < deadline, \
                    f"{where}: {command.text!r} showed no life:\n{out.read_text()}"
                time.sleep(0.05)
            continue
        rc, printed, _ = bash.run(text)
        with noted(problems):
            assert rc != 127, f"{where}: not installed here: {command.text!r}: install it, or " \
                              f"mark the block <!-- docs-test: skip (why) -->:\n{printed}"
            assert rc == 0, f"{where}: {command.text!r} exited {rc}:\n{printed}"
            same_output(command.shown, printed, learned, f"{where}: {command.text.splitlines()[0]}")
        printed_all += printed
    return printed_all


@pytest.fixture(scope="module")
def shared_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("docs"), kill_extra=False, ready=("default",)) as s:
        yield s


@pytest.fixture
def suite(doc: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Suite | None]:
    found = blocks(doc)
    unlabeled = [b.line for b in found if not b.kind]
    assert not unlabeled, f"{doc}: unlabeled blocks at lines {unlabeled}: label each (```sh, " \
                          "```console or ```python for commands, ```text for the rest)"
    not_here = [f"line {b.line}: {c.text.splitlines()[0]!r}" for b in found
                if b.kind in COMMANDS - {"python"} and not b.skip
                for c in commands(b) if NOT_HERE.search(c.text)]
    if not_here and doc in AWAITING_MARKERS:
        pytest.xfail(f"{doc}: {AWAITING_MARKERS[doc]}")
    assert not not_here, f"{doc}: cannot run in a test: mark each block right above it with " \
                         "<!-- docs-test: skip (the reason) -->:\n" + "\n".join(not_here)
    if not any(b.kind in COMMANDS and not b.skip for b in found):
        yield None
        return
    if doc not in OWN_DEPLOYMENT:
        yield request.getfixturevalue("shared_suite")
        return
    (tmp_path / "docs").mkdir()
    with running_suite(tmp_path / "docs", kill_extra=False, ready=("default",)) as s:
        yield s


@pytest.mark.parametrize("doc", DOCS)
def test_a_documents_command_blocks_run_as_written(doc: str, suite: Suite | None, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    found = [b for b in blocks(doc) if b.kind in COMMANDS]
    skipped = [(b.line, b.skip or why_not_here(b)) for b in found
               if b.skip or why_not_here(b)]
    ran = run_document(doc, suite, tmp_path / "bash")["ran"] if suite else 0
    with capsys.disabled():
        print(f"\n{doc}: {len(found)} command blocks, {ran} ran, {len(skipped)} skipped"
              + "".join(f"\n  line {line}: {why}" for line, why in skipped))
    assert ran + len(skipped) == len(found)
