// beatq dashboard: schedule entries. The form for the store's entries, Run now, Backfill, and
// one entry's recent runs as a chart (SVG drawn here) and a table. Every check is the
// server's (app.schedules): a refusal comes back naming its field and is shown beside it.
// Uses el() and $() from dashboard.js, svg() and the formats from charts.js.
"use strict";

const RUNS_SHOWN = 60; // slots in the chart and the table
const PANEL_EVERY = 2000; // ms between two readings of the open entry, unless it ran

let panel = null; // { name, detail, fetched, busy, sig }
let editing = null; // null: adding; else the name of the entry being changed

async function send(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (method === "POST") {
    init.headers = { "Content-Type": "application/json", "X-Beatq": "1" };
    init.body = JSON.stringify(body || {});
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  return { ok: response.ok, status: response.status, data };
}

const entryPath = (name, action) =>
  `/api/schedules/${encodeURIComponent(name)}` + (action ? `/${action}` : "");

// -- the form --------------------------------------------------------------------------------
function clearErrors(root) {
  for (const span of root.querySelectorAll(".field-error")) span.textContent = "";
  for (const input of root.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

// Show a refusal beside the field it names (the form's own line when it names none here).
function showError(root, data) {
  const field = data.field || "";
  const spot = root.querySelector(`.field-error[data-field="${CSS.escape(field)}"]`)
    || root.querySelector('.field-error[data-field=""]') || $("panel-message");
  spot.textContent = data.error || "refused";
  spot.hidden = false;
  const input = root.querySelector(`[name="${CSS.escape(field === "options" ? "queue" : field)}"]`);
  if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
}

function openForm(values) {
  const form = $("entry-form");
  editing = values ? values.name : null;
  $("form-title").textContent = values ? `Change store entry ${values.name}` : "New store entry";
  for (const input of form.querySelectorAll("input[name]")) {
    input.value = values ? values[input.name] ?? "" : "";
  }
  form.elements.name.readOnly = !!values;
  clearErrors(form);
  form.hidden = false;
  form.scrollIntoView({ block: "nearest" });
  (values ? form.elements.schedule : form.elements.name).focus();
}

async function saveForm(event) {
  event.preventDefault(); // the page never submits itself (CSP form-action 'none')
  const form = $("entry-form");
  clearErrors(form);
  const body = {};
  for (const input of form.querySelectorAll("input[name]")) body[input.name] = input.value;
  const save = $("form-save");
  save.disabled = true;
  try {
    const done = editing === null
      ? await send("POST", "/api/schedules", body)
      : await send("POST", entryPath(editing, "update"), body);
    if (!done.ok) { showError(form, done.data); return; }
    form.hidden = true;
    openEntry(body.name, editing === null
      ? `Added ${body.name}: the beat leader plans it within a second.`
      : `Changed ${body.name}: the new definition runs from its next slot.`);
  } finally {
    save.disabled = false;
  }
}

// -- one entry's panel -----------------------------------------------------------------------
function openEntry(name, message) {
  panel = { name, detail: null, fetched: 0, busy: false, sig: null };
  const box = $("entry-panel");
  box.hidden = false;
  $("panel-title").textContent = name;
  $("panel-source").textContent = "";
  $("chart").replaceChildren();
  $("runs").tBodies[0].replaceChildren();
  $("backfill-start").value = "";
  $("backfill-end").value = "";
  clearErrors(box);
  say(message || "");
  loadPanel();
  box.scrollIntoView({ block: "nearest" });
}

function say(text, bad) {
  const line = $("panel-message");
  line.hidden = !text;
  line.textContent = text;
  line.className = bad ? "panel-message bad" : "panel-message";
}

async function loadPanel() {
  if (!panel || panel.busy) return;
  const current = panel;
  current.busy = true;
  try {
    const got = await send("GET", entryPath(current.name) + `?limit=${RUNS_SHOWN}`);
    if (panel !== current) return;
    current.fetched = Date.now();
    if (!got.ok) {
      if (got.status === 404) say(`${current.name} is gone: ${got.data.error}`, true);
      else say(got.data.error, true);
      return;
    }
    current.detail = got.data;
    renderPanel(got.data);
  } finally {
    current.busy = false;
  }
}

// Called by render() with every snapshot: read the open entry again when it ran, or now and then.
function refreshPanel(entries) {
  if (!panel || panel.gone) return;
  const row = entries.find((s) => s.name === panel.name);
  const sig = row ? `${row.runs}|${row.missed}|${row.last_run}|${row.paused}` : "gone";
  if (sig !== panel.sig || Date.now() - panel.fetched > PANEL_EVERY) {
    panel.sig = sig;
    loadPanel();
  }
}

function renderPanel(d) {
  $("panel-title").textContent = `${d.name}: ${d.task || "?"} ${d.schedule || ""}`;
  $("panel-source").textContent = d.editable
    ? "store entry"
    : `defined in ${d.source}: read-only here, change it there`;
  $("run-now").hidden = false;
  $("edit-entry").hidden = !d.editable;
  $("remove-entry").hidden = !d.editable;
  $("backfill-zone").textContent = `times in ${d.zone}`;
  const drawn = JSON.stringify([d.runs, d.zone]);
  if (panel && panel.drawn !== drawn) { // drawn again only when a run changed
    panel.drawn = drawn;
    drawChart($("chart"), d.runs.slice().reverse(), d.zone);
  }
  syncRows($("runs").tBodies[0], d.runs, (r) => `${r.kind}:${r.slot}:${r.task_id || ""}`, (r) =>
    el("tr", { class: `run ${r.outcome}` },
      timeCell(r.slot_local, r.slot_utc),
      td(r.kind),
      td(r.sent, "time"),
      td(r.lateness_ms === null ? "–" : `${r.lateness_ms.toFixed(1)} ms`, "num"),
      el("td", {}, r.state ? badge(r.state) : r.outcome === "skipped" ? badge("skipped", "skipped") : "–"),
      td(r.took, "num"),
      td(r.task_id ? r.task_id.slice(0, 12) + (r.task_id.length > 12 ? "…" : "") : "–", "id", r.task_id),
      td(r.reason, "clip", r.reason)));
  showEmpty("runs-empty", !d.runs.length);
}

async function panelAction(button, action, body, report) {
  if (!panel) return;
  const box = $("entry-panel");
  clearErrors(box);
  button.disabled = true;
  try {
    const done = await send("POST", entryPath(panel.name, action), body);
    if (!done.ok) {
      if (done.data.field === "start" || done.data.field === "end") showError(box, done.data);
      else say(done.data.error, true);
      return null;
    }
    say(report(done.data));
    if (action !== "remove") loadPanel();
    return done.data;
  } finally {
    button.disabled = false;
  }
}

// -- the chart -------------------------------------------------------------------------------
// Runs oldest to newest, left to right: a strip of outcomes (failed and skipped marked, the
// reason in the title), then lateness and runtime per slot as bars, each on its own scale.
function drawChart(box, runs, zone) {
  const width = Math.max(480, Math.floor(box.clientWidth) || 760);
  const left = 64, right = 12, strip = 14, band = 70, gap = 22;
  const height = 18 + strip + gap + band + gap + band + 30;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": "recent runs: lateness and runtime per slot" });
  const step = (width - left - right) / Math.max(runs.length, 1);
  const barWidth = Math.max(2, Math.min(18, step * 0.7));
  const x = (i) => left + step * i + (step - barWidth) / 2;
  const stripTop = 18, lateTop = stripTop + strip + gap, tookTop = lateTop + band + gap;
  const lateMax = Math.max(1, ...runs.map((r) => r.lateness_ms || 0));
  const tookMax = Math.max(0.001, ...runs.map((r) => r.took_s || 0));
  const label = svgText;
  chart.append(
    label("outcome", 4, stripTop + 11), label("lateness", 4, lateTop + 12),
    label(`${fmtMs(lateMax)}`, 4, lateTop + 26, "scale"),
    label("runtime", 4, tookTop + 12), label(`${fmtSeconds(tookMax)}`, 4, tookTop + 26, "scale"),
    svg("line", { x1: left, x2: width - right, y1: lateTop + band, y2: lateTop + band, class: "axis" }),
    svg("line", { x1: left, x2: width - right, y1: tookTop + band, y2: tookTop + band, class: "axis" }));
  runs.forEach((r, i) => {
    const about = [r.slot_local, r.kind, r.state || r.outcome,
      r.lateness_ms !== null ? `late ${fmtMs(r.lateness_ms)}` : null,
      r.took ? `ran ${r.took}` : null, r.reason ? `not run: ${r.reason}` : null,
      r.task_id ? `task ${r.task_id}` : null].filter(Boolean).join(" · ");
    chart.append(svg("rect", { x: x(i), y: stripTop, width: barWidth, height: strip,
      class: `mark ${r.outcome}`, "data-slot": r.slot_local }, about));
    if (r.lateness_ms !== null) {
      const h = Math.max(1, (r.lateness_ms / lateMax) * band);
      chart.append(svg("rect", { x: x(i), y: lateTop + band - h, width: barWidth, height: h,
        class: `col late ${r.outcome}` }, about));
    }
    if (r.took_s !== null) {
      const h = Math.max(1, (r.took_s / tookMax) * band);
      chart.append(svg("rect", { x: x(i), y: tookTop + band - h, width: barWidth, height: h,
        class: `col took ${r.outcome}` }, about));
    }
    if (r.outcome === "skipped") { // nothing ran: a cross on both baselines
      for (const top of [lateTop, tookTop]) {
        chart.append(svg("path", { d: crossAt(x(i) + barWidth / 2, top + band - 5), class: "skip" }, about));
      }
    }
  });
  if (runs.length) {
    chart.append(label(runs[0].slot_local, left, height - 8, "label"));
    const end = label(runs[runs.length - 1].slot_local, width - right, height - 8, "label");
    end.setAttribute("text-anchor", "end");
    chart.append(end);
  } else {
    chart.append(label("no runs yet", left, lateTop + 30, "label"));
  }
  const legend = label(`slots in ${zone} · green ran · red failed · grey skipped (hover for why) · blue running`,
    left, 12, "legend");
  chart.append(legend);
  box.replaceChildren(chart);
}

function crossAt(cx, cy) {
  return `M${cx - 4},${cy - 4}L${cx + 4},${cy + 4}M${cx - 4},${cy + 4}L${cx + 4},${cy - 4}`;
}

// -- start -----------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("new-entry").addEventListener("click", () => openForm(null));
  $("entry-form").addEventListener("submit", saveForm);
  $("form-cancel").addEventListener("click", () => { $("entry-form").hidden = true; });
  $("close-panel").addEventListener("click", () => { panel = null; $("entry-panel").hidden = true; });
  $("edit-entry").addEventListener("click", () => {
    if (panel && panel.detail && panel.detail.form) openForm(panel.detail.form);
  });
  $("remove-entry").addEventListener("click", async (event) => {
    if (!panel || !window.confirm(`Remove the store entry ${panel.name}? Its history stays.`)) return;
    const name = panel.name;
    const done = await panelAction(event.target, "remove", {}, () => `Removed ${name}: no more runs are sent.`);
    if (done && panel && panel.name === name) {
      panel.gone = true; // its history stays in the broker; nothing more to do with it here
      for (const id of ["run-now", "edit-entry", "remove-entry"]) $(id).hidden = true;
    }
  });
  $("run-now").addEventListener("click", (event) => panelAction(event.target, "trigger", {},
    (d) => `Run now: task ${d.task_id} queued (the beat leader sends it within a second).`));
  $("backfill").addEventListener("click", (event) => panelAction(event.target, "backfill",
    { start: $("backfill-start").value, end: $("backfill-end").value },
    (d) => `Backfill ${d.request_id}: ` + (d.slots === null
      ? "the leader queues the slots in the range that did not run, oldest first."
      : `${d.slots} slot${d.slots === 1 ? "" : "s"} in the range did not run; the leader queues them oldest first.`)));
});
