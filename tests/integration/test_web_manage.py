"""Managing worker groups and tags from the Workers page, in a real headless Chromium against a
real `getoperate up`: create, edit (tags, init script, dedicated targets, priorities, static
variables, limits, sandbox and network) and delete a group, the three reset buttons, the
assignable tags dialog (with its 409 and the confirmed replace), a refused concurrent edit, the
workers' and tags' views, a group's history and a diff, the warning (with the requeue command) of
a change that leaves jobs on a tag no group serves, and a job cancelled while queued leaving the
waiting counts. The buttons the product document names read as it names them. Every action is
checked on the page and through the API (the event it became really is in the log), and every
field carries markup that must stay text: `window.__xss` stays undefined and the page never holds
an `<img>` or a `<b>`.

`UPDATE_SCREENSHOT=1` rewrites the screenshots of each dialog in docs/.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.client import Endpoints
from tests.integration.browser import CHROMIUM, CHROMIUM_ARGS, WAIT, browser_or_fail, http
from tests.integration.conftest import Suite
from tests.integration.harness import ROOT, wait_until

DOCS = ROOT / "docs"


def xss(n: int) -> str:
    """Markup that sets window.__xss if it is ever parsed as HTML."""
    return f"<img src=x onerror=window.__xss={n}>"


class Ui:
    """The page plus the API it drives, with the few steps every test repeats."""

    def __init__(self, page: Any, suite: Suite, tmp: Path) -> None:
        self.page = page
        self.suite = suite
        self.tmp = tmp
        ep = Endpoints(suite.root / ".getoperate")
        self.url = ep.config_url
        self.token = ep.token()
        self.seen: dict[str, str | None] = {}  # change box -> the data-n of the last one read

    def http(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        status, _, answer = http(method, self.url + path, token or self.token, body)
        assert status < 300, (status, answer)
        return answer

    def group(self, name: str) -> dict[str, Any] | None:
        status, _, answer = http("GET", self.url + f"/groups/{name}", self.token)
        return answer if status == 200 else None

    def event(self, seq: int) -> dict[str, Any]:
        (record,) = self.http("GET", f"/events?since={seq}&until={seq}&summary=1")
        return record  # type: ignore[no-any-return]

    def row(self, name: str) -> Any:
        return self.page.locator(f'#groups tr[data-group="{name}"]')

    def edit(self, name: str) -> None:
        self.row(name).locator("button.edit-btn").click()
        from playwright.sync_api import expect
        expect(self.page.locator("#editor")).to_be_visible()
        expect(self.page.locator("#ed-name")).to_have_value(name)

    def confirm(self, *expected: str, reason: str | None = None) -> None:
        from playwright.sync_api import expect
        dialog = self.page.locator("#confirm")
        expect(dialog).to_be_visible()
        for text in expected:
            expect(dialog.locator("#confirm-body")).to_contain_text(text)
        if reason is not None:
            self.page.fill("#confirm-reason", reason)
        self.page.click("#confirm-ok")
        expect(dialog).to_be_hidden()

    def cancel(self, *expected: str) -> None:
        from playwright.sync_api import expect
        dialog = self.page.locator("#confirm")
        expect(dialog).to_be_visible()
        for text in expected:
            expect(dialog.locator("#confirm-body")).to_contain_text(text)
        self.page.click("#confirm-cancel")
        expect(dialog).to_be_hidden()

    def change(self, box: str = "#change") -> list[tuple[int, str]]:
        """The events the last change became, as the page lists them: (seq, type)."""
        from playwright.sync_api import expect
        expect(self.page.locator(box)).to_be_visible()
        assert "null" not in (self.page.locator(box).text_content() or "")
        items = self.page.locator(f"{box} li[data-seq]")
        return [(int(items.nth(i).get_attribute("data-seq")), items.nth(i).get_attribute("data-type"))
                for i in range(items.count())]

    def wait_change(self, title: str, box: str = "#change") -> list[tuple[int, str]]:
        """The events of the next change notice in `box` (not one read before), with its title."""
        from playwright.sync_api import expect
        locator = self.page.locator(box)
        seen = self.seen.get(box)
        if seen is not None:
            expect(locator).not_to_have_attribute("data-n", seen)
        expect(locator.locator(".change-title")).to_have_text(title)
        self.seen[box] = locator.get_attribute("data-n")
        return self.change(box)

    def clean(self) -> None:
        """No markup ran anywhere on the page (dialogs and Queues included), and none became an
        element: the page itself uses neither <img> nor <b>."""
        assert self.page.evaluate("window.__xss") is None
        assert self.page.locator("img").count() == 0
        assert self.page.locator("b").count() == 0

    def shot(self, name: str, height: int = 900) -> None:
        """The viewport (dialogs are in it) as docs/<name>, `height` pixels tall."""
        self.page.mouse.move(0, 0)
        self.page.set_viewport_size({"width": 1360, "height": height})
        try:
            path = DOCS / name if os.environ.get("UPDATE_SCREENSHOT") == "1" else self.tmp / name
            self.page.screenshot(path=str(path))
            assert path.stat().st_size > 10_000
        finally:
            self.page.set_viewport_size({"width": 1360, "height": 900})


@pytest.fixture(scope="module")
def browser(suite: Suite) -> Iterator[tuple[Any, list[str]]]:
    sync_playwright = browser_or_fail()
    problems: list[str] = []
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1360, "height": 900})
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda msg: problems.append(msg.text) if (
                "Content Security Policy" in msg.text or "Refused" in msg.text) else None)
            page.set_default_timeout(WAIT)
            from playwright.sync_api import expect
            expect.set_options(timeout=WAIT)
            ep = Endpoints(suite.root / ".getoperate")
            page.goto(ep.config_url + "/")
            page.fill("#token", ep.token())
            page.click("#use-token")
            expect(page.locator("#content")).to_be_visible()
            yield page, problems
        finally:
            chromium.close()


@pytest.fixture
def ui(browser: tuple[Any, list[str]], suite: Suite, tmp_path: Path) -> Iterator[Ui]:
    page, problems = browser
    u = Ui(page, suite, tmp_path)
    yield u
    u.clean()
    for dialog in ("#confirm", "#editor", "#tags-dialog", "#history"):
        if page.locator(dialog).is_visible():
            page.keyboard.press("Escape")
    assert problems == []


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_create_edit_and_delete_a_group(ui: Ui) -> None:
    from playwright.sync_api import expect

    page = ui.page
    g = name("web")
    ui.http("PUT", "/scripts/wsweb/f/hello", {"language": "bash", "content": "echo hi\n"})
    ui.http("PUT", "/scripts/wsweb/f/other", {"language": "bash", "content": "echo other\n"})

    # A name the API refuses: its message, as text.
    page.click("#new-group")
    expect(page.locator("#editor-title")).to_have_text("New worker group")
    page.fill("#ed-name", xss(1))
    page.fill("#ed-tags", "x")
    page.click("#ed-save")
    expect(page.locator("#ed-error")).to_contain_text(xss(1))
    expect(page.locator("#ed-error")).to_contain_text("field: group")
    ui.clean()

    # Create with every field: one PUT, one event per field, each listed with its seq.
    init = f'echo "{xss(2)}"\necho ready\n'
    env_value = f"{xss(3)} & \"quotes\" = kept"
    page.fill("#ed-name", g)
    page.fill("#ed-tags", f"{g}-a, {g}-b")
    page.fill("#ed-init", init)
    page.fill("#ed-dedicated", "wsweb:f/hello, wsweb:f/other")
    page.fill("#ed-priorities", f"{g}-a=10")
    page.fill("#ed-env", f"NOTE={env_value}\nREGION=eu")
    page.fill("#ed-limit-memory", "512M")
    page.fill("#ed-limit-max_timeout", "600")
    page.select_option("#ed-sandbox", "bwrap")
    page.uncheck("#ed-network")
    page.fill("#ed-reason", xss(4))
    page.click("#ed-save")
    events = ui.wait_change(f"Group {g} created")
    assert [t for _, t in events] == [
        "group.created", "group.tags_set", "group.init_script_set", "group.dedicated_set",
        "group.priorities_set", "group.env_set", "group.limits_set", "group.sandbox_set"]
    expect(page.locator("#editor")).to_be_hidden()
    for seq, kind in events:  # each really is in the log, with the reason typed
        record = ui.event(seq)
        assert (record["type"], record["actor"], record["reason"]) == (kind, "admin", xss(4))
    stored = ui.group(g)
    assert stored is not None
    assert stored["tags"] == [f"{g}-a", f"{g}-b"] and stored["init_script"] == init
    assert stored["dedicated"] == ["wsweb:f/hello", "wsweb:f/other"]
    assert stored["priorities"] == {f"{g}-a": 10}
    assert stored["env"] == {"NOTE": env_value, "REGION": "eu"}
    assert stored["limits"] == {"memory": 512 * 1024**2, "max_timeout": 600}
    assert (stored["sandbox"], stored["network"]) == ("bwrap", False)
    assert stored["version"] == events[-1][0]

    # The table shows it, as text.
    row = ui.row(g)
    expect(row.locator("td.version")).to_have_text(str(stored["version"]))
    assert row.locator("pre.script").text_content() == init
    expect(row.locator("td.env")).to_have_text("NOTEREGION")
    assert row.locator('td.env [title^="NOTE="]').get_attribute("title") == "NOTE=" + env_value
    expect(row.locator('[data-limit="memory"]')).to_have_text("512M")
    expect(row.locator("td.isolation")).to_have_text("bwrap no network")
    expect(row.locator("td.dedicated")).to_have_text("wsweb:f/hellowsweb:f/other")
    ui.clean()

    # Creating it again is "create only" (expected_version 0): refused, said, nothing written.
    page.click("#new-group")
    page.fill("#ed-name", g)
    page.fill("#ed-tags", "other")
    page.click("#ed-save")
    expect(page.locator("#ed-error")).to_contain_text(f"A group named {g} already exists")
    assert ui.group(g) == stored
    page.click("#ed-close")

    # The editor shows what is stored; saving unchanged is refused by the page itself.
    ui.edit(g)
    expect(page.locator("#ed-env")).to_have_value(f"NOTE={env_value}\nREGION=eu")
    expect(page.locator("#ed-init")).to_have_value(init)
    expect(page.locator("#ed-priorities")).to_have_value(f"{g}-a=10")
    expect(page.locator("#ed-limit-memory")).to_have_value("512M")
    expect(page.locator("#ed-sandbox")).to_have_value("bwrap")
    expect(page.locator("#ed-network")).not_to_be_checked()
    page.click("#ed-save")
    expect(page.locator("#ed-error")).to_contain_text("Nothing to save")

    # A refused value (a target that is not deployed): the API's message, nothing written.
    page.fill("#ed-dedicated", f"wsweb:f/hello, wsweb:f/other, wsweb:f/{xss(5)}")
    page.click("#ed-save")
    expect(page.locator("#ed-error")).to_contain_text("field: dedicated[2]")
    expect(page.locator("#ed-error")).to_contain_text(xss(5))
    assert ui.group(g) == stored
    ui.clean()

    # Removing tags, a target and a variable asks first; cancelling writes nothing.
    page.fill("#ed-tags", f"{g}-a, {g}-c")
    page.fill("#ed-dedicated", "wsweb:f/hello")
    page.fill("#ed-env", "REGION=us")
    page.fill("#ed-limit-memory", "")
    page.fill("#ed-limit-processes", "64")
    page.check("#ed-network")
    page.fill("#ed-reason", "")
    page.click("#ed-save")
    ui.cancel(f"Removes tags: {g}-b", "Removes dedicated targets: wsweb:f/other",
              "Removes static variables: NOTE")
    expect(page.locator("#editor")).to_be_visible()
    assert ui.group(g) == stored

    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        page.click("#ed-save")
        expect(page.locator("#confirm")).to_be_visible()
        ui.shot("workers-confirm.png", height=1180)
        page.click("#confirm-cancel")
    page.click("#ed-save")
    ui.confirm(f"Removes tags: {g}-b")
    events = ui.wait_change(f"Group {g} saved")
    assert [t for _, t in events] == ["group.tags_set", "group.dedicated_set", "group.env_set",
                                      "group.limits_set", "group.sandbox_set"]
    expect(page.locator("#change")).to_contain_text(f"group {g} tags = {g}-a, {g}-c")
    after = ui.group(g)
    assert after is not None
    assert after["tags"] == [f"{g}-a", f"{g}-c"] and after["dedicated"] == ["wsweb:f/hello"]
    assert after["env"] == {"REGION": "us"} and after["limits"] == {"processes": 64, "max_timeout": 600}
    assert (after["sandbox"], after["network"]) == ("bwrap", True)
    assert [ui.event(s)["type"] for s, _ in events] == [t for _, t in events]
    expect(ui.row(g).locator("td.version")).to_have_text(str(after["version"]))

    # Removing the init script asks too.
    ui.edit(g)
    page.fill("#ed-init", "")
    page.fill("#ed-priorities", "")
    page.click("#ed-save")
    ui.confirm("Removes the init script", f"Removes priorities of: {g}-a")
    assert [t for _, t in ui.wait_change(f"Group {g} saved")] == [
        "group.init_script_set", "group.priorities_set"]
    gone = ui.group(g)
    assert gone is not None and gone["init_script"] is None and gone["priorities"] == {}

    # Delete: asks (with a reason), and the event is recorded with it.
    ui.row(g).locator("button.delete-btn").click()
    ui.cancel(f"Removes its config: tags {g}-a, {g}-c")
    assert ui.group(g) is not None
    ui.row(g).locator("button.delete-btn").click()
    ui.confirm("live worker(s) of the group", reason=xss(6))
    ((seq, kind),) = ui.wait_change(f"Group {g} deleted")
    assert kind == "group.deleted"
    assert ui.group(g) is None
    record = ui.event(seq)
    assert (record["type"], record["reason"]) == ("group.deleted", xss(6))
    expect(ui.row(g)).to_have_count(0)
    expect(page.locator(f'#events tr[data-seq="{seq}"]')).to_contain_text(xss(6))


def test_reset_buttons(ui: Ui) -> None:
    from playwright.sync_api import expect

    page = ui.page
    g = name("reset")
    ui.http("PUT", f"/groups/{g}", {"tags": ["gpu-x", "python3"]})
    presets = ui.http("GET", "/ui/overview")["presets"]
    expect(ui.row(g)).to_be_visible()

    # Reset to native tags: removes tags, so it asks; cancelled, nothing changes.
    ui.edit(g)
    page.click("#reset-native")
    ui.cancel("Removes tags: gpu-x, python3", "Adds tags: nativets")
    assert ui.group(g)["tags"] == ["gpu-x", "python3"]  # type: ignore[index]

    page.fill("#ed-reason", "use native")
    page.click("#reset-native")
    ui.confirm("Removes tags: gpu-x, python3")
    ((seq, kind),) = ui.wait_change(f"Group {g}: tags reset to native tags", box="#ed-change")
    assert kind == "group.tags_set"
    assert ui.event(seq)["reason"] == "use native"
    assert ui.group(g)["tags"] == presets["native"]  # type: ignore[index]
    expect(page.locator("#ed-tags")).to_have_value(", ".join(presets["native"]))
    expect(page.locator("#change")).to_contain_text(f"seq {seq}")

    # All tags: a superset of native, so nothing is removed and nothing is asked.
    page.click("#reset-all")
    ((seq, kind),) = ui.wait_change(f"Group {g}: tags reset to all tags", box="#ed-change")
    assert ui.group(g)["tags"] == presets["all"]  # type: ignore[index]
    expect(page.locator("#confirm")).to_be_hidden()

    # All minus native removes the native ones: asked again.
    page.click("#reset-default")
    ui.confirm("Removes tags: nativets")
    ((seq2, _),) = ui.wait_change(f"Group {g}: tags reset to all tags minus native", box="#ed-change")
    assert seq2 > seq and ui.group(g)["tags"] == presets["default"]  # type: ignore[index]

    # The same again writes nothing, and says so.
    page.click("#reset-default")
    assert ui.wait_change(f"Group {g}: tags reset to all tags minus native", box="#ed-change") == []
    expect(page.locator("#ed-change")).to_contain_text("nothing was written")
    # The form's version follows its own resets: a save after them is not a conflict.
    page.fill("#ed-tags", ", ".join([*presets["default"], "extra"]))
    page.click("#ed-save")
    assert [t for _, t in ui.wait_change(f"Group {g} saved")] == ["group.tags_set"]
    assert ui.group(g)["tags"] == [*presets["default"], "extra"]  # type: ignore[index]

    # After all these changes the page still polls once every 2 s, not once per change made.
    polls: list[float] = []

    def listener(request: Any) -> None:
        if request.url.endswith("/ui/overview"):
            polls.append(time.monotonic())

    page.on("request", listener)
    try:
        page.wait_for_timeout(4200)
    finally:
        page.remove_listener("request", listener)
    assert 1 <= len(polls) <= 3, polls


def test_a_reset_names_the_priorities_it_drops_and_the_form_follows_the_server(ui: Ui) -> None:
    """Issue 16 (Workers page), point 1: a reset that drops a tag drops its priority too; the
    confirmation says so, and the form then shows the group as the server has it (a draft typed
    before the reset is kept), so an unrelated edit saves. A save that drops a priority says so
    too, and Edit opened before the next poll shows the group as that save left it."""
    from playwright.sync_api import expect

    page = ui.page
    g = name("prio")
    presets = ui.http("GET", "/ui/overview")["presets"]
    ui.http("PUT", f"/groups/{g}", {"tags": ["python3", "nativets"],
                                     "priorities": {"python3": 7, "nativets": 2}})
    expect(ui.row(g)).to_be_visible()
    ui.edit(g)
    expect(page.locator("#ed-priorities")).to_have_value(re.compile("python3=7"))
    page.fill("#ed-env", "REGION=eu")  # a draft the reset keeps

    page.click("#reset-native")
    added = [t for t in presets["native"] if t not in ("python3", "nativets")]
    expect(page.locator("#confirm-body li")).to_have_text([
        "Removes tags: python3", "Adds tags: " + ", ".join(added), "Removes priorities of: python3=7"])
    ui.confirm()
    events = ui.wait_change(f"Group {g}: tags reset to native tags", box="#ed-change")
    assert [t for _, t in events] == ["group.tags_set", "group.priorities_set"]
    reset = ui.group(g)
    assert reset is not None and reset["priorities"] == {"nativets": 2}
    expect(page.locator("#ed-tags")).to_have_value(", ".join(presets["native"]))
    expect(page.locator("#ed-priorities")).to_have_value("nativets=2")
    expect(page.locator("#ed-version")).to_have_text(re.compile(f"^Version {reset['version']}:"))
    expect(page.locator("#ed-env")).to_have_value("REGION=eu")

    # Only the init script (and the draft): saved, the priorities untouched.
    page.fill("#ed-init", "echo warm\n")
    page.click("#ed-save")
    expect(page.locator("#confirm")).to_be_hidden()
    assert [t for _, t in ui.wait_change(f"Group {g} saved")] == [
        "group.init_script_set", "group.env_set"]
    saved = ui.group(g)
    assert saved is not None and saved["init_script"] == "echo warm\n"
    assert saved["env"] == {"REGION": "eu"} and saved["priorities"] == {"nativets": 2}

    # Removing nativets from the tags drops its priority: asked. The overview is then held at
    # what it was before the save (no poll has come back yet): Edit shows the group as saved.
    stale = ui.http("GET", "/ui/overview")
    page.route("**/ui/overview", lambda route: route.fulfill(json=stale))
    try:
        ui.edit(g)
        page.fill("#ed-tags", ", ".join(t for t in presets["native"] if t != "nativets"))
        page.click("#ed-save")
        ui.confirm("Removes tags: nativets", "Removes priorities of: nativets=2")
        assert [t for _, t in ui.wait_change(f"Group {g} saved")] == [
            "group.tags_set", "group.priorities_set"]
        dropped = ui.group(g)
        assert dropped is not None and dropped["priorities"] == {}
        ui.edit(g)
        expect(page.locator("#ed-priorities")).to_have_value("")
        expect(page.locator("#ed-version")).to_have_text(re.compile(f"^Version {dropped['version']}:"))
        page.fill("#ed-init", "echo warmer\n")
        page.click("#ed-save")
        assert [t for _, t in ui.wait_change(f"Group {g} saved")] == ["group.init_script_set"]
    finally:
        page.unroute("**/ui/overview")
    assert ui.group(g)["init_script"] == "echo warmer\n"  # type: ignore[index]
    ui.http("DELETE", f"/groups/{g}")


# The buttons the product document names, with its exact words (docs/web.md).
DOCUMENT_BUTTONS = {"Reset to all tags minus native": "reset-default",
                    "Reset to native tags": "reset-native", "Reset to all tags": "reset-all"}


def test_buttons_read_as_the_product_document_names_them(ui: Ui) -> None:
    """Found by their role and visible label, not by id: "Assignable Tags" on the page, the three
    reset buttons in a group's editor."""
    from playwright.sync_api import expect

    page = ui.page
    g = name("labels")
    ui.http("PUT", f"/groups/{g}", {"tags": ["a"]})
    expect(ui.row(g)).to_be_visible()
    tags_button = page.get_by_role("button", name="Assignable Tags", exact=True)
    expect(tags_button).to_have_count(1)
    expect(tags_button).to_be_visible()
    expect(tags_button).to_have_text("Assignable Tags")
    expect(tags_button).to_have_id("open-tags")

    ui.edit(g)
    editor = page.locator("#editor")
    for label, button_id in DOCUMENT_BUTTONS.items():
        button = editor.get_by_role("button", name=label, exact=True)
        expect(button).to_have_count(1)
        expect(button).to_be_visible()
        expect(button).to_have_text(label)
        expect(button).to_have_id(button_id)
    page.click("#ed-close")
    expect(editor).to_be_hidden()

    tags_button.click()  # the button the document names opens the panel
    expect(page.locator("#tags-dialog")).to_be_visible()
    expect(page.locator("#tags-title")).to_have_text("Assignable Tags")
    page.get_by_role("button", name="Close", exact=True).click()
    expect(page.locator("#tags-dialog")).to_be_hidden()
    ui.http("DELETE", f"/groups/{g}")


def test_a_change_that_strands_jobs_warns_and_names_requeue(ui: Ui) -> None:
    """Issue 16, point 6, on the page: removing the last group's tag that still has a waiting job
    (no worker runs for it) shows the API's warning and the command that moves the job."""
    from playwright.sync_api import expect

    page = ui.page
    g = name("strand")
    gone, kept = f"{g}-gpu", f"{g}-keep"
    ui.http("PUT", f"/groups/{g}", {"tags": [kept, gone]})
    job = ui.suite.api.submit("echo stranded", tag=gone)  # no worker listens: it waits
    queue = page.locator(f'#queues tr[data-tag="{gone}"]')
    expect(queue.locator("td.waiting-count")).to_have_text("1")
    expect(queue.locator("td.warning")).to_have_text("no live worker")

    ui.edit(g)
    page.fill("#ed-tags", kept)
    page.click("#ed-save")
    ui.confirm(f"Removes tags: {gone}")
    assert [t for _, t in ui.wait_change(f"Group {g} saved")] == ["group.tags_set"]
    assert ui.group(g)["tags"] == [kept]  # type: ignore[index]
    box = page.locator("#change")
    expect(box).to_have_class("change warned")
    expect(box).to_have_attribute("role", "alert")
    warning = box.locator(".warnings li.warning")
    expect(warning).to_have_count(1)
    expect(warning).to_be_visible()
    expect(warning).to_contain_text(
        f"tag '{gone}' has 1 waiting job(s) and no group serves it any more: they wait until one does")
    hint = warning.locator(".requeue-hint")
    expect(hint).to_be_visible()
    expect(hint).to_have_text(
        f"Move them to a tag a group serves: getoperate jobs requeue --tag {gone} --to OTHER_TAG")
    expect(hint.locator("code.requeue")).to_have_text(
        f"getoperate jobs requeue --tag {gone} --to OTHER_TAG")
    # The Queues view says it too: nobody serves the tag its job waits on.
    expect(queue.locator("td.groups")).to_have_text("none")
    expect(queue.locator("td.warning")).to_have_text("no group listens")
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        page.evaluate("window.scrollTo(0, 0)")
        ui.shot("workers-warning.png")

    # A change that strands nothing has no warning.
    ui.edit(g)
    page.fill("#ed-tags", f"{kept}, other")
    page.click("#ed-save")
    ui.wait_change(f"Group {g} saved")
    expect(box).to_have_class("change")
    expect(box.locator(".warnings")).to_have_count(0)
    ui.suite.api.call("POST", "router", f"/jobs/{job['id']}/cancel")  # leaves nothing waiting
    expect(queue.locator("td.waiting-count")).to_have_text("0")
    ui.http("DELETE", f"/groups/{g}")


def test_a_job_cancelled_while_queued_is_not_counted_as_waiting(ui: Ui) -> None:
    """Issue 16, point 9, on the page: the tag's row and the waiting card drop a job cancelled
    before any worker took it (its group has no worker, so it can only wait)."""
    from playwright.sync_api import expect

    page = ui.page
    g = name("cancelq")
    tag = f"{g}-q"
    ui.http("PUT", f"/groups/{g}", {"tags": [tag]})
    ids = [ui.suite.api.submit("echo never", tag=tag)["id"] for _ in range(2)]
    queue = page.locator(f'#queues tr[data-tag="{tag}"]')
    expect(queue.locator("td.waiting-count")).to_have_text("2")
    expect(queue).to_have_class("waiting")
    card = page.locator("#card-waiting .n")
    before = int(card.text_content() or "")  # rendered from the same answer as the row

    ui.suite.api.call("POST", "router", f"/jobs/{ids[0]}/cancel")
    assert ui.suite.api.job(ids[0], wait=False)["status"] == "cancelled"
    expect(queue.locator("td.waiting-count")).to_have_text("1")
    expect(card).to_have_text(str(before - 1))

    ui.suite.api.call("POST", "router", f"/jobs/{ids[1]}/cancel")
    expect(queue.locator("td.waiting-count")).to_have_text("0")
    expect(queue).not_to_have_class("waiting")
    expect(card).to_have_text(str(before - 2))
    expect(queue.locator("td.warning")).to_have_text("no live worker")  # served by nobody still
    assert [ui.suite.api.job(i, wait=False)["status"] for i in ids] == ["cancelled", "cancelled"]
    ui.http("DELETE", f"/groups/{g}")


def test_markup_in_tags_priorities_limits_and_diff_stays_text(ui: Ui) -> None:
    """An `<img onerror>` payload and a `<b>` marker through the editor's Tags, Priorities and
    Limits and the diff's from and to: kept as text where accepted (a tag, with its priority, in
    the groups, Queues, events and history), and as text in the refusal that echoes it."""
    from playwright.sync_api import expect

    page = ui.page
    g = name("xss")
    tag = f"<img src=x onerror=window.__xss=50><b>{g}</b>"  # a valid tag: < > = / and spaces pass
    refused_tag = "<img src=x onerror=window.__xss=(51)><b>r</b>"  # '(' is refused
    other = "<img src=x onerror=window.__xss=52><b>p</b>"  # a tag the group does not listen to
    limit = "<img src=x onerror=__xss=53><b>m</b>"  # short enough to be echoed whole

    page.click("#new-group")
    page.fill("#ed-name", g)
    page.fill("#ed-tags", f"{tag}, {refused_tag}")
    page.click("#ed-save")
    expect(page.locator("#ed-error")).to_contain_text(refused_tag)
    expect(page.locator("#ed-error")).to_contain_text("are not allowed")
    ui.clean()

    page.fill("#ed-tags", f"{tag}, {g}-plain")
    page.fill("#ed-priorities", other)  # no =number: the page refuses it, echoing it
    page.click("#ed-save")
    expect(page.locator("#ed-error")).to_contain_text(f"Priorities: write tag=number (e.g. gpu=10), not \"{other}\"")
    ui.clean()

    page.fill("#ed-priorities", f"{tag}=7, {other}=3")  # the API refuses the second, echoing it
    page.click("#ed-save")
    expect(page.locator("#ed-error")).to_contain_text(f"priority for '{other}', which group")
    expect(page.locator("#ed-error")).to_contain_text(f"field: priorities.{other}")
    ui.clean()

    page.fill("#ed-priorities", f"{tag}=7")
    page.fill("#ed-limit-memory", limit)
    page.click("#ed-save")
    expect(page.locator("#ed-error")).to_contain_text(f"got '{limit}'")
    expect(page.locator("#ed-error")).to_contain_text("field: limits.memory")
    assert ui.group(g) is None  # every refusal wrote nothing
    ui.clean()

    page.fill("#ed-limit-memory", "256M")
    page.click("#ed-save")
    events = ui.wait_change(f"Group {g} created")
    expect(page.locator("#change")).to_contain_text(f"group {g} tags = {tag}, {g}-plain")
    stored = ui.group(g)
    assert stored is not None and stored["tags"] == [tag, f"{g}-plain"]
    assert stored["priorities"] == {tag: 7} and stored["limits"] == {"memory": 256 * 1024**2}

    # Shown as text in the group's row, in Queues (nobody serves it) and in the events.
    chip = ui.row(g).locator("td.tags .chip").first
    expect(chip).to_have_text(f"{tag}7")
    expect(chip).to_have_attribute("title", "priority 7")
    queue = page.locator("#queues tr[data-tag]").filter(has_text=tag)
    expect(queue).to_have_count(1)
    expect(queue).to_have_attribute("data-tag", tag)
    expect(queue.locator("td.warning")).to_have_text("no live worker")
    expect(page.locator("#events")).to_contain_text(f"group {g} tags = {tag}, {g}-plain")
    ui.clean()

    # The diff's from and to: the API's refusal echoes each, as text; a real diff shows the tag.
    ui.row(g).locator("button.history-btn").click()
    expect(page.locator("#history")).to_be_visible()
    expect(page.locator("#history-list")).to_contain_text(f"tags = {tag}, {g}-plain")
    bad_from = "<img src=x onerror=window.__xss=54><b>from</b>"
    bad_to = "<img src=x onerror=window.__xss=55><b>to</b>"
    page.fill("#diff-from", bad_from)
    page.click("#diff-show")
    expect(page.locator("#diff-error")).to_contain_text(f"'{bad_from}' is neither a sequence number")
    ui.clean()
    page.fill("#diff-from", str(events[0][0] - 1))
    page.fill("#diff-to", bad_to)
    page.click("#diff-show")
    expect(page.locator("#diff-error")).to_contain_text(f"'{bad_to}' is neither a sequence number")
    ui.clean()
    page.fill("#diff-to", "")
    page.click("#diff-show")
    expect(page.locator("#diff-lines")).to_contain_text(f"+ group {g}: {{tags=[{tag}, {g}-plain]")
    ui.clean()
    page.click("#history-close")
    ui.http("DELETE", f"/groups/{g}")
    expect(queue).to_have_count(0)


def test_a_concurrent_change_is_a_409_and_the_form_reloads(ui: Ui) -> None:
    from playwright.sync_api import expect

    page = ui.page
    g = name("race")
    ui.http("PUT", f"/groups/{g}", {"tags": ["a"], "env": {"K": "1"}})
    ops = ui.http("POST", "/tokens", {"admin": True, "name": name("ops")})
    expect(ui.row(g)).to_be_visible()
    ui.edit(g)
    shown_version = ui.group(g)["version"]  # type: ignore[index]

    # Someone else (another admin token) changes the group while the form is open.
    ui.http("PUT", f"/groups/{g}", {"tags": ["a", "theirs"], "reason": "INC-7"}, token=ops["token"])
    # The next refresh warns in the form, which keeps its draft and its version.
    page.fill("#ed-tags", "a, mine")
    expect(page.locator("#ed-version")).to_contain_text("Someone else changed this group meanwhile")
    expect(page.locator("#ed-tags")).to_have_value("a, mine")
    page.click("#ed-save")  # nothing removed from the version shown: no confirmation
    error = page.locator("#ed-error")
    expect(error).to_contain_text(f"Someone else changed group {g}")
    expect(error).to_contain_text(f"not {shown_version}")
    theirs = ui.group(g)
    assert theirs is not None and theirs["tags"] == ["a", "theirs"]  # the page wrote nothing
    expect(page.locator("#ed-tags")).to_have_value("a, theirs")  # reloaded
    expect(error).to_contain_text(f"version {theirs['version']}")

    # Saving again, from the reloaded version, lands.
    page.fill("#ed-tags", "a, theirs, mine")
    page.click("#ed-save")
    assert [t for _, t in ui.wait_change(f"Group {g} saved")] == ["group.tags_set"]
    assert ui.group(g)["tags"] == ["a", "theirs", "mine"]  # type: ignore[index]

    # A reset with a stale version is refused the same way.
    ui.edit(g)
    ui.http("PUT", f"/groups/{g}", {"env": {"K": "2"}}, token=ops["token"])
    page.click("#reset-all")
    ui.confirm("Removes tags: a, theirs, mine")
    expect(page.locator("#ed-error")).to_contain_text(f"Someone else changed group {g}")
    assert ui.group(g)["tags"] == ["a", "theirs", "mine"]  # type: ignore[index]
    expect(page.locator("#ed-env")).to_have_value("K=2")
    page.click("#ed-close")

    # Delete: the confirmation is open when someone else changes the group: refused, said.
    ui.row(g).locator("button.delete-btn").click()
    expect(page.locator("#confirm")).to_be_visible()
    ui.http("PUT", f"/groups/{g}", {"env": {"K": "3"}}, token=ops["token"])
    ui.confirm()
    expect(page.locator("#change")).to_contain_text(f"Group {g} was not deleted: someone else changed it")
    assert ui.group(g) is not None


def test_assignable_tags(ui: Ui) -> None:
    from playwright.sync_api import expect

    page = ui.page
    tag = name("gpu")
    page.click("#open-tags")
    dialog = page.locator("#tags-dialog")
    expect(dialog).to_be_visible()

    # Add, restricted to two workspaces.
    page.fill("#tag-spec", f"{tag}(ws1+ws2)")
    page.fill("#tag-reason", xss(20))
    page.click("#tag-add")
    ((seq, kind),) = ui.wait_change(f"Tag assignable: {tag}(ws1+ws2)", box="#tag-change")
    assert kind == "tags.assignable_set"
    record = ui.event(seq)
    assert record["reason"] == xss(20) and record["summary"] == f"assignable tag {tag}(ws1+ws2)"
    listed = {t["tag"]: t for t in ui.http("GET", "/tags")}
    assert listed[tag]["only"] == ["ws1", "ws2"]
    row = dialog.locator(f'tr[data-tag="{tag}"]')
    expect(row.locator("td.who")).to_have_text("only ws1, ws2")
    expect(row.locator("td.warning")).to_have_text("no group listens")  # nobody serves it yet
    ui.clean()

    # A workspace name with markup: refused by the API, its message shown as text.
    page.fill("#tag-spec", f"{tag}({xss(21)})")
    page.click("#tag-add")
    expect(page.locator("#tag-error")).to_contain_text(xss(21))
    ui.clean()

    # A tag whose name holds markup is listed as text (tags may hold < and =).
    odd = f"<b>{uuid.uuid4().hex[:4]}<b>=1"
    page.fill("#tag-spec", f"{odd}(^ws3)")
    page.click("#tag-add")
    ui.wait_change(f"Tag assignable: {odd}(^ws3)", box="#tag-change")
    expect(dialog.locator("tr[data-tag]").filter(has_text=odd).locator("td.who")).to_have_text("all but ws3")
    assert dialog.locator("b").count() == 0

    # Another restriction for an existing tag: the API's 409, told in the page's words (who may
    # use it now, and after), not the API's CLI advice; the button replaces it.
    page.fill("#tag-spec", tag)
    page.click("#tag-add")
    expect(page.locator("#confirm-title")).to_have_text(f"Change who may use tag {tag}?")
    expect(page.locator("#confirm-body li")).to_have_text([
        f"Who may use {tag} now: only ws1, ws2 ({tag}(ws1+ws2)).",
        f"After replacing: every workspace ({tag})."])
    expect(page.locator("#confirm-ok")).to_have_text("Replace restriction")
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        ui.shot("workers-tag-conflict.png")
    ui.cancel()
    expect(page.locator("#tag-error")).to_have_text(f"Tag {tag} not changed: still only ws1, ws2.")
    assert {t["tag"]: t for t in ui.http("GET", "/tags")}[tag]["only"] == ["ws1", "ws2"]
    page.click("#tag-add")
    ui.confirm(f"After replacing: every workspace ({tag}).")
    ((seq, _),) = ui.wait_change(f"Tag restriction replaced: {tag}", box="#tag-change")
    assert ui.event(seq)["summary"] == f"assignable tag {tag}"
    assert {t["tag"]: t for t in ui.http("GET", "/tags")}[tag]["restricted"] is False
    expect(row.locator("td.who")).to_have_text("every workspace")
    page.fill("#tag-spec", f"{tag}(^ws3)")  # and an exclusion, cancelled
    page.click("#tag-add")
    ui.cancel(f"Who may use {tag} now: every workspace ({tag}).",
              f"After replacing: all but ws3 ({tag}(^ws3)).")
    expect(page.locator("#tag-error")).to_have_text(f"Tag {tag} not changed: still every workspace.")
    assert {t["tag"]: t for t in ui.http("GET", "/tags")}[tag]["restricted"] is False
    page.fill("#tag-spec", "")
    for box in ("#tags-dialog", "#confirm-body"):  # no CLI or HTTP advice anywhere
        expect(page.locator(box)).not_to_contain_text("--replace")
        expect(page.locator(box)).not_to_contain_text("HTTP:")

    # Served once a group listens and a worker runs: the warning changes, then goes.
    ui.http("PUT", f"/groups/{name('tagged')}", {"tags": [tag]})
    expect(row.locator("td.warning")).to_have_text("no live worker")
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        ui.shot("workers-tags.png")

    # Remove: asks, with a reason.
    row.locator("button.remove-tag").click()
    ui.confirm("Users can no longer pick it", reason="retired")
    ((seq, kind),) = ui.wait_change(f"Tag {tag} removed", box="#tag-change")
    assert kind == "tags.assignable_removed" and ui.event(seq)["reason"] == "retired"
    assert tag not in {t["tag"] for t in ui.http("GET", "/tags")}
    expect(row).to_have_count(0)
    page.click("#tags-close")
    expect(dialog).to_be_hidden()


def test_workers_and_tags_views(ui: Ui, extra_workers: Suite) -> None:
    """A real worker whose init script fails is flagged with its output; tags say who serves
    them; a busy worker shows its job."""
    from playwright.sync_api import expect

    page = ui.page
    g = name("broken")
    script = f'echo "{xss(30)} cannot fetch drivers"\nexit 3\n'
    ui.http("PUT", f"/groups/{g}", {"tags": [f"{g}-q"], "init_script": script})
    extra_workers.worker(g, WORKER_GROUP=g)
    slow = ui.suite.api.submit("sleep 6; echo done", tag="bash")
    lonely = name("lonely")
    ui.http("PUT", f"/groups/{lonely}", {"tags": [f"{lonely}-q"]})

    worker = page.locator(f'#workers tr[data-group="{g}"]')
    expect(worker).to_have_class("init-failed", timeout=30_000)
    expect(worker.locator("td.init .badge")).to_have_text("init script failed")
    # Its state is not a green "ready": it takes no job (getoperate workers: init-failed).
    expect(worker.locator(".badge.b-ok", has_text="ready")).to_have_count(0)
    expect(worker.locator("td.state")).to_have_text("init failed")
    expect(worker.locator("td.state .badge")).to_have_class("badge b-bad")
    expect(worker.locator("pre.init-output")).to_contain_text(f"{xss(30)} cannot fetch drivers")
    expect(worker.locator("td.tags")).to_contain_text(f"{g}-q")
    expect(worker.locator(".tags-source")).to_have_text("from group")
    expect(worker.locator("td.runtimes")).to_contain_text("bash")
    expect(worker.locator("td.sandbox .badge")).to_be_visible()
    expect(ui.row(g)).to_contain_text("1 init failed")
    expect(page.locator("#card-init-failed")).to_have_class("card alert")
    # The router follows the heartbeats on its own: it may see the failed beat a moment later.
    wait_until(lambda: next(w for w in ui.suite.api.workers()
                            if w["group"] == g)["init_status"] == "failed",
               "the router sees the failed init", 30)
    heartbeat = next(w for w in ui.suite.api.workers() if w["group"] == g)
    assert heartbeat["init_status"] == "failed" and "cannot fetch drivers" in heartbeat["init_error"]

    # The busy default worker shows its job.
    expect(page.locator("#workers td.job code", has_text=slow["id"])).to_be_visible()

    # Per tag: waiting jobs, groups and live workers, and who does not serve.
    waiting = ui.suite.api.submit("echo hi", tag=f"{lonely}-q")
    queue = page.locator(f'#queues tr[data-tag="{lonely}-q"]')
    expect(queue.locator("td.waiting-count")).to_have_text("1")
    expect(queue.locator("td.groups")).to_have_text(lonely)
    expect(queue.locator("td.live")).to_have_text("0")
    expect(queue.locator("td.warning")).to_have_text("no live worker")
    # The failed worker listens to its tag but takes nothing while its init script fails.
    held = page.locator(f'#queues tr[data-tag="{g}-q"]')
    expect(held.locator("td.groups")).to_have_text(g)
    expect(held.locator("td.live")).to_have_text("0")
    expect(held.locator("td.warning")).to_have_text("init script failed on its 1 worker(s)")
    python3 = page.locator('#queues [data-tag="python3"]')
    expect(python3).to_be_visible()
    expect(python3).to_have_attribute("title", re.compile(r"^[1-9]\d* live worker"))
    ui.clean()
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        page.locator("#workers").scroll_into_view_if_needed()
        ui.shot("workers-workers.png")
    ui.http("DELETE", f"/groups/{lonely}")
    assert ui.suite.api.job(waiting["id"], wait=False)["status"] == "queued"


def test_history_and_diff(ui: Ui) -> None:
    from playwright.sync_api import expect

    page = ui.page
    g = name("hist")
    ops = ui.http("POST", "/tokens", {"admin": True, "name": name("ops")})
    first = ui.http("PUT", f"/groups/{g}", {"tags": ["a"], "reason": "created for the test"})
    second = ui.http("PUT", f"/groups/{g}", {"tags": ["a", "b"], "env": {"X": xss(40)},
                                               "reason": xss(41)}, token=ops["token"])
    expect(ui.row(g)).to_be_visible()
    ui.row(g).locator("button.history-btn").click()
    dialog = page.locator("#history")
    expect(dialog).to_be_visible()
    rows = dialog.locator("#history-list tr[data-seq]")
    expect(rows).to_have_count(4)  # created, tags, tags, env
    expected = ui.http("GET", f"/events?group={g}&summary=1")
    assert [int(rows.nth(i).get_attribute("data-seq")) for i in range(4)] == [
        e["seq"] for e in reversed(expected)]
    newest = rows.first
    expect(newest.locator("td.actor")).to_have_text(ops["name"])
    expect(newest.locator(".reason")).to_have_text("reason: " + xss(41))
    expect(rows.last.locator("td.actor")).to_have_text("admin")
    expect(rows.last.locator(".reason")).to_have_text("reason: created for the test")

    # The default diff spans the latest change (second's two events: from the one before).
    expect(page.locator("#diff-to")).to_have_value(str(second["seq"]))
    page.fill("#diff-from", str(first["seq"]))
    page.click("#diff-show")
    lines = page.locator("#diff-lines")
    api = ui.http("GET", f"/diff?from={first['seq']}&to={second['seq']}")["changes"]
    mine = [line for line in api if line[2:].startswith(f"group {g}:")]
    assert mine == [f"~ group {g}: tags [a] -> [a, b]", f"~ group {g}: env [] -> [X]"]
    expect(lines).to_have_text("\n".join(mine))

    # From before the group existed to now: it was added.
    page.fill("#diff-from", str(first["events"][0]["seq"] - 1))
    page.fill("#diff-to", "")
    page.click("#diff-show")
    expect(lines).to_contain_text(f"+ group {g}: {{tags=[a, b], env=[X]}}")

    # One event's own change, from its row.
    rows.nth(1).locator("button.event-diff").click()  # the tags change by ops
    expect(lines).to_have_text(f"~ group {g}: tags [a] -> [a, b]")

    # A bad point: the API's message.
    page.fill("#diff-from", "yesterday")
    page.click("#diff-show")
    expect(page.locator("#diff-error")).to_contain_text("neither a sequence number nor an ISO 8601 time")
    page.fill("#diff-from", str(first["seq"]))
    page.fill("#diff-to", str(second["seq"]))
    page.click("#diff-show")
    expect(lines).to_contain_text("tags [a] -> [a, b]")
    ui.clean()
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        ui.shot("workers-history.png")
    page.click("#history-close")
    expect(dialog).to_be_hidden()


def test_a_multi_line_variable_is_kept(ui: Ui) -> None:
    """Static variables are one NAME=value line each in the form: a value over several lines
    (set through the API) makes them read-only there, and other edits keep them."""
    from playwright.sync_api import expect

    g = name("cert")
    env = {"CERT": "-----BEGIN-----\nabc\n-----END-----", "X": "1"}
    ui.http("PUT", f"/groups/{g}", {"tags": ["a"], "env": env})
    expect(ui.row(g)).to_be_visible()
    ui.edit(g)
    expect(ui.page.locator("#ed-env")).not_to_be_editable()
    expect(ui.page.locator("#ed-env-note")).to_be_visible()
    ui.page.fill("#ed-tags", "a, b")
    ui.page.click("#ed-save")
    assert [t for _, t in ui.wait_change(f"Group {g} saved")] == ["group.tags_set"]
    assert ui.group(g)["env"] == env  # type: ignore[index]
    one_line = ui.http("PUT", f"/groups/{g}", {"env": {"X": "2"}})["group"]
    expect(ui.row(g).locator("td.version")).to_have_text(str(one_line["version"]))
    ui.edit(g)
    expect(ui.page.locator("#ed-env")).to_be_editable()
    expect(ui.page.locator("#ed-env-note")).to_be_hidden()
    ui.page.click("#ed-close")


def test_editor_screenshot(ui: Ui) -> None:
    """The editor of a group with every field set (docs/workers-edit.png)."""
    from playwright.sync_api import expect

    g = name("gpu")
    ui.http("PUT", "/scripts/ml/f/train", {"language": "python3", "content": "def main():\n    return 1\n"})
    ui.http("PUT", f"/groups/{g}", {
        "tags": ["gpu", "cuda"], "init_script": "apt-get install -y nvidia-utils\nnvidia-smi\n",
        "dedicated": ["ml:f/train"], "priorities": {"gpu": 10}, "env": {"CUDA_VISIBLE_DEVICES": "0"},
        "limits": {"memory": "8G", "max_timeout": 7200}, "sandbox": "bwrap", "network": False})
    expect(ui.row(g)).to_be_visible()
    ui.edit(g)
    expect(ui.page.locator("#ed-tags")).to_have_value("gpu, cuda")
    ui.shot("workers-edit.png", height=1180)
    ui.page.click("#ed-close")
