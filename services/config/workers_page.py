"""The Workers page itself: one HTML document with its inline style and script, and the
Content-Security-Policy that allows exactly those (by SHA-256) and requests to its own origin.
Kept apart from the endpoint code (services/config/dashboard.py) because it is markup, not logic;
as Python constants it ships in every install, editable or not, with no package data to declare.
"""

from __future__ import annotations

import base64
import hashlib


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSS = r"""
:root { --fg:#1d2433; --muted:#667085; --line:#e4e7ec; --bg:#f7f8fa; --card:#fff;
  --accent:#3b5bdb; --ok:#1b7f4b; --okbg:#e3f5ea; --warn:#9a5b00; --warnbg:#fff3d6;
  --bad:#b42318; --badbg:#fde8e6; --chip:#eef1f6; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
  color:var(--fg); background:var(--bg); }
header { background:var(--card); border-bottom:1px solid var(--line); padding:12px 24px;
  display:flex; flex-wrap:wrap; gap:12px 24px; align-items:center; justify-content:space-between; }
h1 { font-size:18px; margin:0; font-weight:650; }
h1 small { color:var(--muted); font-weight:400; margin-left:6px; }
h2 { font-size:15px; margin:0 0 10px; font-weight:650; }
h2 .note { font-weight:400; color:var(--muted); font-size:12px; margin-left:8px; }
main { max-width:1280px; margin:0 auto; padding:16px 24px 40px; }
form.token { display:flex; gap:8px; align-items:center; }
input[type=password], input[type=text] { font:inherit; padding:5px 8px; border:1px solid #cfd4dc;
  border-radius:6px; min-width:16em; background:#fff; }
button { font:inherit; padding:5px 12px; border-radius:6px; border:1px solid #cfd4dc; background:#fff;
  cursor:pointer; white-space:nowrap; }
button.primary { background:var(--accent); border-color:var(--accent); color:#fff; }
button:disabled { opacity:.6; cursor:default; }
.status { color:var(--muted); font-size:12px; }
.banner { margin:16px auto 0; max-width:1232px; padding:10px 14px; border-radius:8px;
  background:var(--badbg); color:var(--bad); border:1px solid #f5c2bd; }
.banner.info { background:#eef2ff; color:#2f3f99; border-color:#cdd6fb; }
.banner.sandbox { background:var(--bad); color:#fff; border-color:var(--bad); font-size:15px; }
.banner.sandbox strong { display:block; font-size:16px; margin-bottom:4px; }
.banner.sandbox ul { margin:4px 0; padding-left:20px; }
.banner.sandbox code { background:rgba(255,255,255,.18); padding:0 4px; border-radius:4px; }
.intro { max-width:640px; margin:60px auto; background:var(--card); border:1px solid var(--line);
  border-radius:10px; padding:24px 28px; }
.intro code { background:var(--chip); padding:1px 5px; border-radius:4px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:12px;
  margin-bottom:18px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:10px 14px; }
.card .n { font-size:22px; font-weight:650; }
.card .l { color:var(--muted); font-size:12px; }
.card.alert .n { color:var(--warn); }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px;
  margin-bottom:18px; overflow-x:auto; }
table { border-collapse:collapse; width:100%; }
th { text-align:left; font-size:12px; color:var(--muted); font-weight:600; padding:6px 8px;
  border-bottom:1px solid var(--line); white-space:nowrap; }
td { padding:7px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
tr:last-child td { border-bottom:none; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
.mono, code { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; }
.muted { color:var(--muted); }
.small { font-size:12px; }
.chips { display:flex; flex-wrap:wrap; gap:4px; }
.chip { background:var(--chip); border-radius:999px; padding:1px 8px; font-size:12px; white-space:nowrap; }
.idle { display:flex; flex-wrap:wrap; gap:6px 10px; align-items:center; margin-top:10px; }
td.nowrap { white-space:nowrap; }
.chip sup { color:var(--accent); margin-left:2px; }
.badge { display:inline-block; border-radius:4px; padding:0 6px; font-size:12px; font-weight:600;
  white-space:nowrap; }
.b-ok { background:var(--okbg); color:var(--ok); }
.b-warn { background:var(--warnbg); color:var(--warn); }
.b-bad { background:var(--badbg); color:var(--bad); }
.b-none { background:var(--chip); color:var(--muted); }
tr.waiting td { background:#fffbf0; }
pre.script { margin:0; max-width:320px; max-height:7.5em; overflow:auto; background:var(--chip);
  padding:4px 8px; border-radius:6px; white-space:pre-wrap; word-break:break-all; }
form.edit { display:flex; flex-wrap:wrap; gap:6px; align-items:center; }
form.edit input { flex:1 1 22em; }
.error { color:var(--bad); margin:6px 0 0; }
#problems p { margin:0 0 12px; }
.ok { color:var(--ok); }
.stale-data main { opacity:.55; }
.limits { display:grid; grid-template-columns:auto auto; gap:0 8px; font-size:12px; white-space:nowrap; }
.limits .set { font-weight:650; }
.limits .dflt { color:var(--muted); }
.sandbox-note { max-width:260px; }
[hidden] { display:none !important; }
"""

JS = r"""
"use strict";
(function () {
  const TOKEN_KEY = "getoperate.adminToken";
  const REFRESH_MS = 2000;
  const $ = (id) => document.getElementById(id);
  let data = null;        // the last /ui/overview answer
  let editing = null;     // {name, version, error, saving} while a group's tags are being edited
  let notice = null;      // a short success line under the groups table
  let timer = null;
  let generation = 0;     // bumped when the token changes: answers of older polls are dropped

  // Build elements from data without ever parsing it as HTML: strings become text nodes.
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  async function api(method, path, body) {
    const headers = { "Authorization": "Bearer " + token() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body) });
    let payload = null;
    try { payload = await resp.json(); } catch (e) { payload = null; }
    if (!resp.ok) {
      const msg = (payload && payload.message) || ("HTTP " + resp.status);
      const err = new Error(msg);
      err.status = resp.status;
      err.field = payload && payload.field;
      throw err;
    }
    return payload;
  }

  function showBanner(text, info) {
    const b = $("banner");
    b.textContent = text || "";
    b.className = info ? "banner info" : "banner";
    b.hidden = !text;
  }

  function ago(now, t) {
    const s = Math.max(0, Math.round(now - t));
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m ago";
    return Math.floor(s / 3600) + "h ago";
  }

  function chips(tags, priorities) {
    if (!tags || !tags.length) return h("span", { class: "muted" }, "none");
    return h("div", { class: "chips" }, tags.map((t) => {
      const p = priorities && priorities[t];
      return h("span", { class: "chip", title: p ? "priority " + p : null }, t, p ? h("sup", {}, p) : null);
    }));
  }

  // Limits as the CLI writes them: sizes in the largest exact unit, times in seconds.
  const LIMIT_UNITS = [["T", 1024 ** 4], ["G", 1024 ** 3], ["M", 1024 ** 2], ["K", 1024]];
  function limitText(name, value) {
    if (name === "memory" || name === "file_size") {
      for (const [unit, size] of LIMIT_UNITS) if (value && value % size === 0) return (value / size) + unit;
      return String(value);
    }
    return (name === "cpu_seconds" || name === "max_timeout") ? value + " s" : String(value);
  }

  function limitsCell(g) {
    const set = g.limits || {};
    const rows = Object.entries(g.effective_limits || {}).map(([name, value]) => {
      const own = set[name] !== undefined && set[name] !== null;
      return [h("span", { class: own ? "set" : "dflt" }, name),
        h("span", { class: own ? "set" : "dflt", "data-limit": name,
          title: own ? "set for this group" : "the default" },
          limitText(name, value) + (own ? "" : " (default)"))];
    });
    return h("td", { class: "limits-cell" }, h("div", { class: "limits" }, rows));
  }

  function isolationCell(g) {
    return h("td", { class: "isolation" },
      g.sandbox === null || g.sandbox === undefined
        ? badge("worker default", "none", "the sandbox each worker is started with (JOB_SANDBOX)")
        : badge(g.sandbox, g.sandbox === "none" ? "bad" : "ok"),
      " ", g.network ? badge("network", "none") : badge("no network", "ok"));
  }

  function unsandboxed() {
    return data.workers.filter((w) => w.sandbox === "none");
  }

  function renderSandboxBanner() {
    const bare = unsandboxed();
    const b = $("sandbox-banner");
    b.hidden = bare.length === 0;
    if (!bare.length) { b.replaceChildren(); return; }
    b.replaceChildren(
      h("strong", {}, bare.length === 1 ? "1 live worker runs jobs WITHOUT a sandbox"
        : bare.length + " live workers run jobs WITHOUT a sandbox"),
      "Their jobs run with everything the worker process may do: its files, its network, its other jobs.",
      h("ul", {}, bare.map((w) => h("li", { "data-worker": w.id },
        h("code", {}, w.id), w.group ? " (group " + w.group + ")" : "",
        ": " + (w.sandbox_note || "no reason given")))));
  }

  function badge(text, kind, title) {
    return h("span", { class: "badge b-" + kind, title: title || null }, text);
  }

  function table(headers, rows, empty) {
    if (!rows.length) return h("p", { class: "muted" }, empty);
    return h("table", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
      h("tbody", {}, rows));
  }

  function renderCards() {
    const waiting = data.queues.reduce((n, q) => n + q.waiting, 0);
    const running = data.queues.reduce((n, q) => n + q.running, 0);
    const stale = data.workers.filter((w) => w.stale).length;
    const unserved = data.queues.filter((q) => q.waiting > 0 && q.live_workers === 0).length;
    const bare = unsandboxed().length;
    const card = (n, label, id, alert) => h("div", { class: alert ? "card alert" : "card", id },
      h("div", { class: "n" }, n), h("div", { class: "l" }, label));
    $("cards").replaceChildren(
      card(data.groups.length, "worker groups", "card-groups"),
      card(data.workers.length, "live workers", "card-workers"),
      card(stale, "stale workers", "card-stale", stale > 0),
      card(bare, "without sandbox", "card-unsandboxed", bare > 0),
      card(waiting, "waiting jobs", "card-waiting", unserved > 0),
      card(running, "running jobs", "card-running"),
      card(data.config_seq, "config seq", "card-seq"));
  }

  function groupRow(g) {
    const live = data.workers.filter((w) => w.group === g.name);
    const stale = live.filter((w) => w.stale).length;
    const isEditing = editing && editing.name === g.name;
    let tagsCell;
    if (isEditing) {
      const input = h("input", { type: "text", id: "edit-tags", "aria-label": "tags of " + g.name,
        autocomplete: "off", spellcheck: "false" });
      input.value = editing.draft;
      input.addEventListener("input", () => { editing.draft = input.value; });
      tagsCell = h("td", {},
        h("form", { class: "edit", onsubmit: (e) => { e.preventDefault(); save(); } },
          input,
          h("button", { type: "submit", class: "primary", disabled: editing.saving }, editing.saving ? "Saving..." : "Save"),
          h("button", { type: "button", onclick: () => { editing = null; renderGroups(); } }, "Cancel")),
        h("div", { class: "muted small" }, "Comma-separated. Workers of the group apply the change in place."),
        editing.error ? h("p", { class: "error", role: "alert", id: "edit-error" }, editing.error) : null);
      setTimeout(() => { if (document.activeElement !== input) input.focus(); }, 0);
    } else {
      tagsCell = h("td", {}, chips(g.tags, g.priorities));
    }
    const script = g.init_script === null || g.init_script === undefined
      ? h("span", { class: "muted" }, "none")
      : h("pre", { class: "script mono", title: "init script" }, g.init_script);
    return h("tr", { "data-group": g.name },
      h("td", {}, h("strong", {}, g.name)),
      tagsCell,
      h("td", {}, script),
      limitsCell(g),
      isolationCell(g),
      h("td", {}, g.dedicated.length ? h("div", { class: "chips" }, g.dedicated.map((d) => h("code", { class: "chip" }, d)))
        : h("span", { class: "muted" }, "none")),
      h("td", { class: "num" }, g.version),
      h("td", { class: "num" }, live.length, stale ? h("div", {}, badge(stale + " stale", "warn")) : null),
      h("td", {}, isEditing ? null : h("button", { type: "button", class: "edit-btn",
        "aria-label": "edit tags of " + g.name, disabled: editing !== null,
        onclick: () => { editing = { name: g.name, version: g.version, draft: g.tags.join(", "), error: null, saving: false };
                         notice = null; renderGroups(); } }, "Edit tags")));
  }

  function renderGroups() {
    const rows = data.groups.map(groupRow);
    $("groups-note").textContent = editing ? "updates paused while editing" : "";
    $("groups-body").replaceChildren(
      table(["Group", "Tags", "Init script", "Limits", "Sandbox", "Dedicated to", "Version", "Live workers", ""], rows,
        "No worker group is configured."),
      notice ? h("p", { class: "ok", role: "status", id: "edit-notice" }, notice) : "");
  }

  function renderWorkers() {
    const rows = data.workers.map((w) => {
      const cfg = w.stale
        ? [h("span", { class: "mono" }, w.config_version), " ",
           badge("stale: group at " + w.group_version, "warn",
             "this worker has not applied its group's latest change yet")]
        : [h("span", { class: "mono" }, w.config_version)];
      const stateKind = w.state === "ready" ? "ok" : w.state === "starting" ? "warn" : "none";
      const initKind = { ok: "ok", running: "warn", failed: "bad" }[w.init_status] || "none";
      const box = w.sandbox === "none"
        ? badge("NONE", "bad", "jobs run without a sandbox")
        : badge(w.sandbox + (w.network ? "" : " · no network"), "ok");
      return h("tr", { "data-worker": w.id, "data-group": w.group || "" },
        h("td", { class: "nowrap" }, h("div", { class: "mono" }, w.id), h("div", { class: "muted small" }, w.hostname + " · pid " + w.pid)),
        h("td", {}, w.group === null ? h("span", { class: "muted" }, "none") : w.group),
        h("td", {}, chips(w.tags), h("div", { class: "muted small" }, "from " + w.tags_source)),
        h("td", { class: "runtimes" }, w.runtimes.length ? chips(w.runtimes)
          : h("span", { class: "muted" }, "not reported")),
        h("td", { class: "cfg" }, cfg),
        h("td", { class: "sandbox" }, box,
          w.sandbox_note ? h("div", { class: "muted small sandbox-note" }, w.sandbox_note) : null),
        h("td", {}, badge(w.state, stateKind)),
        h("td", {}, badge(w.init_status, initKind, w.init_error),
          w.init_error ? h("pre", { class: "script mono error" }, w.init_error) : null),
        h("td", {}, w.current_job ? h("code", {}, w.current_job) : h("span", { class: "muted" }, "idle")),
        h("td", { class: "num" }, w.jobs_done),
        h("td", { class: "muted small" }, ago(data.now, w.heartbeat_at)));
    });
    $("workers-body").replaceChildren(table(
      ["Worker", "Group", "Tags", "Runtimes", "Config version", "Sandbox", "State", "Init", "Current job", "Jobs done", "Heartbeat"],
      rows, "No live worker."));
  }

  function renderQueues() {
    // Tags with work, or with nobody to do it, get a row; idle tags that are served get a chip.
    const busy = data.queues.filter((q) => q.waiting > 0 || q.running > 0 || q.live_workers === 0);
    const idle = data.queues.filter((q) => !busy.includes(q));
    const rows = busy.map((q) => {
      const unserved = q.waiting > 0 && q.live_workers === 0;
      return h("tr", { "data-tag": q.tag, class: q.waiting > 0 ? "waiting" : null },
        h("td", {}, h("span", { class: "chip" }, q.tag)),
        h("td", { class: "num waiting-count" }, q.waiting),
        h("td", { class: "num" }, q.running),
        h("td", {}, q.groups.length ? q.groups.join(", ") : h("span", { class: "muted" }, "none")),
        h("td", { class: "num" }, q.live_workers),
        h("td", {}, unserved ? badge(q.groups.length ? "no live worker" : "no group listens", "bad",
          "jobs on this tag wait until a worker listens to it") : null));
    });
    $("queues-body").replaceChildren(
      table(["Tag", "Waiting", "Running", "Groups", "Live workers", ""], rows,
        "No job is waiting or running."),
      idle.length ? h("div", { class: "idle" },
        h("span", { class: "muted small" }, "Idle (nothing waiting; served by a live worker):"),
        h("div", { class: "chips" }, idle.map((q) => h("span", { class: "chip", "data-tag": q.tag,
          title: q.live_workers + " live worker(s); groups: " + q.groups.join(", ") }, q.tag))))
        : "");
  }

  function renderEvents() {
    const rows = data.events.map((e) => h("tr", { "data-seq": e.seq },
      h("td", { class: "num mono" }, e.seq),
      h("td", { class: "muted small", title: e.time }, e.time.replace("T", " ").slice(0, 19)),
      h("td", {}, e.actor),
      h("td", {}, h("code", {}, e.type)),
      h("td", {}, e.summary, e.reason ? h("div", { class: "muted small" }, "reason: " + e.reason) : null)));
    $("events-body").replaceChildren(table(["Seq", "Time (UTC)", "Actor", "Type", "What"], rows,
      "No event yet."));
  }

  function render() {
    $("intro").hidden = true;
    $("content").hidden = false;
    renderSandboxBanner();
    renderCards();
    if (!editing) renderGroups();
    renderWorkers();
    renderQueues();
    renderEvents();
    $("problems").replaceChildren(...data.problems.map((p) => h("p", { class: "error" }, p)));
  }

  async function refresh() {
    const gen = generation;
    clearTimeout(timer);
    if (!token()) return;
    try {
      const answer = await api("GET", "/ui/overview");
      if (gen !== generation) return;
      data = answer;
      document.body.classList.remove("stale-data");
      showBanner("");
      render();
      $("status").textContent = "updated " + new Date().toLocaleTimeString() + " · refreshes every 2 s";
    } catch (err) {
      if (gen !== generation) return;
      if (data) document.body.classList.add("stale-data");
      if (err.status === 401 || err.status === 403) {
        showBanner("Token rejected: " + err.message + ". Enter an admin token above.");
        $("status").textContent = "not refreshing";
        return;  // no polling with a rejected token
      }
      showBanner("Cannot load the overview: " + err.message + " (retrying)");
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  async function save() {
    if (!editing || editing.saving) return;
    const tags = editing.draft.split(/[,\n]/).map((t) => t.trim()).filter((t) => t.length);
    editing.saving = true;
    editing.error = null;
    renderGroups();
    try {
      const answer = await api("PUT", "/groups/" + encodeURIComponent(editing.name),
        { tags, expected_version: editing.version });
      const changed = answer.seq === null ? "no change" : "saved at seq " + answer.seq;
      notice = "Group " + editing.name + ": " + changed +
        (answer.published ? "" : " (stored; workers get it when NATS is back)");
      editing = null;
      await refresh();
    } catch (err) {
      editing.saving = false;
      editing.error = err.message + (err.field ? " (field: " + err.field + ")" : "");
      renderGroups();
    }
  }

  function useToken(value) {
    generation += 1;
    if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    $("token").placeholder = value ? "set; paste another" : "admin token";
    $("forget").hidden = !value;
    if (!value) {
      clearTimeout(timer);
      data = null;
      editing = null;
      $("content").hidden = true;
      $("sandbox-banner").hidden = true;
      $("intro").hidden = false;
      showBanner("");
      $("status").textContent = "";
      return;
    }
    $("status").textContent = "loading...";
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = $("token").value.trim();
      if (value) useToken(value);
    });
    $("forget").addEventListener("click", () => useToken(""));
    useToken(token());
  });
})();
"""

HTML = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Workers · getOperate</title>
<link rel="icon" href="data:,">
<style>{CSS}</style>
</head>
<body>
<header>
  <h1>Workers <small>getOperate config service</small></h1>
  <form class="token" id="token-form" autocomplete="off">
    <label for="token" class="status">Admin token</label>
    <input type="password" id="token" name="token" placeholder="admin token" autocomplete="off">
    <button type="submit" class="primary" id="use-token">Use token</button>
    <button type="button" id="forget" hidden>Forget</button>
    <span class="status" id="status" role="status"></span>
  </form>
</header>
<div class="banner" id="banner" role="alert" hidden></div>
<div class="banner sandbox" id="sandbox-banner" role="alert" hidden></div>
<div class="intro" id="intro">
  <h2>Enter an admin token to load the page</h2>
  <p>The token is kept in this browser tab only (sessionStorage). <code>getoperate up</code> writes
  the bootstrap admin token to <code>.getoperate/admin.token</code> in the folder it was started
  from; <code>getoperate token create --admin</code> issues another one.</p>
</div>
<main id="content" hidden>
  <div class="cards" id="cards"></div>
  <div id="problems"></div>
  <section id="groups"><h2>Worker groups<span class="note" id="groups-note"></span></h2><div id="groups-body"></div></section>
  <section id="workers"><h2>Live workers</h2><div id="workers-body"></div></section>
  <section id="queues"><h2>Queues (jobs per tag)</h2><div id="queues-body"></div></section>
  <section id="events"><h2>Recent config events</h2><div id="events-body"></div></section>
</main>
<script>{JS}</script>
</body>
</html>
"""

CSP = "; ".join([
    "default-src 'none'",
    f"script-src {_csp_hash(JS)}",
    f"style-src {_csp_hash(CSS)}",
    "connect-src 'self'",
    "img-src data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
