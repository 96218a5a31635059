// beatq dashboard: renders the server's snapshots; every time string comes from the server.
"use strict";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["SUCCESS", "FAILURE", "REVOKED", "EXPIRED", "DEAD"]);

let source = null;
let query = "";
let retryTimer = null;
const expanded = new Set(); // task ids whose detail row is open
const details = new Map(); // task id -> detail from /api/tasks/ID (with the state it was read in)

// -- DOM helpers -----------------------------------------------------------------------------
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const td = (text, cls, title) => el("td", { class: cls, title: title || null }, text ?? "–");
const badge = (text, cls) => el("span", { class: `badge ${cls || text}` }, text);
const timeCell = (local, utc) =>
  el("td", { class: "time" }, local ?? "–", utc ? el("span", { class: "sub" }, utc) : null);

// Keep rows whose data did not change (so a button under the pointer survives an update);
// `live` names fields that change every second and are refreshed in place instead.
function syncRows(tbody, items, keyOf, build, live = [], refresh = null) {
  const old = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  let prev = null;
  for (const item of items) {
    const key = keyOf(item);
    const stable = Object.fromEntries(Object.entries(item).filter(([k]) => !live.includes(k)));
    const sig = JSON.stringify(stable);
    let tr = old.get(key);
    if (!tr || tr.dataset.sig !== sig) {
      const fresh = build(item);
      fresh.dataset.key = key;
      fresh.dataset.sig = sig;
      if (tr && sameShape(tr, fresh)) {
        // swap only the cells that changed: a button in an unchanged cell stays clickable
        const cells = [...tr.children];
        [...fresh.children].forEach((cell, i) => { if (!cell.isEqualNode(cells[i])) cells[i].replaceWith(cell); });
        Object.assign(tr.dataset, fresh.dataset);
      } else {
        if (tr) tr.replaceWith(fresh);
        tr = fresh;
      }
    }
    old.delete(key);
    if (refresh) refresh(tr, item);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    prev = tr;
  }
  for (const tr of old.values()) tr.remove();
}

function sameShape(a, b) {
  return a.className === b.className && a.children.length === b.children.length;
}

function showEmpty(id, empty) {
  $(id).hidden = !empty;
}

// -- talking to the server -------------------------------------------------------------------
function setLive(on, text) {
  const live = $("live");
  live.className = on ? "live" : "live off";
  live.textContent = text || (on ? "live" : "disconnected");
}

function showFailure(message) {
  const box = $("failure");
  box.hidden = !message;
  box.textContent = message || "";
}

function connect() {
  if (source) source.close();
  clearTimeout(retryTimer);
  const url = "/api/stream" + (query ? "?q=" + encodeURIComponent(query) : "");
  source = new EventSource(url);
  source.addEventListener("state", (event) => {
    setLive(true);
    showFailure("");
    render(JSON.parse(event.data));
  });
  source.addEventListener("failure", (event) => {
    setLive(false, "broker unreachable");
    showFailure(JSON.parse(event.data));
  });
  source.onerror = () => {
    setLive(false);
    if (source.readyState === EventSource.CLOSED) retryTimer = setTimeout(connect, 3000);
  };
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Beatq": "1" },
    body: JSON.stringify(body || {}),
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    showFailure(data.error || `${path}: HTTP ${response.status}`);
    throw new Error(data.error || response.statusText);
  }
  return data;
}

function action(button, path, body) {
  button.disabled = true;
  post(path, body).catch(() => {}).finally(() => { button.disabled = false; });
}

async function loadDetail(id) {
  const response = await fetch("/api/tasks/" + encodeURIComponent(id), { credentials: "same-origin" });
  if (response.ok) details.set(id, await response.json());
}

// -- rendering -------------------------------------------------------------------------------
let last = null;

function render(state) {
  last = state;
  $("app-name").textContent = state.app;
  $("broker").textContent = state.broker;
  $("clock").textContent = `${state.now.local}  ·  ${state.now.utc}  ·  ${state.zone}`;
  renderSummary(state);
  renderWorkers(state.workers);
  renderLeader(state.leader);
  renderQueues(state.queues);
  renderBackend(state);
  renderSchedules(state.schedules);
  refreshPanel(state.schedules); // schedules.js
  renderTasks(state.tasks);
  renderDead(state.dead_letters);
  drawTimeline(state.timeline); // charts.js
}

function renderSummary(state) {
  $("sum-workers").textContent = state.workers.length;
  $("sum-queued").textContent = state.queues.reduce((n, q) => n + q.depth, 0);
  $("sum-leader").textContent = state.leader ? state.leader.holder : "none";
  $("sum-leader").className = state.leader ? "" : "bad";
  // every failure the page knows of, not only those the search shows
  const failed = (state.tasks && state.tasks.failed) || 0;
  $("sum-failed").textContent = state.tasks && state.tasks.enabled ? failed : "–";
  $("sum-failed").className = failed ? "bad" : "";
  $("sum-dead").textContent = state.dead_letters.count;
  $("sum-dead").className = state.dead_letters.count ? "warn" : "";
}

function renderWorkers(workers) {
  syncRows($("workers").tBodies[0], workers, (w) => w.hostname, (w) => {
    const share = w.concurrency ? Math.min(1, w.active / w.concurrency) : 0;
    const fill = el("i");
    fill.style.width = `${share * 100}%`; // through CSSOM: the CSP forbids style attributes
    const bar = el("span", { class: share >= 1 ? "bar full" : "bar" }, fill);
    const extra = [w.processed !== undefined ? `${w.processed} done` : null,
      w.failed ? `${w.failed} failed` : null, w.reserved ? `${w.reserved} reserved` : null];
    return el("tr", { class: "worker" },
      td(w.hostname, "mono"),
      el("td", {}, bar, `${w.active}/${w.concurrency} busy`,
        el("span", { class: "sub" }, extra.filter(Boolean).join(" · ") || "\u00a0")),
      td(`${w.pool} ×${w.concurrency}`),
      td(w.queues.join(", ")),
      el("td", { class: "time" }, w.started || "–", el("span", { class: "sub", dataset: { live: "uptime" } })));
  }, ["uptime"], (tr, w) => { tr.querySelector("[data-live=uptime]").textContent = w.uptime ? `up ${w.uptime}` : ""; });
  showEmpty("workers-empty", !workers.length);
  const active = workers.flatMap((w) => w.tasks.map((t) => ({ ...t, worker: w.hostname })));
  syncRows($("active").tBodies[0], active, (t) => t.id, (t) => el("tr", {},
    el("td", {}, t.name, el("span", { class: "sub mono" }, t.id)),
    td(t.args + (t.kwargs && t.kwargs !== "{}" ? " " + t.kwargs : ""), "clip mono"),
    td(t.worker, "mono"),
    el("td", { dataset: { live: "running_for" } })),
  ["running_for"], (tr, t) => { tr.querySelector("[data-live=running_for]").textContent = t.running_for || "–"; });
  showEmpty("active-empty", !active.length);
}

function renderLeader(leader) {
  const box = $("leader");
  const sig = JSON.stringify(leader && { ...leader, remaining: 0, age: 0, expires: 0 });
  if (box.dataset.sig !== sig) {
    box.dataset.sig = sig;
    box.replaceChildren();
    if (!leader) {
      box.className = "leader none";
      box.textContent = "No beat holds the lease: periodic tasks are not being sent.";
    } else {
      box.className = "leader";
      box.append(
        el("dt", {}, "Holder"), el("dd", { class: "mono", id: "leader-holder" }, leader.holder),
        el("dt", {}, "Fencing token"), el("dd", { class: "mono" }, leader.token),
        el("dt", {}, "Leading since"), el("dd", { class: "time" }, leader.since || "–",
          leader.since_utc ? el("span", { class: "sub" }, leader.since_utc) : null),
        el("dt", {}, "Leading for"), el("dd", { dataset: { live: "age" } }),
        el("dt", {}, "Lease expires"), el("dd", { dataset: { live: "expires" } }));
    }
  }
  if (leader) {
    box.querySelector("[data-live=age]").textContent = leader.age || "–";
    box.querySelector("[data-live=expires]").textContent =
      `in ${leader.remaining.toFixed(1)}s (${leader.expires}) unless renewed`;
  }
}

function renderQueues(queues) {
  syncRows($("queues").tBodies[0], queues, (q) => q.name, (q) => el("tr", { class: "queue" },
    td(q.name, "mono"),
    td(q.depth, "num depth"),
    td(q.delayed + (q.delayed_more ? "+" : ""), "num"),
    td(q.consumers.length ? q.consumers.join(", ") : "no worker", q.consumers.length ? "mono" : "warn")));
}

// The backend card: its servers (shards, replicas, sentinels) and each process's URLs,
// a URL other than this dashboard's marked (that process talks to another backend).
function renderBackend(state) {
  const topo = state.topology;
  if (!topo) return;
  $("backend-url").textContent = topo.url;
  $("backend-kind").textContent = topo.service ? `${topo.kind}, master '${topo.service}'` : topo.kind;
  const file = $("backend-file");
  file.hidden = !topo.path;
  file.textContent = topo.path ? `SQLite file ${topo.path}, journal ${topo.journal_mode}, ${topo.size}` : "";
  const servers = [];
  for (const shard of topo.shards) {
    const where = shard.slots ? `slots ${shard.slots}` : null;
    servers.push({ ...shard.master, where, queues: shard.queues.join(", ") || null });
    for (const replica of shard.replicas) servers.push({ ...replica, where });
  }
  servers.push(...topo.sentinels);
  syncRows($("topology").tBodies[0], servers, (n) => `${n.role}:${n.address}`, (n) => el("tr", { class: `node ${n.role}` },
    el("td", { class: "mono" }, n.address, n.where ? el("span", { class: "sub" }, n.where) : null,
      n.queues ? el("span", { class: "sub" }, `queues ${n.queues}`) : null),
    td(n.role),
    el("td", { class: n.status === "ok" ? "ok" : "bad" }, n.status, n.detail ? el("span", { class: "sub" }, n.detail) : null),
    td(n.version),
    td(n.lag, "num"),
    td(n.behind, "num")));
  $("topology").hidden = !servers.length;
  const failover = $("backend-failover");
  failover.hidden = topo.epoch === null;
  failover.textContent = topo.epoch === null ? "" : topo.last_failover
    ? `Last failover ${topo.last_failover} (${topo.last_failover_utc}), epoch ${topo.epoch}`
    : "No failover yet (epoch 0)";
  const own = topo.dashboard;
  const processes = [
    ...state.workers.map((w) => ({ name: w.hostname, kind: "worker", broker: w.broker, result_backend: w.result_backend })),
    ...(state.beats || []).map((b) => ({ name: b.holder, kind: b.leader ? "beat (leader)" : "beat (standby)", broker: b.broker, result_backend: b.result_backend })),
    { name: "this dashboard", kind: "dashboard", broker: own.broker, result_backend: own.result_backend },
  ];
  const url = (value, mine) => el("td", { class: value === mine ? "mono" : "mono warn",
    title: value === mine ? null : "not the URL this dashboard uses" }, value ?? "–");
  syncRows($("processes").tBodies[0], processes, (p) => `${p.kind}:${p.name}`, (p) => el("tr", { class: "process" },
    td(p.name, "mono"), td(p.kind), url(p.broker, own.broker), url(p.result_backend, own.result_backend)));
}

function renderSchedules(entries) {
  syncRows($("schedules").tBodies[0], entries, (s) => s.name, (s) => {
    const button = el("button", {
      type: "button",
      class: "pause",
      onclick: (event) => action(event.target,
        `/api/schedules/${encodeURIComponent(s.name)}/${s.paused ? "resume" : "pause"}`),
    }, s.paused ? "Resume" : "Pause");
    return el("tr", { class: "entry" },
      el("td", {}, el("b", {}, s.name), el("span", { class: "sub" }, s.task),
        el("span", { class: "sub source" }, s.editable ? "store" : s.source)),
      el("td", {}, s.schedule || "–", el("span", { class: "sub" }, s.zone)),
      timeCell(s.last_run, s.last_run_utc),
      el("td", { class: s.overdue ? "time next-run overdue" : "time next-run" }, s.next_run || (s.paused ? "–" : "no more runs"),
        s.next_run_utc ? el("span", { class: "sub" }, s.next_run_utc) : null,
        el("span", { class: "sub", dataset: { live: "next_in" } })),
      td(s.lateness_ms === null ? "–" : `${s.lateness_ms.toFixed(1)} ms`, "num"),
      td(s.runs, "num"),
      td(s.missed, s.missed ? "num bad" : "num"),
      el("td", { class: "state" }, s.paused ? badge("paused", "paused") : badge("active", "active"), " ", button,
        " ", el("button", { type: "button", class: "open", onclick: () => openEntry(s.name) }, "Runs")));
  }, ["next_in", "next_ts"], (tr, s) => { tr.querySelector("[data-live=next_in]").textContent = s.next_in || ""; });
  showEmpty("schedules-empty", !entries.length);
}

function renderTasks(tasks) {
  const body = $("tasks").tBodies[0];
  if (!tasks || !tasks.enabled) {
    body.replaceChildren();
    $("tasks-empty").hidden = false;
    $("tasks-empty").textContent = tasks ? tasks.note : "Recent tasks need the event stream.";
    return;
  }
  const rows = [];
  for (const t of tasks.items) {
    rows.push({ kind: "task", ...t });
    if (expanded.has(t.id)) {
      const detail = details.get(t.id);
      if (!detail || detail.state !== t.state) loadDetail(t.id).then(() => last && renderTasks(last.tasks));
      rows.push({ kind: "detail", id: t.id, detail: detail || null });
    }
  }
  syncRows(body, rows, (r) => `${r.kind}:${r.id}`, (r) => (r.kind === "task" ? taskRow(r) : detailRow(r)));
  $("tasks-empty").hidden = tasks.items.length > 0;
  $("tasks-empty").textContent = query ? `No task matches “${query}”.` : "No tasks seen yet.";
  $("tasks-note").textContent = tasks.note || "";
}

function taskRow(t) {
  const buttons = [];
  if (!FINAL.has(t.state)) {
    // a running task ignores a plain revoke: offer to stop it, after asking
    const running = t.state === "STARTED";
    buttons.push(el("button", { type: "button", class: "revoke danger", onclick: (event) => {
      event.stopPropagation();
      if (running && !window.confirm(`Stop the running task ${t.name} [${t.id}]?`)) return;
      action(event.target, `/api/tasks/${encodeURIComponent(t.id)}/revoke`, { terminate: running });
    } }, running ? "Terminate" : "Revoke"));
  }
  const outcome = t.state === "FAILURE" || t.exception ? td(t.exception, "clip mono bad") : td(t.result, "clip mono");
  return el("tr", { class: "task", dataset: { state: t.state }, onclick: () => {
    if (expanded.has(t.id)) expanded.delete(t.id); else expanded.add(t.id);
    if (last) renderTasks(last.tasks);
  } },
    el("td", {}, badge(t.state)),
    td(t.name, "mono"),
    td(t.id.slice(0, 8) + "…", "id", t.id),
    td(t.args, "clip mono"),
    outcome,
    td(t.worker, "mono clip"),
    td(t.received, "time"),
    td(t.runtime, "num"),
    el("td", {}, buttons));
}

function detailRow(r) {
  const d = r.detail;
  if (!d) return el("tr", { class: "detail" }, el("td", { colspan: 9 }, "loading…"));
  const pairs = [["Id", d.id], ["Task", d.name], ["State", d.state], ["Arguments", d.args],
    ["Keyword arguments", d.kwargs], ["Result", d.result], ["Exception", d.exception],
    ["Retries", d.retries], ["Worker", d.worker], ["Sent", d.sent], ["Received", d.received],
    ["Started", d.started], ["Finished", d.finished], ["Runtime", d.runtime]];
  const list = el("dl", {}, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
  return el("tr", { class: "detail" }, el("td", { colspan: 9 }, list,
    d.traceback ? el("pre", { class: "traceback" }, d.traceback) : null));
}

function renderDead(dead) {
  syncRows($("dead").tBodies[0], dead.items, (d) => d.id, (d) => el("tr", { class: "dead-letter" },
    td(d.time, "time"),
    td(d.task, "mono"),
    td(d.queue, "mono"),
    td(d.id.slice(0, 8) + "…", "id", d.id),
    td(d.reason, "clip", d.reason),
    td(d.args, "clip mono", d.args),
    el("td", {}, el("button", { type: "button", class: "requeue",
      onclick: (event) => action(event.target, "/api/dead-letters/requeue", { ids: [d.id] }) }, "Requeue"))));
  showEmpty("dead-empty", !dead.items.length);
  $("requeue-all").hidden = dead.items.length < 2;
}

// -- start -----------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  let timer = null;
  $("search").addEventListener("input", (event) => {
    clearTimeout(timer);
    timer = setTimeout(() => { query = event.target.value.trim(); connect(); }, 200);
  });
  $("requeue-all").addEventListener("click", (event) =>
    action(event.target, "/api/dead-letters/requeue", { all: true }));
  // the first snapshot comes with the page (server.py): no empty page while connecting
  const first = JSON.parse($("first-state").textContent || "null");
  if (first) render(first);
  connect();
});
