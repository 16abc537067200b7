"""The Workers page (`GET /` of the config service) in a real headless Chromium, against a real
`getoperate up`: token first, then groups (with their limits, sandbox and network), live workers
(and the banner naming any that runs jobs without a sandbox), queues and events; tag edits go
through the API (and reach a worker); a wrong token shows the API's error and changes nothing.

Needs Debian's chromium at /usr/bin/chromium and the `playwright` package (the `test` extra); no
browser is downloaded. Without chromium the browser test is skipped and says how to install it,
so the README's test command still passes on a fresh machine; `.ci/run` installs chromium and sets
GETOPERATE_REQUIRE_BROWSER=1, which turns the skip into a failure. `UPDATE_SCREENSHOT=1` rewrites
docs/workers-page.png.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cli.client import Endpoints
from tests.integration.browser import CHROMIUM, CHROMIUM_ARGS, WAIT, browser_or_fail, http
from tests.integration.conftest import Suite
from tests.integration.harness import ROOT, FakeWorkers, fake_status

SCREENSHOT = ROOT / "docs" / "workers-page.png"
INIT_SCRIPT = 'echo "<img src=x onerror=window.__xss=1>" >/tmp/motd\necho "installing CUDA drivers"\n'
INIT_OUTPUT = '<img src=x onerror=window.__xss=3>drivers 550.54 installed\n'
SANDBOX_NOTE = '<img src=x onerror=window.__xss=2>bwrap: setting up uid map: Permission denied'


def _group(suite: Suite, name: str) -> dict[str, Any]:
    return suite.api.call("GET", "config", f"/groups/{name}")  # type: ignore[no-any-return]


def test_overview_endpoint_and_page_headers(suite: Suite) -> None:
    ep = Endpoints(suite.root / ".getoperate")
    token = ep.token()
    status, headers, body = http("GET", ep.config_url + "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
    assert "unsafe-inline" not in csp and "http" not in csp
    assert b"<script>" in body and b"src=\"http" not in body  # self-contained: nothing external

    assert http("GET", ep.config_url + "/ui/overview")[0] == 401
    made = http("POST", ep.config_url + "/tokens", token, {"workspace": "ws-ui"})[2]
    status, _, err = http("GET", ep.config_url + "/ui/overview", made["token"])
    assert status == 403 and "admin token" in err["message"]

    status, _, view = http("GET", ep.config_url + "/ui/overview", token)
    assert status == 200
    assert set(view) == {"now", "config_seq", "published_seq", "groups", "workers", "queues",
                         "events", "problems", "assignable", "presets"}
    assert view["presets"]["native"][0] == "nativets" and "python3" in view["presets"]["default"]
    assert view["problems"] == []
    assert {g["name"] for g in view["groups"]} >= {"default", "native"}
    assert view["events"][0]["seq"] == view["config_seq"]  # newest first
    assert len(view["events"]) <= 20
    assert {w["group"] for w in view["workers"]} >= {"default", "native"}
    for w in view["workers"]:
        assert w["stale"] == (w["config_version"] < w["group_version"])
        assert w["sandbox"] in ("bwrap", "none") and isinstance(w["network"], bool)
        assert "sandbox_note" in w
    default = next(g for g in view["groups"] if g["name"] == "default")
    assert default["limits"] == {} and default["effective_limits"]["max_timeout"] == 86400
    python3 = next(q for q in view["queues"] if q["tag"] == "python3")
    assert python3["groups"] == ["default"] and python3["live_workers"] >= 1


def test_workers_page_in_chromium(suite: Suite, tmp_path: Path) -> None:
    sync_playwright = browser_or_fail()
    from playwright.sync_api import expect

    ep = Endpoints(suite.root / ".getoperate")
    token = ep.token()
    assert token
    suite.api.set_group("gpu", tags=["gpu", "cuda"], init_script=INIT_SCRIPT,
                        limits={"memory": "512M", "max_timeout": 3600}, sandbox="bwrap",
                        network=False)
    waiting = suite.api.submit('echo "trained"', tag="gpu")  # no gpu worker: it waits
    parked = suite.api.submit('echo "report done"', tag="reports")  # no group listens yet
    assert waiting["live_workers"] == 0 and parked["groups"] == []
    native_before = _group(suite, "native")

    # Workers that only heartbeat: one without a sandbox (its note holds markup), one boxed, and
    # one still running its init script.
    bare = fake_status("fake-bare", sandbox="none", sandbox_note=SANDBOX_NOTE)
    boxed = fake_status("fake-boxed", sandbox="bwrap", network=False, init_status="ok",
                        init_output=INIT_OUTPUT)
    initing = fake_status("fake-init", sandbox="bwrap", init_status="running")
    problems: list[str] = []
    with FakeWorkers(suite.nats_url, bare, boxed, initing), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda msg: problems.append(msg.text) if (
                "Content Security Policy" in msg.text or "Refused" in msg.text) else None)
            page.set_default_timeout(WAIT)
            expect.set_options(timeout=WAIT)
            page.goto(ep.config_url + "/")

            # Token first: nothing is loaded without one, and a wrong one is an error.
            expect(page.locator("#intro")).to_be_visible()
            expect(page.locator("#content")).to_be_hidden()
            page.fill("#token", "goa_not-the-token")
            page.click("#use-token")
            expect(page.locator("#banner")).to_contain_text("invalid or revoked token")
            expect(page.locator("#content")).to_be_hidden()

            page.fill("#token", token)
            page.click("#use-token")
            expect(page.locator("#content")).to_be_visible()
            expect(page.locator("#banner")).to_be_hidden()
            assert page.evaluate("sessionStorage.getItem('getoperate.adminToken')") == token

            # 1. groups with tags, init script (as text, never as HTML) and dedicated targets.
            groups = page.locator("#groups")
            expect(groups.locator('tr[data-group="default"]')).to_contain_text("python3")
            expect(groups.locator('tr[data-group="native"]')).to_contain_text("nativets")
            gpu_row = groups.locator('tr[data-group="gpu"]')
            expect(gpu_row).to_contain_text("cuda")
            assert gpu_row.locator("pre.script").text_content() == INIT_SCRIPT
            assert groups.locator("img").count() == 0
            assert page.evaluate("window.__xss") is None

            # ... with its limits (set ones, the rest at their defaults), sandbox and network.
            expect(gpu_row.locator('[data-limit="memory"]')).to_have_text("512M")
            expect(gpu_row.locator('[data-limit="max_timeout"]')).to_have_text("3600 s")
            expect(gpu_row.locator('[data-limit="cpu_seconds"]')).to_have_text("3600 s (default)")
            expect(gpu_row.locator('[data-limit="file_size"]')).to_have_text("1G (default)")
            expect(gpu_row.locator("td.isolation")).to_have_text("bwrap no network")
            default_row = groups.locator('tr[data-group="default"]')
            expect(default_row.locator('[data-limit="memory"]')).to_have_text("2G (default)")
            expect(default_row.locator("td.isolation")).to_have_text("worker default network")

            # A live worker without a sandbox: a banner names it with its note, as text.
            banner = page.locator("#sandbox-banner")
            expect(banner).to_be_visible()
            expect(banner).to_contain_text("WITHOUT a sandbox")
            expect(banner.locator('li[data-worker="fake-bare"]')).to_have_text(
                "fake-bare (group fake): " + SANDBOX_NOTE)
            expect(banner.locator('li[data-worker="fake-boxed"]')).to_have_count(0)
            expect(page.locator("#card-unsandboxed")).to_have_class("card alert")
            bare_row = page.locator('#workers tr[data-worker="fake-bare"]')
            expect(bare_row.locator("td.sandbox .badge")).to_have_text("NONE")
            expect(bare_row.locator(".sandbox-note")).to_have_text(SANDBOX_NOTE)
            expect(page.locator('#workers tr[data-worker="fake-boxed"] td.sandbox')).to_have_text(
                "bwrap · no network")
            # a successful init script's output, as text, folded under "output"
            init_cell = page.locator('#workers tr[data-worker="fake-boxed"] td.init')
            init_cell.locator("summary").click()
            assert init_cell.locator("pre.init-output").text_content() == INIT_OUTPUT
            assert page.locator("#sandbox-banner img, #workers img").count() == 0
            # State: ready (green) only when the worker takes jobs; not while its init script
            # runs (getoperate workers: init-running).
            initing_row = page.locator('#workers tr[data-worker="fake-init"]')
            expect(initing_row).to_be_visible()
            expect(initing_row.locator(".badge.b-ok", has_text="ready")).to_have_count(0)
            boxed_state = page.locator('#workers tr[data-worker="fake-boxed"] td.state .badge')
            expect(boxed_state).to_have_text("ready")
            expect(boxed_state).to_have_class("badge b-ok")
            init_state = initing_row.locator("td.state .badge")
            expect(init_state).to_have_text("init running")
            expect(init_state).to_have_class("badge b-warn")
            expect(page.locator('#workers tr[data-worker="fake-init"] td.init')).to_have_text("running")
            assert page.evaluate("window.__xss") is None

            # 2. live workers with their applied config version.
            native_v = native_before["version"]
            native_worker = page.locator('#workers tr[data-group="native"]').first
            expect(native_worker.locator("td.cfg")).to_have_text(str(native_v))
            expect(native_worker).to_contain_text("ready")
            # the languages each worker can run, from its heartbeat
            expect(native_worker.locator("td.runtimes")).to_contain_text("nativets")
            expect(native_worker.locator("td.runtimes")).to_contain_text("deno")
            expect(page.locator('#workers tr[data-group="default"]').first).to_contain_text("python3")

            # 3. waiting jobs per tag, flagged when nobody will take them.
            gpu_queue = page.locator('#queues tr[data-tag="gpu"]')
            expect(gpu_queue.locator("td.waiting-count")).to_have_text("1")
            expect(gpu_queue).to_contain_text("no live worker")
            expect(page.locator('#queues tr[data-tag="reports"]')).to_contain_text("no group listens")

            # 4. recent config events, newest first.
            seq = suite.api.call("GET", "config", "/events?limit=10000")[-1]["seq"]
            expect(page.locator("#events tr[data-seq]").first).to_have_attribute("data-seq", str(seq))
            expect(page.locator("#events")).to_contain_text("group gpu created")

            # 5. editing tags: the API's validation message is shown, nothing changes.
            native_row = groups.locator('tr[data-group="native"]')
            native_row.locator("button.edit-btn").click()
            edit = page.locator("#ed-tags")
            expect(edit).to_have_value(", ".join(native_before["tags"]))
            edit.fill(", ".join([*native_before["tags"], "bad(tag)"]))
            page.click("#ed-save")
            expect(page.locator("#ed-error")).to_contain_text("are not allowed")
            expect(page.locator("#ed-error")).to_contain_text("field: tags")
            assert _group(suite, "native") == native_before
            page.click("#ed-close")

            # ... and with a wrong token: the error is shown, nothing changes.
            page.fill("#token", "goa_wrong")
            page.click("#use-token")
            expect(page.locator("#banner")).to_contain_text("invalid or revoked token")
            new_tags = [*native_before["tags"], "reports"]
            native_row.locator("button.edit-btn").click()
            edit.fill(", ".join(new_tags))
            page.click("#ed-save")
            expect(page.locator("#ed-error")).to_contain_text("invalid or revoked token")
            assert _group(suite, "native") == native_before
            page.click("#ed-close")

            # With the admin token again the same edit lands, and the native worker applies it.
            page.fill("#token", token)
            page.click("#use-token")
            expect(page.locator("#banner")).to_be_hidden()
            native_row.locator("button.edit-btn").click()
            edit.fill(", ".join(new_tags))
            status = page.locator("#status").text_content()
            expect(page.locator("#status")).not_to_have_text(status or "")  # a refresh went by
            expect(edit).to_have_value(", ".join(new_tags))  # the draft survived it
            page.click("#ed-save")
            expect(page.locator("#change")).to_contain_text("Group native saved")
            after = _group(suite, "native")
            assert after["tags"] == new_tags and after["version"] > native_v
            expect(page.locator("#change li[data-type='group.tags_set']")).to_contain_text(
                f"seq {after['version']} group.tags_set")
            expect(native_row).to_contain_text("reports")
            expect(native_worker.locator("td.cfg")).to_have_text(str(after["version"]))
            suite.api.wait_workers(lambda ws: any(
                w["group"] == "native" and w["config_version"] == after["version"]
                and "reports" in w["tags"] for w in ws))
            # The parked job is now taken by the native worker.
            assert suite.api.job(parked["id"])["status"] == "success"
            # Nothing waits on it any more: an idle, served tag is a chip, not a row.
            expect(page.locator('#queues .idle [data-tag="reports"]')).to_be_visible()
            expect(page.locator('#queues tr[data-tag="reports"]')).to_have_count(0)
            expect(page.locator("#events tr[data-seq]").first).to_contain_text("group.tags_set")

            # A change made elsewhere while editing is not overwritten (expected_version).
            gpu_row.locator("button.edit-btn").click()
            suite.api.set_group("gpu", tags=["gpu", "cuda", "a100"])
            edit.fill("gpu, cuda, h100")
            page.click("#ed-save")
            expect(page.locator("#ed-error")).to_contain_text("Someone else changed group gpu")
            expect(page.locator("#ed-error")).to_contain_text("someone changed it first")
            assert _group(suite, "gpu")["tags"] == ["gpu", "cuda", "a100"]
            expect(edit).to_have_value("gpu, cuda, a100")  # the form reloaded the group
            page.click("#ed-close")
            expect(gpu_row).to_contain_text("a100")

            page.mouse.move(0, 0)
            time.sleep(0.3)
            shot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "workers.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    assert problems == []
