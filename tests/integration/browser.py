"""What the browser tests share (test_web, test_web_manage): Debian's chromium and how it is
launched, the time each expectation on a page may take, and a plain HTTP call to a service."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT = 15_000  # ms, for each expectation on the page


def browser_or_fail() -> Any:
    if not CHROMIUM.exists():
        message = (f"{CHROMIUM} is missing: the web test needs Debian's chromium. Install it with"
                   " `sudo apt-get install -y --no-install-recommends chromium` (.ci/run does"
                   " this); Playwright's own browser download is not used.")
        if os.environ.get("GETOPERATE_REQUIRE_BROWSER") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the `playwright` package is missing: python3 -m pip install -e '.[test]'",
                    pytrace=False)
    return sync_playwright


def http(method: str, url: str, token: str | None = None,
         body: Any = None) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, headers, raw = exc.code, dict(exc.headers), exc.read()
    ctype = headers.get("Content-Type", "")
    return status, headers, json.loads(raw) if ctype.startswith("application/json") else raw
