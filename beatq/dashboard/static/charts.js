// beatq dashboard: SVG drawn here, no library. svg() and the formats are shared with the
// schedule entry's chart (schedules.js); drawTimeline() draws the last hour from the
// snapshot's `timeline` (beatq/timeline.py): throughput, failures, run time p50/p99, queue
// depth and beat lateness, one small line chart each. Every time label is the server's.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) {
    if (typeof child === "string") {
      const title = document.createElementNS(SVG, "title");
      title.textContent = child;
      node.append(title);
    } else if (child) node.append(child);
  }
  return node;
}

function svgText(text, px, py, cls) {
  const node = svg("text", { x: px, y: py, class: cls || "label" });
  node.textContent = text;
  return node;
}

const fmtMs = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${ms.toFixed(1)} ms`);
const fmtSeconds = (s) => (s >= 1 ? `${s.toFixed(1)} s` : s >= 0.001 ? `${(s * 1000).toFixed(0)} ms` : `${(s * 1000).toFixed(2)} ms`);
const fmtRate = (r) => (r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2)) + "/s";
const fmtCount = (n) => String(Math.round(n));

const PALETTE = ["s0", "s1", "s2", "s3", "s4", "s5"]; // classes: colours in dashboard.css

// One chart: `lines` is [{ name, values (null: no sample), cls }], drawn over `times`
// (the server's labels of each point), on one scale from 0 to the largest value.
function drawLines(box, title, lines, times, fmt) {
  const width = Math.max(260, Math.floor(box.clientWidth) || 320);
  const height = 140, left = 48, right = 8, top = 34, bottom = 18;
  const plotW = width - left - right, plotH = height - top - bottom;
  const count = times.length;
  const all = lines.flatMap((l) => l.values.filter((v) => v !== null));
  const max = Math.max(...all, 0) || 1;
  const x = (i) => left + (count > 1 ? (plotW * i) / (count - 1) : plotW);
  const y = (v) => top + plotH - (v / max) * plotH;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": title, class: "timeline-chart" });
  chart.append(
    svg("line", { x1: left, x2: width - right, y1: top + plotH, y2: top + plotH, class: "axis" }),
    svg("line", { x1: left, x2: width - right, y1: top, y2: top, class: "grid" }),
    svgText(fmt(max), left - 4, top + 4, "scale end"),
    svgText(fmt(0), left - 4, top + plotH + 3, "scale end"));
  lines.forEach((line, n) => {
    let d = "", pen = false, lastValue = null;
    line.values.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
      lastValue = v;
    });
    const cls = line.cls || PALETTE[n % PALETTE.length];
    const about = `${line.name}: ${lastValue === null ? "no samples" : `${fmt(lastValue)} at the last sample`}`;
    if (d) chart.append(svg("path", { d, class: `series ${cls}`, "data-name": line.name }, about));
    // a lone point (one sample between gaps) shows as a dot
    line.values.forEach((v, i) => {
      const alone = v !== null && (i === 0 || line.values[i - 1] === null) && (i === count - 1 || line.values[i + 1] === null);
      if (alone) chart.append(svg("circle", { cx: x(i), cy: y(v), r: 2, class: `dot ${cls}` }));
    });
  });
  chart.append(svgText(title, 6, 13, "chart-title"));
  const legend = svg("text", { x: left, y: 27, class: "legend" }); // the keys, latest values
  lines.forEach((line, n) => {
    const span = svg("tspan", { class: `key ${line.cls || PALETTE[n % PALETTE.length]}` });
    const shown = line.values.filter((v) => v !== null);
    span.textContent = `■ ${line.name}${shown.length ? " " + fmt(shown[shown.length - 1]) : ""}  `;
    legend.append(span);
  });
  chart.append(legend);
  if (count) {
    chart.append(svgText(times[0], left, height - 4, "label"));
    const end = svgText(times[count - 1], width - right, height - 4, "label end");
    chart.append(end);
  }
  if (!all.length) chart.append(svgText("no samples yet", left + 8, top + plotH / 2, "label"));
  box.replaceChildren(chart);
}

function drawTimeline(timeline) {
  const section = document.getElementById("timeline-section");
  if (!timeline) { section.hidden = true; return; }
  section.hidden = false;
  const sig = JSON.stringify([timeline.t.length, timeline.t[timeline.t.length - 1], timeline.ok,
    timeline.fail, timeline.p99, timeline.depth, timeline.late_max, section.clientWidth]);
  if (section.dataset.sig === sig) return; // a new sample every interval: redraw only then
  section.dataset.sig = sig;
  document.getElementById("timeline-title").textContent = timeline.title;
  document.getElementById("timeline-note").textContent = timeline.note;
  const times = timeline.labels;
  const box = (id) => document.getElementById(id);
  drawLines(box("chart-throughput"), "Succeeded", [{ name: "succeeded", values: timeline.ok, cls: "ok" }], times, fmtRate);
  drawLines(box("chart-failures"), "Failed", [{ name: "failed", values: timeline.fail, cls: "bad" }], times, fmtRate);
  drawLines(box("chart-latency"), "Run time", [{ name: "p50", values: timeline.p50, cls: "s0" },
    { name: "p99", values: timeline.p99, cls: "s3" }], times, fmtSeconds);
  const queues = Object.entries(timeline.depth).map(([name, values]) => ({ name, values }));
  drawLines(box("chart-depth"), "Queue depth", queues.length ? queues : [{ name: "no queue", values: times.map(() => null) }],
    times, fmtCount);
  drawLines(box("chart-lateness"), "Beat lateness", [{ name: "p50", values: timeline.late_p50, cls: "s0" },
    { name: "max", values: timeline.late_max, cls: "s3" }], times, fmtSeconds);
}
