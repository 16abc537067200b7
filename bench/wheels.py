"""Pure-Python wheels built on the spot: a local find-links folder for uv, so measuring (and
testing) python3 dependencies never depends on a public index being reachable."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def make_wheel(folder: Path, name: str, version: str, module: str,
               data: dict[str, bytes] | None = None) -> Path:
    """A wheel of `name` whose module `name` holds `module`, and `data` files in the package
    (compressed: a large file of zeros is a small wheel), with a RECORD of hashes, as pip and
    uv check."""
    dist = f"{name}-{version}.dist-info"
    files = {
        **{f"{name}/{path}": content for path, content in (data or {}).items()},
        f"{name}/__init__.py": module.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: getoperate\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }

    def record_line(path: str, data: bytes) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{path},sha256={digest},{len(data)}"

    record = "".join(record_line(p, d) + "\n" for p, d in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p, d in files.items():
            zf.writestr(p, d)
    return path
