"""The Workers page itself: one HTML document with its inline style and script, and the
Content-Security-Policy that allows exactly those (by SHA-256) and requests to its own origin.
This module holds the markup, the style and the read-only half of the script (token, polling,
tables); services/config/workers_page_manage.py the half that changes things (forms, dialogs).
Kept apart from the endpoint code (services/config/dashboard.py) because it is markup, not logic;
as Python constants it ships in every install, editable or not, with no package data to declare.
"""

from __future__ import annotations

import base64
import hashlib

from services.config.workers_page_manage import MANAGE_JS


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
main { max-width:1440px; margin:0 auto; padding:16px 24px 40px; }
form.token { display:flex; gap:8px; align-items:center; }
input[type=password], input[type=text] { font:inherit; padding:5px 8px; border:1px solid #cfd4dc;
  border-radius:6px; min-width:16em; background:#fff; }
button { font:inherit; padding:5px 12px; border-radius:6px; border:1px solid #cfd4dc; background:#fff;
  cursor:pointer; white-space:nowrap; }
button.primary { background:var(--accent); border-color:var(--accent); color:#fff; }
button:disabled { opacity:.6; cursor:default; }
.status { color:var(--muted); font-size:12px; }
.banner { margin:16px auto 0; width:min(1392px, calc(100% - 48px)); padding:10px 14px; border-radius:8px;
  background:var(--badbg); color:var(--bad); border:1px solid #f5c2bd; }
.banner.info { background:#eef2ff; color:#2f3f99; border-color:#cdd6fb; }
.banner.sandbox { background:var(--bad); color:#fff; border-color:var(--bad); font-size:15px; }
.banner.sandbox strong { display:block; font-size:16px; margin-bottom:4px; }
.banner.sandbox ul { margin:4px 0; padding-left:20px; }
.banner.sandbox code { background:rgba(255,255,255,.18); padding:0 4px; border-radius:4px; }
.intro { max-width:640px; margin:60px auto; background:var(--card); border:1px solid var(--line);
  border-radius:10px; padding:24px 28px; }
.intro code { background:var(--chip); padding:1px 5px; border-radius:4px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(128px,1fr)); gap:12px;
  margin-bottom:18px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:10px 14px; }
.card .n { font-size:22px; font-weight:650; }
.card .l { color:var(--muted); font-size:12px; }
.card.alert .n { color:var(--warn); }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px;
  margin-bottom:18px; overflow-x:auto; }
table { border-collapse:collapse; width:100%; }
th { text-align:left; font-size:12px; color:var(--muted); font-weight:600; padding:6px 6px;
  border-bottom:1px solid var(--line); white-space:nowrap; }
td { padding:7px 6px; border-bottom:1px solid var(--line); vertical-align:top; }
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
.sandbox-note { max-width:180px; }
.section-head { display:flex; flex-wrap:wrap; gap:8px; justify-content:space-between; align-items:center;
  margin-bottom:10px; }
.section-head h2 { margin:0; }
td.actions button { display:block; width:100%; padding:3px 9px; margin:0 0 4px; }
td.tags { min-width:190px; }
button.danger { color:var(--bad); border-color:#f0b4ae; }
button.primary.danger { background:var(--bad); border-color:var(--bad); color:#fff; }
tr.init-failed td { background:#fff6f5; }
td.runtimes { min-width:140px; max-width:200px; }
td.init { min-width:170px; }
code.job-id { display:inline-block; max-width:150px; word-break:break-all; }
.change { background:var(--okbg); border:1px solid #b7e4c7; color:#14532d; border-radius:8px;
  padding:8px 12px; margin:0 0 14px; }
.change.failed { background:var(--badbg); border-color:#f5c2bd; color:var(--bad); }
.change ul { margin:4px 0 0; padding-left:18px; }
.change code { background:rgba(255,255,255,.6); padding:0 4px; border-radius:4px; }
.change .dismiss { float:right; padding:0 8px; font-size:12px; }
.change.warned { background:var(--warnbg); border-color:#f3d27a; color:#5c3a00; }
.change .warnings { margin:6px 0 0; }
.change .requeue-hint { margin-top:2px; }
dialog { border:1px solid var(--line); border-radius:12px; padding:0; width:min(720px,94vw);
  max-height:92vh; color:var(--fg); box-shadow:0 12px 40px rgba(16,24,40,.25); }
dialog.wide { width:min(1040px,96vw); }
dialog::backdrop { background:rgba(16,24,40,.45); }
.dialog-form { padding:18px 22px; display:flex; flex-direction:column; gap:10px; }
.dialog-form h2 { margin:0; font-size:16px; }
.dialog-form p { margin:0; }
.field { display:flex; flex-direction:column; gap:3px; border:none; margin:0; padding:0; }
.field > label, .field legend { font-weight:600; font-size:13px; }
.field.inline { flex-direction:row; align-items:center; gap:10px; }
.hint { color:var(--muted); font-size:12px; font-weight:400; }
textarea, select { font:inherit; padding:5px 8px; border:1px solid #cfd4dc; border-radius:6px;
  background:#fff; }
textarea { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; resize:vertical; }
.resets { display:flex; flex-wrap:wrap; gap:6px; align-items:center; margin-top:4px; }
.resets button { font-size:12.5px; padding:3px 9px; }
.limits-form { display:grid; grid-template-columns:repeat(auto-fit,minmax(120px,1fr)); gap:6px; }
.limits-form legend { margin-bottom:4px; }
.limits-form label { display:flex; flex-direction:column; font-size:12px; color:var(--muted); }
.limits-form input[type=text] { min-width:0; width:100%; }
label.check { display:flex; gap:4px; align-items:center; font-weight:400; }
input.short[type=text] { min-width:9em; flex:0 1 11em; }
.dialog-buttons { display:flex; gap:8px; justify-content:flex-end; }
#confirm-body { margin:0; padding-left:20px; }
#confirm-body li { white-space:pre-wrap; word-break:break-word; }
.diff-lines { margin:6px 0 0; padding:6px 10px; background:var(--chip); border-radius:6px;
  white-space:pre-wrap; word-break:break-word; }
.scroll { max-height:46vh; overflow:auto; }
[hidden] { display:none !important; }
"""

# The page's script is one function scope: VIEW_JS (token, polling, the tables and the shared
# helpers) followed by MANAGE_JS (services/config/workers_page_manage.py: the forms and dialogs
# that change things through the config API).
VIEW_JS = r"""
  const TOKEN_KEY = "getoperate.adminToken";
  const REFRESH_MS = 2000;
  const $ = (id) => document.getElementById(id);
  let data = null;        // the last /ui/overview answer
  let timer = null;
  let generation = 0;     // bumped when the token changes: answers of older polls are dropped
  const shown = {};       // section id -> the JSON it was last rendered from (skip if unchanged)

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

  // replaceChildren() would write null as the text "null": leave out what is not there.
  function put(el, ...kids) {
    el.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
  const enc = encodeURIComponent;

  // One call of the config API with the tab's token; a refusal throws its message, status, field
  // and error code (`conflict`, `invalid`, ...).
  async function api(method, path, body) {
    const headers = { "Authorization": "Bearer " + token() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body) });
    let payload = null;
    try { payload = await resp.json(); } catch (e) { payload = null; }
    if (!resp.ok) {
      const err = new Error((payload && payload.message) || ("HTTP " + resp.status));
      err.status = resp.status;
      err.field = payload && payload.field;
      err.code = payload && payload.error;
      throw err;
    }
    return payload;
  }

  const errorText = (err) => err.message + (err.field ? " (field: " + err.field + ")" : "");

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
  const LIMITS = ["memory", "cpu_seconds", "processes", "file_size", "max_timeout"];
  function limitValue(name, value) {
    if (name === "memory" || name === "file_size") {
      for (const [unit, size] of LIMIT_UNITS) if (value && value % size === 0) return (value / size) + unit;
    }
    return String(value);
  }
  function limitText(name, value) {
    return limitValue(name, value) + ((name === "cpu_seconds" || name === "max_timeout") ? " s" : "");
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

  const unsandboxed = () => data.workers.filter((w) => w.sandbox === "none");
  const initFailed = () => data.workers.filter((w) => w.init_status === "failed");

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

  // Re-render a section only when what it shows changed: buttons stay put under the pointer.
  function renderIfChanged(id, basis, build) {
    const key = JSON.stringify(basis);
    if (shown[id] === key) return;
    shown[id] = key;
    build();
  }

  function renderCards() {
    const waiting = data.queues.reduce((n, q) => n + q.waiting, 0);
    const running = data.queues.reduce((n, q) => n + q.running, 0);
    const stale = data.workers.filter((w) => w.stale).length;
    const unserved = data.queues.filter((q) => q.waiting > 0 && q.live_workers === 0).length;
    const bare = unsandboxed().length;
    const failed = initFailed().length;
    const card = (n, label, id, alert) => h("div", { class: alert ? "card alert" : "card", id },
      h("div", { class: "n" }, n), h("div", { class: "l" }, label));
    $("cards").replaceChildren(
      card(data.groups.length, "worker groups", "card-groups"),
      card(data.workers.length, "live workers", "card-workers"),
      card(stale, "stale workers", "card-stale", stale > 0),
      card(bare, "without sandbox", "card-unsandboxed", bare > 0),
      card(failed, "init script failed", "card-init-failed", failed > 0),
      card(waiting, "waiting jobs", "card-waiting", unserved > 0),
      card(running, "running jobs", "card-running"),
      card(data.config_seq, "config seq", "card-seq"));
  }

  function groupRow(g) {
    const live = data.workers.filter((w) => w.group === g.name);
    const stale = live.filter((w) => w.stale).length;
    const failed = live.filter((w) => w.init_status === "failed").length;
    const script = g.init_script === null || g.init_script === undefined
      ? h("span", { class: "muted" }, "none")
      : h("pre", { class: "script mono", title: "init script" }, g.init_script);
    const env = Object.keys(g.env || {});
    return h("tr", { "data-group": g.name },
      h("td", {}, h("strong", {}, g.name)),
      h("td", { class: "tags" }, chips(g.tags, g.priorities)),
      h("td", { class: "init" }, script),
      h("td", { class: "env" }, env.length ? h("div", { class: "chips" }, env.map((n) =>
        h("code", { class: "chip", title: n + "=" + g.env[n] }, n))) : h("span", { class: "muted" }, "none")),
      limitsCell(g),
      isolationCell(g),
      h("td", { class: "dedicated" }, g.dedicated.length
        ? h("div", { class: "chips" }, g.dedicated.map((d) => h("code", { class: "chip" }, d)))
        : h("span", { class: "muted" }, "none")),
      h("td", { class: "num version" }, g.version),
      h("td", { class: "num" }, live.length,
        stale ? h("div", {}, badge(stale + " stale", "warn")) : null,
        failed ? h("div", {}, badge(failed + " init failed", "bad", "see Live workers for the output")) : null),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "edit-btn", "aria-label": "edit group " + g.name,
          onclick: () => openEditor(g) }, "Edit"),
        h("button", { type: "button", class: "history-btn", "aria-label": "history of group " + g.name,
          onclick: () => openHistory(g.name) }, "History"),
        h("button", { type: "button", class: "delete-btn danger", "aria-label": "delete group " + g.name,
          onclick: () => deleteGroup(g) }, "Delete")));
  }

  function renderGroups() {
    const basis = [data.groups, data.workers.map((w) => [w.group, w.stale, w.init_status])];
    renderIfChanged("groups", basis, () => $("groups-body").replaceChildren(table(
      ["Group", "Tags", "Init script", "Env", "Limits", "Sandbox", "Dedicated to", "Version", "Live workers", ""],
      data.groups.map(groupRow), "No worker group is configured.")));
  }

  // The heartbeat's state, except that a ready worker whose init script is running or failed
  // takes no job: it says so, as `getoperate workers` does (cli/output.py: worker_state).
  function workerState(w) {
    if (w.state === "ready" && w.init_status === "failed") {
      return { text: "init failed", kind: "bad", title: "takes no job until its init script succeeds" };
    }
    if (w.state === "ready" && w.init_status === "running") {
      return { text: "init running", kind: "warn", title: "takes no job until its init script has run" };
    }
    return { text: w.state, kind: w.state === "ready" ? "ok" : w.state === "starting" ? "warn" : "none", title: null };
  }

  function renderWorkers() {
    const rows = data.workers.map((w) => {
      const cfg = w.stale
        ? [h("span", { class: "mono" }, w.config_version), " ",
           badge("stale: group at " + w.group_version, "warn",
             "this worker has not applied its group's latest change yet")]
        : [h("span", { class: "mono" }, w.config_version)];
      const state = workerState(w);
      const initKind = { ok: "ok", running: "warn", failed: "bad" }[w.init_status] || "none";
      const failed = w.init_status === "failed";
      const box = w.sandbox === "none"
        ? badge("NONE", "bad", "jobs run without a sandbox")
        : badge(w.sandbox + (w.network ? "" : " · no network"), "ok");
      return h("tr", { "data-worker": w.id, "data-group": w.group || "", class: failed ? "init-failed" : null },
        h("td", { class: "nowrap" }, h("div", { class: "mono" }, w.id), h("div", { class: "muted small" }, w.hostname + " · pid " + w.pid)),
        h("td", {}, w.group === null ? h("span", { class: "muted" }, "none") : w.group),
        h("td", { class: "tags" }, chips(w.tags), h("div", { class: "muted small tags-source" }, "from " + w.tags_source)),
        h("td", { class: "runtimes small" }, w.runtimes.length ? w.runtimes.join(", ")
          : h("span", { class: "muted" }, "not reported")),
        h("td", { class: "cfg" }, cfg),
        h("td", { class: "sandbox" }, box,
          w.sandbox_note ? h("div", { class: "muted small sandbox-note" }, w.sandbox_note) : null),
        h("td", { class: "state" }, badge(state.text, state.kind, state.title)),
        h("td", { class: "init" }, badge(failed ? "init script failed" : w.init_status, initKind),
          w.init_error ? h("pre", { class: "script mono error init-output", title: "its output" }, w.init_error) : null,
          !w.init_error && w.init_output ? h("details", { class: "init-ok-output" },
            h("summary", { class: "muted small" }, "output"),
            h("pre", { class: "script mono init-output" }, w.init_output)) : null),
        h("td", { class: "job" }, w.current_job ? h("code", { class: "job-id" }, w.current_job) : h("span", { class: "muted" }, "idle")),
        h("td", { class: "num" }, w.jobs_done),
        h("td", { class: "muted small" }, ago(data.now, w.heartbeat_at)));
    });
    $("workers-body").replaceChildren(table(
      ["Worker", "Group", "Tags", "Runtimes", "Config", "Sandbox", "State", "Init script", "Current job", "Done", "Heartbeat"],
      rows, "No live worker."));
  }

  // Why nobody takes a tag's jobs, or null when a live worker serves it.
  function unservedReason(q) {
    if (q.live_workers > 0) return null;
    if (q.init_failed > 0) return "init script failed on its " + q.init_failed + " worker(s)";
    return q.groups.length ? "no live worker" : "no group listens";
  }

  function renderQueues() {
    // Tags with work, or with nobody to do it, get a row; idle tags that are served get a chip.
    const busy = data.queues.filter((q) => q.waiting > 0 || q.running > 0 || q.live_workers === 0);
    const idle = data.queues.filter((q) => !busy.includes(q));
    const rows = busy.map((q) => {
      const why = unservedReason(q);
      return h("tr", { "data-tag": q.tag, class: q.waiting > 0 ? "waiting" : null },
        h("td", {}, h("span", { class: "chip" }, q.tag), q.assignable ? h("span", { class: "muted small" }, " assignable") : null),
        h("td", { class: "num waiting-count" }, q.waiting),
        h("td", { class: "num" }, q.running),
        h("td", { class: "groups" }, q.groups.length ? q.groups.join(", ") : h("span", { class: "muted" }, "none")),
        h("td", { class: "num live" }, q.live_workers),
        h("td", { class: "warning" }, why ? badge(why, q.waiting > 0 ? "bad" : "warn",
          q.waiting > 0 ? "jobs on this tag wait until a worker listens to it"
            : "a job sent to this tag would wait until a worker listens to it") : null));
    });
    $("queues-body").replaceChildren(
      table(["Tag", "Waiting", "Running", "Groups", "Live workers", ""], rows,
        "Every tag is served by a live worker and nothing is waiting."),
      idle.length ? h("div", { class: "idle" },
        h("span", { class: "muted small" }, "Idle (nothing waiting; served by a live worker):"),
        h("div", { class: "chips" }, idle.map((q) => h("span", { class: "chip", "data-tag": q.tag,
          title: q.live_workers + " live worker(s); groups: " + (q.groups.join(", ") || "none") }, q.tag))))
        : "");
  }

  function eventRows(events, withActions) {
    return events.map((e) => h("tr", { "data-seq": e.seq },
      h("td", { class: "num mono" }, e.seq),
      h("td", { class: "muted small nowrap", title: e.time }, e.time.replace("T", " ").slice(0, 19)),
      h("td", { class: "actor" }, e.actor),
      h("td", {}, h("code", {}, e.type)),
      h("td", { class: "what" }, e.summary, e.reason ? h("div", { class: "muted small reason" }, "reason: " + e.reason) : null),
      withActions ? h("td", {}, withActions(e)) : null));
  }

  function renderEvents() {
    renderIfChanged("events", data.events, () => $("events-body").replaceChildren(table(
      ["Seq", "Time (UTC)", "Actor", "Type", "What"], eventRows(data.events), "No event yet.")));
  }

  function render() {
    $("intro").hidden = true;
    $("content").hidden = false;
    renderSandboxBanner();
    renderCards();
    renderGroups();
    renderWorkers();
    renderQueues();
    renderEvents();
    renderTagsPanel();
    noteEditorStale();
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
    clearTimeout(timer);  // a refresh asked for meanwhile (after a change) set one too: keep one loop
    timer = setTimeout(refresh, REFRESH_MS);
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
      for (const k of Object.keys(shown)) delete shown[k];
      closeDialogs();
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
    wireManage();
    useToken(token());
  });
"""

JS = '"use strict";\n(function () {\n' + VIEW_JS + MANAGE_JS + "})();\n"

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
  <div class="change" id="change" role="status" hidden></div>
  <section id="groups">
    <div class="section-head"><h2>Worker groups</h2>
      <div class="tools"><button type="button" class="primary" id="new-group">New group</button>
      <button type="button" id="open-tags">Assignable Tags</button></div></div>
    <div id="groups-body"></div></section>
  <section id="workers"><h2>Live workers</h2><div id="workers-body"></div></section>
  <section id="queues"><h2>Queues (jobs per tag)<span class="note">tags with jobs, configured in a group, assignable, or served by a live worker</span></h2><div id="queues-body"></div></section>
  <section id="events"><h2>Recent config events</h2><div id="events-body"></div></section>
</main>

<dialog id="editor" aria-labelledby="editor-title">
  <form id="editor-form" class="dialog-form" autocomplete="off" novalidate>
    <h2 id="editor-title">Worker group</h2>
    <p class="muted small" id="ed-version"></p>
    <div class="field"><label for="ed-name">Name</label>
      <input type="text" id="ed-name" spellcheck="false" placeholder="gpu">
      <div class="hint">a-z, 0-9, - and _; workers join it with WORKER_GROUP=name.</div></div>
    <div class="field"><label for="ed-tags">Tags</label>
      <input type="text" id="ed-tags" spellcheck="false" placeholder="gpu, cuda">
      <div class="hint">Comma-separated: the queues the group's workers listen to.</div>
      <div class="resets" id="ed-resets">
        <button type="button" id="reset-default">Reset to all tags minus native</button>
        <button type="button" id="reset-native">Reset to native tags</button>
        <button type="button" id="reset-all">Reset to all tags</button>
        <span class="hint">each applies at once</span></div></div>
    <div class="field"><label for="ed-init">Init script</label>
      <textarea id="ed-init" rows="4" spellcheck="false" placeholder="bash, run by each worker before its first job"></textarea></div>
    <div class="field"><label for="ed-dedicated">Dedicated to</label>
      <input type="text" id="ed-dedicated" spellcheck="false" placeholder="ws:f/path, ws:flow/path">
      <div class="hint">Deployed scripts (ws:path) or flows (ws:flow/path), comma-separated: the group's workers also take their jobs.</div></div>
    <div class="field"><label for="ed-priorities">Priorities</label>
      <input type="text" id="ed-priorities" spellcheck="false" placeholder="gpu=10, cuda=5">
      <div class="hint">tag=1..255, comma-separated: higher is pulled first.</div></div>
    <div class="field"><label for="ed-env">Static variables</label>
      <textarea id="ed-env" rows="3" spellcheck="false" placeholder="NAME=value, one a line"></textarea>
      <div class="hint">Set in the environment of the group's jobs.</div>
      <div class="hint" id="ed-env-note" hidden>A value spans several lines: the variables are
        kept as they are here; change them with <code>getoperate group set</code> or the API.</div></div>
    <fieldset class="field limits-form"><legend>Limits <span class="hint">(empty: the default)</span></legend>
      <label>memory <input type="text" id="ed-limit-memory" placeholder="2G"></label>
      <label>cpu_seconds <input type="text" id="ed-limit-cpu_seconds" placeholder="3600"></label>
      <label>processes <input type="text" id="ed-limit-processes" placeholder="512"></label>
      <label>file_size <input type="text" id="ed-limit-file_size" placeholder="1G"></label>
      <label>max_timeout <input type="text" id="ed-limit-max_timeout" placeholder="86400"></label></fieldset>
    <div class="field inline"><label for="ed-sandbox">Sandbox</label>
      <select id="ed-sandbox"><option value="default">worker default (JOB_SANDBOX)</option>
        <option value="bwrap">bwrap</option><option value="none">none</option></select>
      <label class="check"><input type="checkbox" id="ed-network"> network</label></div>
    <div class="field"><label for="ed-reason">Reason</label>
      <input type="text" id="ed-reason" placeholder="recorded in the config log (optional)"></div>
    <p class="error" id="ed-error" role="alert" hidden></p>
    <div class="change" id="ed-change" role="status" hidden></div>
    <div class="dialog-buttons"><button type="submit" class="primary" id="ed-save">Save</button>
      <button type="button" id="ed-close">Close</button></div>
  </form>
</dialog>

<dialog id="confirm" aria-labelledby="confirm-title">
  <form id="confirm-form" class="dialog-form" autocomplete="off">
    <h2 id="confirm-title"></h2>
    <ul id="confirm-body"></ul>
    <div class="field" id="confirm-reason-row"><label for="confirm-reason">Reason</label>
      <input type="text" id="confirm-reason" placeholder="recorded in the config log (optional)"></div>
    <div class="dialog-buttons"><button type="submit" class="primary danger" id="confirm-ok">Confirm</button>
      <button type="button" id="confirm-cancel">Cancel</button></div>
  </form>
</dialog>

<dialog id="tags-dialog" class="wide" aria-labelledby="tags-title">
  <div class="dialog-form">
    <h2 id="tags-title">Assignable Tags</h2>
    <p class="muted small">Custom tags users may pick for their scripts and flows.
      <code>gpu</code>: every workspace; <code>gpu(ws1+ws2)</code>: only these;
      <code>gpu(^ws1^ws2)</code>: all but these. <code>$workspace</code> in a tag is replaced by
      the job's workspace.</p>
    <div id="tags-list"></div>
    <form id="tag-form" class="edit" autocomplete="off">
      <input type="text" id="tag-spec" spellcheck="false" placeholder="gpu(ws1+ws2)" aria-label="tag spec">
      <input type="text" id="tag-reason" placeholder="reason (optional)" aria-label="reason">
      <button type="submit" class="primary" id="tag-add">Add</button></form>
    <p class="error" id="tag-error" role="alert" hidden></p>
    <div class="change" id="tag-change" role="status" hidden></div>
    <div class="dialog-buttons"><button type="button" id="tags-close">Close</button></div>
  </div>
</dialog>

<dialog id="history" class="wide" aria-labelledby="history-title">
  <div class="dialog-form">
    <h2 id="history-title">History</h2>
    <div id="history-list"></div>
    <form id="diff-form" class="edit" autocomplete="off">
      <label for="diff-from">Diff from</label>
      <input type="text" id="diff-from" class="short" spellcheck="false" placeholder="seq or ISO time">
      <label for="diff-to">to</label>
      <input type="text" id="diff-to" class="short" spellcheck="false" placeholder="now">
      <button type="submit" class="primary" id="diff-show">Show diff</button></form>
    <p class="error" id="diff-error" role="alert" hidden></p>
    <div id="diff-out"></div>
    <div class="dialog-buttons"><button type="button" id="history-close">Close</button></div>
  </div>
</dialog>
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
