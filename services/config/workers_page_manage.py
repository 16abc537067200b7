"""The half of the Workers page's script that changes things: the group editor (create, edit,
the three reset buttons), delete, the assignable tags dialog, a group's history and diff, and the
confirmation asked before anything is removed.

Every change is one call of the config API with the tab's admin token, exactly as the CLI makes
it: the page has no write path of its own. Each answer's events are read back with
`GET /events?since=&until=&summary=1` and shown (seq, type, summary), with the answer's
`warnings` (tags a change leaves with waiting jobs and no group, and the `getoperate jobs requeue`
command that moves them: services/config/unserved.py). Edits carry the version the
form showed (`expected_version`), so a change made meanwhile by someone else is a 409 that the
form explains and reloads from. A reset's answer is loaded back into the form (a reset also drops
the priorities of tags the group leaves), and Edit opens on the newest of the overview and this
page's last write. Like the rest of the page, everything is built with `h()` as text.

The text is concatenated after VIEW_JS (services/config/workers_page.py) inside one function
scope, so it uses that half's helpers (`h`, `api`, `data`, `refresh`, ...) directly.
"""

from __future__ import annotations

MANAGE_JS = r"""
  const PRESET_LABELS = { default: "all tags minus native", native: "native tags", all: "all tags" };
  let editor = null;      // {mode: "create"|"edit", name, base (the group as shown), filled, limits, busy}
  const written = {};     // group name -> the group as this page's last write of it answered
  let historyOf = null;   // the group whose history dialog is open
  let confirmResolve = null;
  let changes = 0;        // numbers each change notice (data-n), so a repeated one is told apart

  const splitList = (text) => text.split(/[,\n]/).map((t) => t.trim()).filter((t) => t.length);
  const sameJson = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const missing = (before, after) => before.filter((x) => !after.includes(x));

  // Whether a group with these tags and dedicated targets serves `tag`. A target's tag is the
  // target itself, or past 100 characters its first 83, "-" and a hash (shared/tags.py).
  function serves(tags, dedicated, tag) {
    return tags.includes(tag) || dedicated.some((t) => t === tag ||
      (t.length > 100 && tag.length === 100 && tag.startsWith(t.slice(0, 83) + "-")));
  }

  // The priorities the API drops when the group's tags and targets become these (shared/state.py:
  // a priority outlives no tag), unless the same change sets the priorities too.
  const droppedPriorities = (g, tags, dedicated) =>
    Object.keys(g.priorities).filter((t) => !serves(tags, dedicated, t));

  function showError(id, text) {
    $(id).textContent = text || "";
    $(id).hidden = !text;
  }

  // --- what a change became: its events, read back from the log --------------------------------

  // `answer` is a write's answer: `events` (group writes) or only `seq` (tag writes); null seq
  // means nothing differed, so nothing was written.
  async function changeEvents(answer) {
    if (answer.seq === null || answer.seq === undefined) return [];
    const listed = answer.events && answer.events.length ? answer.events : [{ seq: answer.seq, type: "" }];
    const first = listed[0].seq;
    try {
      const read = await api("GET", "/events?since=" + first + "&until=" + answer.seq + "&summary=1");
      const seqs = listed.map((e) => e.seq);
      return read.filter((e) => answer.events ? seqs.includes(e.seq) : e.seq === answer.seq);
    } catch (err) {  // the write happened: show what its answer says
      return listed.map((e) => ({ seq: e.seq, type: e.type, summary: "", actor: "", reason: null }));
    }
  }

  // The API's warnings name the command that moves stranded jobs (services/config/unserved.py):
  // it is split out and shown as a command of its own, with a generic one if none is named.
  const REQUEUE = /;?\s*move them with `(getoperate jobs requeue [^`]*)`/;
  const REQUEUE_HINT = "getoperate jobs requeue --tag T --to T2";

  function warningList(warnings) {
    if (!warnings || !warnings.length) return null;
    let named = false;
    const items = warnings.map((w) => {
      const m = REQUEUE.exec(w);
      if (m) named = true;
      return h("li", { class: "warning" }, m ? w.slice(0, m.index) + w.slice(m.index + m[0].length) : w,
        m ? h("div", { class: "requeue-hint" }, "Move them to a tag a group serves: ",
          h("code", { class: "requeue" }, m[1])) : null);
    });
    return h("div", { class: "warnings" }, h("strong", {}, "Warning:"), h("ul", {}, items),
      named ? null : h("div", { class: "requeue-hint" }, "Jobs waiting on a tag no group serves move with ",
        h("code", { class: "requeue" }, REQUEUE_HINT), "."));
  }

  function renderChange(ids, title, events, published, failed, warnings) {
    changes += 1;
    const warned = !failed && warnings && warnings.length > 0;
    for (const id of ids) {
      const box = $(id);
      box.dataset.n = String(changes);
      box.className = failed ? "change failed" : warned ? "change warned" : "change";
      box.setAttribute("role", failed || warned ? "alert" : "status");
      box.hidden = false;
      put(box,
        h("button", { type: "button", class: "dismiss", "aria-label": "dismiss",
          onclick: () => { box.hidden = true; } }, "×"),
        h("strong", { class: "change-title" }, title),
        failed ? null : events.length
          ? h("ul", {}, events.map((e) => h("li", { "data-seq": e.seq, "data-type": e.type },
              h("code", {}, "seq " + e.seq), " ", h("code", {}, e.type), e.summary ? " " + e.summary : "")))
          : h("div", { class: "small" }, "No change: it already was so; nothing was written."),
        published === false ? h("div", { class: "small" },
          "Stored; the workers get it when NATS is back.") : null,
        warned ? warningList(warnings) : null);
    }
  }

  async function reportChange(ids, title, answer) {
    const events = await changeEvents(answer);
    renderChange(ids, title, events, answer.published, false, answer.warnings);
    refresh();
  }

  // --- confirmation before anything is removed ------------------------------------------------

  // Resolves to {ok, reason}: ok only when the confirm button was pressed.
  function confirmAction({ title, lines, ok, reason }) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-body").replaceChildren(...lines.map((l) => h("li", {}, l)));
    $("confirm-reason-row").hidden = !reason;
    $("confirm-reason").value = "";
    $("confirm-ok").textContent = ok || "Confirm";
    dialog.returnValue = "";
    dialog.showModal();
    $("confirm-cancel").focus();
    return new Promise((resolve) => { confirmResolve = resolve; });
  }

  function confirmClosed() {
    const resolve = confirmResolve;
    confirmResolve = null;
    if (resolve) resolve({ ok: $("confirm").returnValue === "ok", reason: $("confirm-reason").value.trim() });
  }

  // --- the group editor ---------------------------------------------------------------------

  // The newer of the group as the overview showed it and as this page's last write answered:
  // an Edit clicked before the refresh that follows a save still shows what the server has.
  function latest(g) {
    const w = g && written[g.name];
    return w && w.version > g.version ? w : g;
  }

  function openEditor(shown) {
    const g = latest(shown);
    editor = { mode: g ? "edit" : "create", name: g ? g.name : "", base: g || null, busy: false };
    fillEditor(g);
    $("ed-reason").value = "";
    showError("ed-error", "");
    $("ed-change").hidden = true;
    $("editor").showModal();
    (g ? $("ed-tags") : $("ed-name")).focus();
  }

  function versionLine(g) {
    $("ed-version").className = "muted small";
    $("ed-version").textContent = g
      ? "Version " + g.version + ": saving is refused if someone changes the group meanwhile."
      : "Created only if no group has this name yet.";
  }

  // Called on every refresh: warns before saving that the group changed under the open form.
  function noteEditorStale() {
    if (!editor || !editor.base || !data) return;
    const now = data.groups.find((g) => g.name === editor.name);
    if (now && now.version <= editor.base.version) return;  // older: a poll sent before a write
    $("ed-version").className = "error small";
    $("ed-version").textContent = now
      ? "Someone else changed this group meanwhile (it is at version " + now.version + ", this form shows " +
        editor.base.version + "): saving will be refused and reload it."
      : "Someone else deleted this group meanwhile.";
  }

  function fillEditor(g) {
    $("editor-title").textContent = g ? "Edit group " + g.name : "New worker group";
    versionLine(g);
    $("ed-name").value = g ? g.name : "";
    $("ed-name").readOnly = !!g;
    $("ed-resets").hidden = !g;
    $("ed-tags").value = g ? g.tags.join(", ") : "";
    $("ed-init").value = g && g.init_script ? g.init_script : "";
    $("ed-dedicated").value = g ? g.dedicated.join(", ") : "";
    $("ed-priorities").value = g ? Object.entries(g.priorities).map(([t, p]) => t + "=" + p).join(", ") : "";
    // A value over several lines cannot be one NAME=value line: such env is kept as it is.
    editor.envLocked = !!g && Object.values(g.env).some((v) => /[\r\n]/.test(v));
    $("ed-env").readOnly = editor.envLocked;
    $("ed-env-note").hidden = !editor.envLocked;
    $("ed-env").value = g ? Object.entries(g.env).map(([k, v]) => k + "=" + v).join("\n") : "";
    const limits = {};
    for (const n of LIMITS) {
      const v = g && g.limits[n] !== undefined && g.limits[n] !== null ? limitValue(n, g.limits[n]) : "";
      $("ed-limit-" + n).value = v;
      if (v) limits[n] = v;
    }
    editor.limits = limits;  // as shown: limits are sent only when one of them was edited
    $("ed-sandbox").value = g && g.sandbox ? g.sandbox : "default";
    $("ed-network").checked = g ? g.network : true;
    editor.filled = formValues();
  }

  // The fields a reload may keep as typed (not the name, not the tags a reset sets).
  const DRAFTS = ["ed-init", "ed-dedicated", "ed-priorities", "ed-env",
    ...LIMITS.map((n) => "ed-limit-" + n), "ed-sandbox", "ed-network"];
  const formValues = () => Object.fromEntries(DRAFTS.map((id) =>
    [id, $(id).type === "checkbox" ? $(id).checked : $(id).value]));

  // After a reset the form shows the group as the server now has it (a reset also drops the
  // priorities of tags the group no longer serves); a field the user changed keeps what was typed.
  function reloadEditor(fresh) {
    const typed = Object.entries(formValues()).filter(([id, v]) => v !== editor.filled[id]);
    editor.base = fresh;
    fillEditor(fresh);
    for (const [id, v] of typed) {
      if (id === "ed-env" && editor.envLocked) continue;
      if ($(id).type === "checkbox") $(id).checked = v; else $(id).value = v;
    }
  }

  function closeEditor() {
    editor = null;
    if ($("editor").open) $("editor").close();
  }

  class FormError extends Error {}

  function parsePriorities(text) {
    const out = {};
    for (const item of splitList(text)) {
      const i = item.lastIndexOf("=");
      const n = i > 0 ? Number(item.slice(i + 1).trim()) : NaN;
      if (!Number.isInteger(n)) throw new FormError("Priorities: write tag=number (e.g. gpu=10), not " + JSON.stringify(item) + ".");
      out[item.slice(0, i).trim()] = n;
    }
    return out;
  }

  function parseEnv(text) {
    const out = {};
    text.split("\n").forEach((line, i) => {
      line = line.replace(/\r$/, "");
      if (!line.trim()) return;
      const eq = line.indexOf("=");
      if (eq < 1) throw new FormError("Static variables, line " + (i + 1) + ": write NAME=value, not " + JSON.stringify(line) + ".");
      const name = line.slice(0, eq).trim();
      if (Object.prototype.hasOwnProperty.call(out, name)) throw new FormError("Static variables: " + name + " is given twice.");
      out[name] = line.slice(eq + 1);
    });
    return out;
  }

  function readDraft() {
    const limits = {};
    for (const n of LIMITS) { const v = $("ed-limit-" + n).value.trim(); if (v) limits[n] = v; }
    const script = $("ed-init").value;
    return {
      tags: splitList($("ed-tags").value),
      init_script: script.trim() ? script : null,
      dedicated: splitList($("ed-dedicated").value),
      priorities: parsePriorities($("ed-priorities").value),
      env: editor.envLocked ? editor.base.env : parseEnv($("ed-env").value),
      limits,
      sandbox: $("ed-sandbox").value,
      network: $("ed-network").checked,
    };
  }

  // The PUT body (only what differs from the group as shown) and what it removes, in words.
  function groupChange(base, d) {
    const body = {};
    const removed = [];
    if (!base) {
      body.tags = d.tags;
      if (d.init_script !== null) body.init_script = d.init_script;
      if (d.dedicated.length) body.dedicated = d.dedicated;
      if (Object.keys(d.priorities).length) body.priorities = d.priorities;
      if (Object.keys(d.env).length) body.env = d.env;
      if (Object.keys(d.limits).length) body.limits = d.limits;
      if (d.sandbox !== "default") body.sandbox = d.sandbox;
      if (!d.network) body.network = false;
      return { body, removed };
    }
    if (!sameJson(d.tags, base.tags)) body.tags = d.tags;
    if (d.init_script !== base.init_script) body.init_script = d.init_script;
    if (!sameJson(d.dedicated, base.dedicated)) body.dedicated = d.dedicated;
    if (!sameJson(d.priorities, base.priorities)) body.priorities = d.priorities;
    if (!sameJson(d.env, base.env)) body.env = d.env;
    if (!sameJson(d.limits, editor.limits)) body.limits = d.limits;
    if (d.sandbox !== (base.sandbox || "default")) body.sandbox = d.sandbox;
    if (d.network !== base.network) body.network = d.network;
    const gone = (label, list) => { if (list.length) removed.push(label + ": " + list.join(", ")); };
    if ("tags" in body) gone("Removes tags", missing(base.tags, d.tags));
    if ("dedicated" in body) gone("Removes dedicated targets", missing(base.dedicated, d.dedicated));
    if ("env" in body) gone("Removes static variables", missing(Object.keys(base.env), Object.keys(d.env)));
    const prios = (tags) => tags.map((t) => t + "=" + base.priorities[t]);
    if ("priorities" in body) gone("Removes priorities of", prios(missing(Object.keys(base.priorities), Object.keys(d.priorities))));
    else if ("tags" in body || "dedicated" in body) gone("Removes priorities of", prios(droppedPriorities(base, d.tags, d.dedicated)));
    if ("init_script" in body && d.init_script === null) removed.push("Removes the init script");
    return { body, removed };
  }

  async function saveEditor() {
    if (!editor || editor.busy) return;
    const ed = editor;
    let draft;
    try { draft = readDraft(); } catch (err) { showError("ed-error", err.message); return; }
    const name = ed.mode === "create" ? $("ed-name").value.trim() : ed.name;
    if (!name) { showError("ed-error", "Give the group a name."); return; }
    const { body, removed } = groupChange(ed.base, draft);
    if (ed.base && !Object.keys(body).length) { showError("ed-error", "Nothing to save: the form shows the group as it is."); return; }
    if (removed.length) {
      const answer = await confirmAction({ title: "Remove from group " + name + "?", lines: removed, ok: "Save and remove" });
      if (!answer.ok || editor !== ed) return;
    }
    body.expected_version = ed.base ? ed.base.version : 0;
    const reason = $("ed-reason").value.trim();
    if (reason) body.reason = reason;
    ed.busy = true;
    $("ed-save").disabled = true;
    showError("ed-error", "");
    try {
      const answer = await api("PUT", "/groups/" + enc(name), body);
      if (answer.group) written[name] = answer.group;
      closeEditor();
      await reportChange(["change"], "Group " + name + (ed.mode === "create" ? " created" : " saved"), answer);
    } catch (err) {
      await groupRefused(ed, name, err);
    } finally {
      ed.busy = false;
      $("ed-save").disabled = false;
    }
  }

  // A refused write from the editor: a 409 on the version reloads the group into the form.
  async function groupRefused(ed, name, err) {
    if (editor !== ed) return;
    if (!(err.status === 409 && err.field === "expected_version")) { showError("ed-error", errorText(err)); return; }
    if (ed.mode === "create") {
      showError("ed-error", "A group named " + name + " already exists (" + err.message + "). Close this form and edit it instead.");
      return;
    }
    try {
      const fresh = await api("GET", "/groups/" + enc(name));
      if (editor !== ed) return;
      ed.base = fresh;
      fillEditor(fresh);
      showError("ed-error", "Someone else changed group " + name + " since this form was loaded (" + err.message +
        "). Nothing was saved; the form now shows its current config (version " + fresh.version + "): make your change again.");
    } catch (again) {
      showError("ed-error", again.status === 404 ? "Someone else deleted group " + name + " meanwhile; nothing was saved."
        : "Someone else changed group " + name + " (" + err.message + "), and reloading it failed: " + again.message);
    }
    refresh();
  }

  async function resetTags(preset) {
    if (!editor || !editor.base || editor.busy) return;
    const ed = editor;
    const g = ed.base;
    const tags = (data && data.presets && data.presets[preset]) || [];
    const removed = missing(g.tags, tags);
    const added = missing(tags, g.tags);
    const dropped = droppedPriorities(g, tags, g.dedicated);
    if (removed.length || dropped.length) {
      const lines = removed.length ? ["Removes tags: " + removed.join(", ")] : [];
      if (added.length) lines.push("Adds tags: " + added.join(", "));
      if (dropped.length) lines.push("Removes priorities of: " + dropped.map((t) => t + "=" + g.priorities[t]).join(", "));
      const answer = await confirmAction({ title: "Reset the tags of group " + g.name + " to " + PRESET_LABELS[preset] + "?",
        lines, ok: "Reset tags" });
      if (!answer.ok || editor !== ed) return;
    }
    const body = { preset, expected_version: g.version };
    const reason = $("ed-reason").value.trim();
    if (reason) body.reason = reason;
    ed.busy = true;
    showError("ed-error", "");
    try {
      const answer = await api("POST", "/groups/" + enc(g.name) + "/reset", body);
      if (answer.group) written[g.name] = answer.group;
      if (editor === ed && answer.group) reloadEditor(answer.group);
      await reportChange(["ed-change", "change"], "Group " + g.name + ": tags reset to " + PRESET_LABELS[preset], answer);
    } catch (err) {
      await groupRefused(ed, g.name, err);
    } finally {
      ed.busy = false;
    }
  }

  async function deleteGroup(g) {
    const live = data.workers.filter((w) => w.group === g.name).length;
    const answer = await confirmAction({ title: "Delete group " + g.name + "?", ok: "Delete group", reason: true,
      lines: ["Removes its config: tags " + (g.tags.join(", ") || "(none)") +
                (g.init_script ? ", its init script" : "") + (g.dedicated.length ? ", dedicated targets" : "") +
                (Object.keys(g.env).length ? ", static variables" : "") + ".",
              live + " live worker(s) of the group then listen to no tag until the group exists again."] });
    if (!answer.ok) return;
    let path = "/groups/" + enc(g.name) + "?expected_version=" + g.version;
    if (answer.reason) path += "&reason=" + enc(answer.reason);
    try {
      await reportChange(["change"], "Group " + g.name + " deleted", await api("DELETE", path));
    } catch (err) {
      const why = err.status === 409 ? "someone else changed it since the page showed it (" + err.message + "); look again"
        : errorText(err);
      renderChange(["change"], "Group " + g.name + " was not deleted: " + why, [], true, true);
      refresh();
    }
  }

  // --- assignable tags ----------------------------------------------------------------------

  function restrictionText(t) {
    if (t.only.length) return "only " + t.only.join(", ");
    if (t.exclude.length) return "all but " + t.exclude.join(", ");
    return "every workspace";
  }

  // A spec the API parsed (`gpu`, `gpu(ws1+ws2)`, `gpu(^ws1^ws2)`) as {tag, only, exclude}.
  function parseSpec(spec) {
    const m = /^([^()]+?)(?:\(([^()]*)\))?$/.exec(spec.trim());
    if (!m) return null;
    const rule = (m[2] || "").trim();
    const names = (text, sep) => text.split(sep).map((n) => n.trim());
    return { tag: m[1].trim(), only: rule && !rule.startsWith("^") ? names(rule, "+") : [],
      exclude: rule.startsWith("^") ? names(rule.slice(1), "^") : [] };
  }

  // The 409 of a tag already assignable with another restriction, in the page's words: who may
  // use it now (read again: someone may have changed it since the last refresh) and after.
  async function tagConflictLines(spec) {
    const wanted = parseSpec(spec);
    let now = null;
    try { now = wanted && (await api("GET", "/tags")).find((t) => t.tag === wanted.tag); } catch (err) { now = null; }
    if (!wanted || !now) return { tag: wanted ? wanted.tag : spec, lines: ["This tag is already assignable with another restriction."] };
    return { tag: wanted.tag, now, lines: [
      "Who may use " + wanted.tag + " now: " + restrictionText(now) + " (" + now.spec + ").",
      "After replacing: " + restrictionText(wanted) + " (" + spec.trim() + ")."] };
  }

  function renderTagsPanel() {
    if (!data || !$("tags-dialog").open) return;
    const basis = [data.assignable, data.queues.filter((q) => q.assignable)];
    renderIfChanged("tags", basis, () => {
      const rows = data.assignable.map((t) => {
        const q = data.queues.find((x) => x.tag === t.tag);
        const template = t.tag.includes("$");
        const why = template || !q ? null : unservedReason(q);
        return h("tr", { "data-tag": t.tag },
          h("td", {}, h("span", { class: "chip" }, t.tag)),
          h("td", { class: "who" }, restrictionText(t)),
          h("td", { class: "groups" }, template ? h("span", { class: "muted" }, "a template: resolved per job")
            : q && q.groups.length ? q.groups.join(", ") : h("span", { class: "muted" }, "none")),
          h("td", { class: "num live" }, template || !q ? "" : q.live_workers),
          h("td", { class: "num" }, q ? q.waiting : ""),
          h("td", { class: "warning" }, why ? badge(why, q.waiting > 0 ? "bad" : "warn",
            "jobs sent to this tag wait until a worker listens to it") : null),
          h("td", {}, h("button", { type: "button", class: "remove-tag danger", "aria-label": "remove tag " + t.tag,
            onclick: () => removeTag(t) }, "Remove")));
      });
      $("tags-list").replaceChildren(h("div", { class: "scroll" }, table(
        ["Tag", "Workspaces", "Groups", "Live workers", "Waiting", "", ""], rows,
        "No assignable tag yet: jobs may use the language tags and the tags of the groups.")));
    });
  }

  function openTags() {
    delete shown.tags;
    showError("tag-error", "");
    $("tag-change").hidden = true;
    $("tags-dialog").showModal();
    renderTagsPanel();
    $("tag-spec").focus();
  }

  async function addTag(replace) {
    const spec = $("tag-spec").value.trim();
    if (!spec) { showError("tag-error", "Write a tag, e.g. gpu or gpu(ws1+ws2)."); return; }
    const body = { spec };
    const reason = $("tag-reason").value.trim();
    if (reason) body.reason = reason;
    if (replace) body.replace = true;
    showError("tag-error", "");
    $("tag-add").disabled = true;
    try {
      const answer = await api("POST", "/tags", body);
      $("tag-spec").value = "";
      $("tag-reason").value = "";
      await reportChange(["tag-change", "change"], (replace ? "Tag restriction replaced: " : "Tag assignable: ") +
        (answer.item ? answer.item.spec : spec), answer);
    } catch (err) {
      if (err.status === 409 && !replace) {
        const conflict = await tagConflictLines(spec);
        const answer = await confirmAction({ title: "Change who may use tag " + conflict.tag + "?",
          lines: conflict.lines, ok: "Replace restriction" });
        if (answer.ok) { $("tag-add").disabled = false; return addTag(true); }
        showError("tag-error", "Tag " + conflict.tag + " not changed" +
          (conflict.now ? ": still " + restrictionText(conflict.now) + "." : "."));
      } else {
        showError("tag-error", errorText(err));
      }
    } finally {
      $("tag-add").disabled = false;
    }
  }

  async function removeTag(t) {
    const answer = await confirmAction({ title: "Remove the assignable tag " + t.tag + "?", ok: "Remove tag", reason: true,
      lines: ["Users can no longer pick it (" + restrictionText(t) + "). Groups keep listening to it."] });
    if (!answer.ok) return;
    let path = "/tags/" + enc(t.tag);
    if (answer.reason) path += "?reason=" + enc(answer.reason);
    try {
      await reportChange(["tag-change", "change"], "Tag " + t.tag + " removed", await api("DELETE", path));
    } catch (err) {
      showError("tag-error", errorText(err));
    }
  }

  // --- a group's history and a diff between two points -----------------------------------------

  async function openHistory(name) {
    historyOf = name;
    $("history-title").textContent = "History of group " + name;
    $("history-list").replaceChildren(h("p", { class: "muted" }, "Loading..."));
    $("diff-out").replaceChildren();
    showError("diff-error", "");
    $("history").showModal();
    try {
      const events = await api("GET", "/events?group=" + enc(name) + "&summary=1&limit=10000");
      if (historyOf !== name) return;
      const newest = events.slice().reverse();
      $("history-list").replaceChildren(h("div", { class: "scroll" }, table(
        ["Seq", "Time (UTC)", "Actor", "Type", "What", ""],
        eventRows(newest, (e) => h("button", { type: "button", class: "event-diff",
          "aria-label": "what seq " + e.seq + " changed",
          onclick: () => { $("diff-from").value = String(e.seq - 1); $("diff-to").value = String(e.seq); showDiff(); } },
          "What changed")),
        "No event about this group.")));
      // By default the diff spans the group's latest change.
      $("diff-to").value = newest.length ? String(newest[0].seq) : "";
      $("diff-from").value = newest.length > 1 ? String(newest[1].seq) : newest.length ? String(newest[0].seq - 1) : "";
    } catch (err) {
      $("history-list").replaceChildren(h("p", { class: "error" }, errorText(err)));
    }
  }

  // `GET /diff` covers the whole config: the group's own lines are shown, the others counted.
  async function showDiff() {
    const name = historyOf;
    const from = $("diff-from").value.trim();
    const to = $("diff-to").value.trim();
    showError("diff-error", "");
    if (!from) { showError("diff-error", "Give a starting point: a seq or an ISO time."); return; }
    try {
      const answer = await api("GET", "/diff?from=" + enc(from) + (to ? "&to=" + enc(to) : ""));
      if (historyOf !== name) return;
      const about = (line) => { const rest = line.slice(2); return rest === "group " + name || rest.startsWith("group " + name + ":"); };
      const mine = answer.changes.filter(about);
      const others = answer.changes.length - mine.length;
      put($("diff-out"),
        h("p", { class: "small" }, "Group " + name + " from seq " + answer.from_seq + " to seq " + answer.to_seq + ":"),
        mine.length ? h("pre", { class: "diff-lines mono", id: "diff-lines" }, mine.join("\n"))
          : h("p", { class: "muted", id: "diff-lines" }, "No change to this group between these points."),
        others ? h("p", { class: "muted small" }, others + " other change(s) elsewhere in the config in that span.") : null);
    } catch (err) {
      showError("diff-error", errorText(err));
    }
  }

  function closeDialogs() {
    for (const id of ["confirm", "editor", "tags-dialog", "history"]) if ($(id).open) $(id).close();
    editor = null;
    historyOf = null;
    for (const name of Object.keys(written)) delete written[name];
  }

  function wireManage() {
    const onSubmit = (id, fn) => $(id).addEventListener("submit", (e) => { e.preventDefault(); fn(); });
    $("new-group").addEventListener("click", () => openEditor(null));
    $("open-tags").addEventListener("click", openTags);
    onSubmit("editor-form", saveEditor);
    $("ed-close").addEventListener("click", closeEditor);
    $("editor").addEventListener("close", () => { editor = null; });
    for (const preset of Object.keys(PRESET_LABELS)) {
      $("reset-" + preset).addEventListener("click", () => resetTags(preset));
    }
    onSubmit("confirm-form", () => $("confirm").close("ok"));
    $("confirm-cancel").addEventListener("click", () => $("confirm").close(""));
    $("confirm").addEventListener("close", confirmClosed);
    onSubmit("tag-form", () => addTag(false));
    $("tags-close").addEventListener("click", () => $("tags-dialog").close());
    onSubmit("diff-form", showDiff);
    $("history-close").addEventListener("click", () => $("history").close());
    $("history").addEventListener("close", () => { historyOf = null; });
  }
"""
