"""What a python3 script needs installed: from its PEP 723 block, else from its imports.

A script that declares its dependencies (PEP 723 inline metadata) gets exactly those:

    # /// script
    # dependencies = ["humanize>=4", "requests"]
    # ///

A script with no such block gets one requirement per top-level import that is neither in the
standard library nor one of the script's own relative imports, named by `IMPORT_NAMES` where the
module and its package differ (`yaml` is `pyyaml`). The block is the override: it replaces the
guess entirely, and `dependencies = []` says "nothing to install". Pure code: the worker and the
config service both call it, so a deploy and a run agree on what a script needs.

Only plain requirements are accepted (a name, extras, version specifiers, a marker): a direct
URL or a path (`pkg @ file:///...`) or a resolver option would let a script make the resolver
read the worker's files or fetch from anywhere, so they are refused with the reason.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sys
import tomllib

from shared.errors import InvalidInput

# Module name -> the PyPI package that provides it, where they differ (the common cases).
IMPORT_NAMES = {
    "yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn", "bs4": "beautifulsoup4",
    "cv2": "opencv-python", "dateutil": "python-dateutil", "dotenv": "python-dotenv",
    "jwt": "pyjwt", "google": "google-api-python-client", "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient", "Crypto": "pycryptodome", "OpenSSL": "pyopenssl",
    "magic": "python-magic", "docx": "python-docx", "pptx": "python-pptx", "git": "gitpython",
    "attr": "attrs", "serial": "pyserial", "usb": "pyusb", "zmq": "pyzmq", "wmill": "wmill",
}
MAX_REQUIREMENTS = 100
_BLOCK = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_OP = r"(?:===|==|!=|~=|<=|>=|<|>)"
_S = r"[ \t]*"  # spaces and tabs only: no line breaks, nothing a requirements file splits on
_MARKER_TERM = r"(?:[a-z_]+|'[A-Za-z0-9._ -]*'|\"[A-Za-z0-9._ -]*\")"
_MARKER_ATOM = rf"{_MARKER_TERM}{_S}(?:{_OP}|not in|in){_S}{_MARKER_TERM}"
_REQUIREMENT = re.compile(
    rf"{_NAME}(?:{_S}\[{_S}{_NAME}(?:{_S},{_S}{_NAME})*{_S}\])?"  # name, extras
    rf"(?:{_S}{_OP}{_S}[A-Za-z0-9.*+!_-]+(?:{_S},{_S}{_OP}{_S}[A-Za-z0-9.*+!_-]+)*)?"  # versions
    rf"(?:{_S};{_S}{_MARKER_ATOM}(?:[ \t]+(?:and|or)[ \t]+{_MARKER_ATOM})*)?")  # a marker
# A name uv would take for a file of its working directory (an archive, a wheel)
_ARCHIVE = re.compile(r"\.(?:whl|zip|tar|tgz|tbz|txz|tar\.[a-z0-9]+)(?![A-Za-z0-9])",
                      re.IGNORECASE)


def declared(code: str) -> list[str] | None:
    """The PEP 723 `dependencies` of a script, or None where it has no `script` block."""
    blocks = [m for m in _BLOCK.finditer(code) if m.group("type") == "script"]
    if not blocks:
        return None
    if len(blocks) > 1:
        raise InvalidInput("the script has more than one `# /// script` block (PEP 723)",
                           field="code")
    toml = "".join(line[2:] if line.startswith("# ") else line[1:]
                   for line in blocks[0].group("content").splitlines(keepends=True))
    try:
        meta = tomllib.loads(toml)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"the script's `# /// script` block is not valid TOML: {exc}",
                           field="code") from exc
    deps = meta.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise InvalidInput("`dependencies` in the `# /// script` block must be a list of"
                           " strings", field="code")
    return deps


def imported(code: str) -> list[str]:
    """Packages for the script's top-level imports outside the standard library."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []  # the run reports the syntax error itself
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    outside = names - set(sys.stdlib_module_names) - {"__future__"}
    return sorted(IMPORT_NAMES.get(n, n) for n in outside)


_KNOWN: dict[bytes, tuple[str, ...]] = {}  # by the code's digest: a warm worker asks per job
_KNOWN_MAX = 256


def requirements(code: str) -> tuple[str, ...]:
    """What the script needs installed, checked: declared, else guessed from imports.
    Remembered by the code's SHA-256 (parsing the script cost a dedicated worker more than its
    job did); a script whose requirements are refused is parsed again each time."""
    digest = hashlib.sha256(code.encode()).digest()
    known = _KNOWN.get(digest)
    if known is None:
        known = _requirements(code)
        if len(_KNOWN) >= _KNOWN_MAX:
            _KNOWN.clear()
        _KNOWN[digest] = known
    return known


def _requirements(code: str) -> tuple[str, ...]:
    deps = declared(code)
    found = imported(code) if deps is None else deps
    if len(found) > MAX_REQUIREMENTS:
        raise InvalidInput(f"the script needs more than {MAX_REQUIREMENTS} packages",
                           field="code")
    return tuple(check_requirement(d.strip(" \t")) for d in found)


def check_requirement(text: str) -> str:
    if not _REQUIREMENT.fullmatch(text) or _ARCHIVE.search(text.split(";")[0]):
        raise InvalidInput(
            f"dependency {text!r} is not a plain requirement (a name, extras, version"
            " specifiers and a marker; URLs, paths, files and options are not accepted)",
            field="dependencies")
    return text


def digest(text: str) -> str:
    """The name of a lock's virtual environment, or of a requirement set's cached lock."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]
