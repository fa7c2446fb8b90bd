-- lasync.flow_report: the HTML report of a lasync.flow run (run:save_report), one
-- self-contained file: no network, no external script, style or font.
--
-- The run's calls go into the page as column arrays (one entry per call), which the page's
-- script turns into a zoomable timeline (a canvas: one lane per task, coloured by status), a
-- call tree (virtualised: only the rows in view exist in the DOM), the failures with their
-- messages, and the per-node summary. A run of 100,000 calls is a few megabytes and opens in
-- a second.
local M = {}

local concat, fmt = table.concat, string.format

local STATUS = { ok = 0, error = 1, cancelled = 2, timeout = 3, running = 4 }

local TEMPLATE = [==[<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lasync flow report</title>
<style>
:root { --ok: #2e9d57; --error: #d1433f; --cancelled: #8a8f98; --timeout: #e08a1e;
  --running: #3b82c4; --bg: #fbfbfc; --fg: #1d2330; --muted: #6b7280; --line: #e3e6ea; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
header { padding: 14px 20px 10px; border-bottom: 1px solid var(--line); background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; font-weight: 600; }
h2 { font-size: 14px; margin: 18px 0 8px; font-weight: 600; }
.meta { color: var(--muted); }
.meta b { color: var(--fg); font-weight: 600; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 9px; color: #fff;
  font-size: 12px; font-weight: 600; vertical-align: 2px; }
.s-ok { background: var(--ok); } .s-error { background: var(--error); }
.s-cancelled { background: var(--cancelled); } .s-timeout { background: var(--timeout); }
.s-running { background: var(--running); }
main { padding: 0 20px 30px; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right;
  white-space: nowrap; }
th { background: #f3f4f6; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
#timeline-wrap { position: relative; background: #fff; border: 1px solid var(--line); }
#timeline { display: block; width: 100%; cursor: crosshair; }
#tip { position: absolute; pointer-events: none; background: rgba(20,24,33,.92); color: #fff;
  padding: 5px 8px; border-radius: 4px; font-size: 12px; white-space: pre; display: none;
  z-index: 2; max-width: 520px; overflow: hidden; }
.hint { color: var(--muted); font-size: 12px; margin: 4px 0; }
.cols { display: flex; gap: 16px; align-items: flex-start; }
#tree { flex: 1 1 55%; height: 420px; overflow: auto; position: relative; background: #fff;
  border: 1px solid var(--line); }
#tree-inner { position: relative; }
.row { position: absolute; left: 0; right: 0; height: 22px; line-height: 22px;
  white-space: nowrap; overflow: hidden; cursor: pointer; padding-right: 8px; }
.row:hover { background: #f1f5fb; } .row.sel { background: #dbe8fb; }
.tog { display: inline-block; width: 16px; text-align: center; color: var(--muted); }
.dot { display: inline-block; width: 8px; height: 8px; border-radius: 4px; margin: 0 6px 0 2px; }
.dur { color: var(--muted); margin-left: 8px; }
.lbl { color: var(--muted); margin-left: 6px; }
#detail { flex: 1 1 45%; min-height: 420px; background: #fff; border: 1px solid var(--line);
  padding: 10px 14px; overflow: auto; max-height: 420px; }
#detail dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; }
#detail dt { color: var(--muted); } #detail dd { margin: 0; word-break: break-word; }
pre { background: #f6f7f9; padding: 6px 8px; border-radius: 4px; white-space: pre-wrap;
  word-break: break-word; margin: 4px 0; font: 12px/1.4 ui-monospace, Menlo, Consolas,
  monospace; }
#failures li { margin: 2px 0; } #failures a { color: #1d4ed8; cursor: pointer; }
.legend span { margin-right: 12px; }
.mono { font-family: ui-monospace, Menlo, Consolas, monospace; }
</style>
</head>
<body>
<header>
  <h1 id="title">lasync flow run</h1>
  <div class="meta" id="meta"></div>
</header>
<main>
  <h2>Timeline</h2>
  <div class="hint">Wheel to zoom, drag to pan, double-click to reset; click a call to select it.
    <span class="legend" id="legend"></span></div>
  <div id="timeline-wrap"><canvas id="timeline" height="200"></canvas><div id="tip"></div></div>
  <h2>Calls</h2>
  <div class="cols">
    <div id="tree"><div id="tree-inner"></div></div>
    <div id="detail"><span class="meta">Select a call in the tree or the timeline.</span></div>
  </div>
  <h2 id="failures-title">Failures</h2>
  <ul id="failures"></ul>
  <h2>Summary by node</h2>
  <div id="summary"></div>
</main>
<script id="data" type="application/json">/*DATA*/</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const N = D.node.length;
const STATUS = ["ok", "error", "cancelled", "timeout", "running"];
const CSS = getComputedStyle(document.documentElement);  // the colours of the :root rule
const COLOR = Object.fromEntries(STATUS.map((s) => [s, CSS.getPropertyValue("--" + s).trim()]));
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;",
  ">": "&gt;", '"': "&quot;" })[c]);
function fmtDur(us) {
  if (us == null || us < 0) return "-";
  if (us < 1000) return us.toFixed(0) + " µs";
  if (us < 1e6) return (us / 1000).toFixed(1) + " ms";
  return (us / 1e6).toFixed(2) + " s";
}
const statusOf = (i) => STATUS[D.status[i]];
const endOf = (i) => (D.end[i] < 0 ? D.run.duration : D.end[i]);

// {------ header ------}
$("title").innerHTML = "lasync flow: " + esc(D.run.name) +
  ' <span class="badge s-' + esc(D.run.status) + '">' + esc(D.run.status) + "</span>";
let nFailed = 0, nRetried = 0;
for (let i = 0; i < N; i++) { if (D.status[i] !== 0 && D.status[i] !== 4) nFailed++;
  if (D.attempt[i] > 1) nRetried++; }
$("meta").innerHTML = "<b>" + N + "</b> calls, <b>" + nFailed + "</b> failed, <b>" +
  nRetried + "</b> retried, in <b>" + fmtDur(D.run.duration) + "</b>; started " +
  esc(new Date(D.run.started_at * 1000).toISOString().replace("T", " ").slice(0, 19)) +
  " UTC; run " + esc(D.run.id) + (D.run.error ? '<pre class="mono">' + esc(D.run.error) +
  "</pre>" : "");
$("legend").innerHTML = STATUS.map((s) => '<span><span class="dot" style="background:' +
  COLOR[s] + '"></span>' + s + "</span>").join("");

// {------ the call tree ------}
const children = new Array(N + 1);
const roots = [];
for (let i = 0; i < N; i++) {
  const p = D.parent[i];
  if (p > 0 && p <= N) (children[p - 1] || (children[p - 1] = [])).push(i); else roots.push(i);
}
const expanded = new Uint8Array(N);
if (N <= 2000) expanded.fill(1); else for (const r of roots) expanded[r] = 1;
let rows = [];  // the visible rows: [index, depth]
function flatten() {
  rows = [];
  const stack = [];
  for (let k = roots.length - 1; k >= 0; k--) stack.push([roots[k], 0]);
  while (stack.length) {
    const [i, d] = stack.pop();
    rows.push([i, d]);
    const c = children[i];
    if (c && expanded[i]) for (let k = c.length - 1; k >= 0; k--) stack.push([c[k], d + 1]);
  }
}
const ROW = 22;
const tree = $("tree"), inner = $("tree-inner");
let selected = -1;
function renderTree() {
  inner.style.height = rows.length * ROW + "px";
  const first = Math.max(0, Math.floor(tree.scrollTop / ROW) - 10);
  const last = Math.min(rows.length, first + Math.ceil(tree.clientHeight / ROW) + 20);
  let html = "";
  for (let r = first; r < last; r++) {
    const [i, d] = rows[r];
    const st = statusOf(i), c = children[i];
    html += '<div class="row' + (i === selected ? " sel" : "") + '" data-i="' + i +
      '" style="top:' + r * ROW + "px;padding-left:" + (4 + d * 16) + 'px">' +
      '<span class="tog">' + (c ? (expanded[i] ? "▾" : "▸") : "") + "</span>" +
      '<span class="dot" style="background:' + COLOR[st] + '"></span><b>' +
      esc(D.nodes[D.node[i] - 1]) + "</b>" +
      (D.label[i + 1] ? '<span class="lbl">' + esc(D.label[i + 1]) + "</span>" : "") +
      '<span class="dur">' + fmtDur(endOf(i) - D.start[i]) +
      (D.attempt[i] > 1 ? ", " + D.attempt[i] + " attempts" : "") +
      (st !== "ok" ? ", " + st : "") + "</span></div>";
  }
  inner.innerHTML = html;
}
tree.addEventListener("scroll", renderTree);
inner.addEventListener("click", (e) => {
  const row = e.target.closest(".row");
  if (!row) return;
  const i = +row.dataset.i;
  if (e.target.classList.contains("tog") && children[i]) {
    expanded[i] = 1 - expanded[i];
    flatten();
    renderTree();
  } else {
    select(i, false);
  }
});

function detail(i) {
  const st = statusOf(i), id = i + 1;
  let h = "<h2 style='margin-top:0'>" + esc(D.nodes[D.node[i] - 1]) + " #" + id +
    ' <span class="badge s-' + st + '">' + st + "</span></h2><dl>";
  const add = (k, v) => { h += "<dt>" + k + "</dt><dd>" + v + "</dd>"; };
  if (D.label[id]) add("label", esc(D.label[id]));
  if (D.parent[i] > 0) add("parent", '<a onclick="select(' + (D.parent[i] - 1) + ',true)">' +
    esc(D.nodes[D.node[D.parent[i] - 1] - 1]) + " #" + D.parent[i] + "</a>");
  add("task", esc(D.lanes[D.lane[i] - 1]));
  add("started", fmtDur(D.start[i]) + " into the run");
  add("duration", fmtDur(endOf(i) - D.start[i]));
  add("attempts", D.attempt[i]);
  h += "</dl>";
  if (D.input[id] != null) h += "<h2>Input</h2><pre>" + esc(D.input[id]) + "</pre>";
  if (D.output[id] != null) h += "<h2>Output</h2><pre>" + esc(D.output[id]) + "</pre>";
  if (D.error[id] != null) h += "<h2>Error</h2><pre>" + esc(D.error[id]) + "</pre>";
  if (D.traceback[id] != null) h += "<h2>Traceback</h2><pre>" + esc(D.traceback[id]) + "</pre>";
  const at = D.attempts[id];
  if (at) {
    h += "<h2>Earlier attempts</h2><table><tr><th>#</th><th>duration</th><th>status</th>" +
      "<th>error</th></tr>";
    at.forEach((a, k) => { h += "<tr><td>" + (k + 1) + "</td><td>" + fmtDur(a[1] - a[0]) +
      "</td><td>" + esc(a[2]) + '</td><td style="text-align:left">' + esc(a[3]) + "</td></tr>"; });
    h += "</table>";
  }
  const m = D.metrics[id];
  if (m) {
    h += "<h2>Metrics</h2><dl>";
    for (const k of Object.keys(m).sort()) h += "<dt>" + esc(k) + "</dt><dd>" + m[k] + "</dd>";
    h += "</dl>";
  }
  $("detail").innerHTML = h;
}

function select(i, reveal) {
  selected = i;
  for (let p = D.parent[i]; p > 0; p = D.parent[p - 1]) expanded[p - 1] = 1;
  flatten();
  const r = rows.findIndex((x) => x[0] === i);
  if (r >= 0 && (reveal || r * ROW < tree.scrollTop || (r + 1) * ROW > tree.scrollTop +
      tree.clientHeight)) tree.scrollTop = Math.max(0, r * ROW - tree.clientHeight / 2);
  renderTree();
  detail(i);
  drawTimeline();
}
window.select = select;

// {------ failures ------}
const failed = [];
for (let i = 0; i < N; i++) if (D.status[i] === 1 || D.status[i] === 3) failed.push(i);
$("failures-title").textContent = "Failures (" + failed.length + ")";
$("failures").innerHTML = failed.slice(0, 200).map((i) => '<li><a onclick="select(' + i +
  ',true)">' + esc(D.nodes[D.node[i] - 1]) + " #" + (i + 1) + "</a>" +
  (D.label[i + 1] ? " " + esc(D.label[i + 1]) : "") + ": <span class=\"mono\">" +
  esc(D.error[i + 1] || statusOf(i)) + "</span></li>").join("") +
  (failed.length > 200 ? "<li>... and " + (failed.length - 200) + " more</li>" : "") +
  (failed.length === 0 ? "<li class=\"meta\">none</li>" : "");

// {------ summary ------}
(function () {
  const S = D.run.summary, mk = {};
  for (const s of S) for (const k in s.metrics) mk[k] = 1;
  const mnames = Object.keys(mk).sort();
  let h = "<table><tr><th>node</th><th>calls</th><th>ok</th><th>failed</th><th>retried</th>" +
    "<th>p50</th><th>p95</th><th>max</th><th>busy</th>" +
    mnames.map((k) => "<th>" + esc(k) + "</th>").join("") + "</tr>";
  for (const s of S) {
    h += "<tr><td>" + esc(s.node) + "</td><td>" + s.calls + "</td><td>" + s.ok + "</td><td>" +
      s.failed + "</td><td>" + s.retried + "</td><td>" + fmtDur(s.p50) + "</td><td>" +
      fmtDur(s.p95) + "</td><td>" + fmtDur(s.max) + "</td><td>" + fmtDur(s.busy) + "</td>" +
      mnames.map((k) => "<td>" + (s.metrics[k] != null ? s.metrics[k] : "-") + "</td>").join("") +
      "</tr>";
  }
  $("summary").innerHTML = h + "</table>";
})();

// {------ the timeline ------}
const canvas = $("timeline"), tip = $("tip");
const LANES = D.lanes.length;
const TOP = 22, LEFT = 110;
const byLane = [];
for (let l = 0; l < LANES; l++) byLane.push([]);
// a call made inside another in the same task is drawn one row lower (a flame graph per lane)
const depth = new Uint16Array(N), laneRows = new Uint16Array(LANES).fill(1);
for (let i = 0; i < N; i++) {
  const l = D.lane[i] - 1, p = D.parent[i] - 1;
  if (p >= 0 && D.lane[p] - 1 === l) depth[i] = Math.min(depth[p] + 1, 7);
  if (depth[i] + 1 > laneRows[l]) laneRows[l] = depth[i] + 1;
  byLane[l].push(i);
}
let totalRows = 0;
const laneTop = new Uint32Array(LANES);
for (let l = 0; l < LANES; l++) { laneTop[l] = totalRows; totalRows += laneRows[l]; }
const LANE_H = totalRows > 60 ? Math.max(3, Math.floor(600 / totalRows)) : 16;
const full = Math.max(D.run.duration, 1);
let t0 = 0, t1 = full;
function layout() {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.parentNode.clientWidth, h = TOP + totalRows * LANE_H + 6;
  canvas.style.height = h + "px";
  canvas.width = Math.floor(w * dpr);
  canvas.height = Math.floor(h * dpr);
  canvas.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
}
const xOf = (t, w) => LEFT + (t - t0) / (t1 - t0) * (w - LEFT - 8);
const tOf = (x, w) => t0 + (x - LEFT) / (w - LEFT - 8) * (t1 - t0);
function drawTimeline() {
  const ctx = canvas.getContext("2d");
  const w = canvas.clientWidth, h = canvas.clientHeight;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7280";
  // about one tick per 100 px, at 1, 2 or 5 times a power of ten
  const raw = (t1 - t0) / Math.max(2, (w - LEFT) / 100);
  const p10 = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = raw / p10 < 2 ? 2 * p10 : raw / p10 < 5 ? 5 * p10 : 10 * p10;
  ctx.strokeStyle = "#eef0f3";
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    const x = xOf(t, w);
    ctx.beginPath(); ctx.moveTo(x, TOP - 4); ctx.lineTo(x, h); ctx.stroke();
    ctx.fillText(fmtDur(t), x + 2, 12);
  }
  for (let l = 0; l < LANES; l++) {
    const ly = TOP + laneTop[l] * LANE_H;
    if (LANE_H >= 10) { ctx.fillStyle = "#6b7280"; ctx.fillText(D.lanes[l].slice(0, 16), 4,
      ly + LANE_H - 4); }
    if (l > 0 && LANE_H >= 6) { ctx.fillStyle = "#f3f4f6"; ctx.fillRect(LEFT, ly, w - LEFT, 1); }
    const list = byLane[l];
    let lastX = -1, lastC = "", lastD = -1;
    for (const i of list) {
      const y = ly + depth[i] * LANE_H;
      const s = D.start[i], e = endOf(i);
      if (e < t0 || s > t1) continue;
      const x0 = Math.max(LEFT, xOf(s, w)), x1 = Math.min(w - 8, xOf(e, w));
      const c = COLOR[statusOf(i)];
      const wd = Math.max(1, x1 - x0);
      if (wd < 1.5 && Math.floor(x0) === lastX && c === lastC && depth[i] === lastD) continue;
      lastX = Math.floor(x0); lastC = c; lastD = depth[i];  // (many calls in a pixel: one bar)
      const at = D.attempts[i + 1];
      if (at && wd > 4) {  // each attempt on its own, the waits between them light
        ctx.fillStyle = "#e9ecf0";
        ctx.fillRect(x0, y + LANE_H / 2 - 1, wd, 2);
        for (const a of at) {
          const a0 = Math.max(LEFT, xOf(a[0], w)), a1 = Math.min(w - 8, xOf(a[1], w));
          ctx.fillStyle = COLOR[a[2]] || COLOR.error;
          ctx.fillRect(a0, y + 1, Math.max(1, a1 - a0), LANE_H - 2);
        }
        const f0 = Math.max(LEFT, xOf(D.final[i + 1], w));
        ctx.fillStyle = c;
        ctx.fillRect(f0, y + 1, Math.max(1, x1 - f0), LANE_H - 2);
      } else {
        ctx.fillStyle = c;
        ctx.fillRect(x0, y + 1, wd, LANE_H - 2);
      }
      if (i === selected) { ctx.strokeStyle = "#111"; ctx.lineWidth = 2;
        ctx.strokeRect(x0, y + 1, wd, LANE_H - 2); ctx.lineWidth = 1; ctx.strokeStyle = "#eef0f3"; }
    }
  }
}
function hit(ev) {
  const r = canvas.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
  const row = Math.floor((y - TOP) / LANE_H);
  if (row < 0 || row >= totalRows || x < LEFT) return -1;
  let l = 0;
  while (l + 1 < LANES && laneTop[l + 1] <= row) l++;
  const d = row - laneTop[l];
  const t = tOf(x, canvas.clientWidth), slack = (t1 - t0) / canvas.clientWidth * 2;
  let best = -1;
  for (const i of byLane[l]) if (depth[i] === d && D.start[i] - slack <= t &&
                                  endOf(i) + slack >= t) {
    if (best < 0 || D.start[i] > D.start[best]) best = i;
  }
  return best;
}
let drag = null;
canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, t0, t1, moved: false }; });
window.addEventListener("mouseup", (e) => {
  if (drag && !drag.moved) { const i = hit(e); if (i >= 0) select(i, true); }
  drag = null;
});
canvas.addEventListener("mousemove", (e) => {
  if (drag) {
    const dt = (e.clientX - drag.x) / (canvas.clientWidth - LEFT) * (drag.t1 - drag.t0);
    if (Math.abs(e.clientX - drag.x) > 3) drag.moved = true;
    t0 = drag.t0 - dt; t1 = drag.t1 - dt;
    drawTimeline();
    return;
  }
  const i = hit(e);
  if (i < 0) { tip.style.display = "none"; return; }
  const r = canvas.getBoundingClientRect();
  tip.textContent = D.nodes[D.node[i] - 1] + " #" + (i + 1) + (D.label[i + 1] ? " " +
    D.label[i + 1] : "") + "\n" + statusOf(i) + ", " + fmtDur(endOf(i) - D.start[i]) +
    (D.attempt[i] > 1 ? ", " + D.attempt[i] + " attempts" : "") +
    (D.error[i + 1] ? "\n" + D.error[i + 1].slice(0, 300) : "");
  tip.style.display = "block";
  tip.style.left = Math.min(e.clientX - r.left + 12, canvas.clientWidth - 300) + "px";
  tip.style.top = (e.clientY - r.top + 12) + "px";
});
canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const r = canvas.getBoundingClientRect();
  const t = tOf(e.clientX - r.left, canvas.clientWidth);
  const k = e.deltaY > 0 ? 1.25 : 0.8;
  t0 = t - (t - t0) * k; t1 = t + (t1 - t) * k;
  if (t1 - t0 > full * 1.2) { t0 = 0; t1 = full; }
  drawTimeline();
}, { passive: false });
canvas.addEventListener("dblclick", () => { t0 = 0; t1 = full; drawTimeline(); });
window.addEventListener("resize", () => { layout(); drawTimeline(); renderTree(); });

flatten();
layout();
drawTimeline();
renderTree();
if (failed.length) select(failed[0], true);
document.body.dataset.ready = "1";
</script>
</body>
</html>
]==]

-- A JSON object of the sparse string column col (of n calls), keyed by call id.
local function sparse(col, n, jstr)
  local out = {}
  for i = 1, n do
    local v = col[i]
    if v then out[#out + 1] = '"' .. i .. '":' .. jstr(type(v) == "string" and v or tostring(v)) end
  end
  return "{" .. concat(out, ",") .. "}"
end

-- render(run, R) -> the report's text, as a list of chunks. R is what lasync.flow lends: the
-- record columns (R.R_*, of run._c) and its JSON encoders (R.jstr, R.jnum, R.metrics_json) and
-- R.safe_tostring.
function M.render(run, R)
  local jstr, jnum, metrics_json = R.jstr, R.jnum, R.metrics_json
  local C = run._c
  local n = run._ncalls
  local t0 = run.started
  local function us(t) return fmt("%.1f", (t - t0) * 1e6) end
  local nodes, node_index = {}, {}
  local col = { parent = {}, node = {}, start = {}, ["end"] = {}, status = {} }
  local cnode, cparent, cstart, cend, cstatus = C[R.R_NODE], C[R.R_PARENT], C[R.R_STARTED],
    C[R.R_ENDED], C[R.R_STATUS]
  for i = 1, n do
    local name = cnode[i]
    local ni = node_index[name]
    if ni == nil then
      nodes[#nodes + 1] = jstr(name)
      ni = #nodes
      node_index[name] = ni
    end
    col.parent[i] = cparent[i] or 0
    col.node[i] = ni
    col.start[i] = us(cstart[i])
    col["end"][i] = cend[i] and us(cend[i]) or -1
    col.status[i] = STATUS[cstatus[i]] or 4
  end
  local lanes = {}
  for i, l in ipairs(run._lanes) do lanes[i] = jstr(l.name) end
  local attempts, final, metrics = {}, {}, {}
  local cattempts, cmetrics = C[R.R_ATTEMPTS], C[R.R_METRICS]
  for i = 1, n do
    local at = cattempts[i]
    if at then
      local list = {}
      for k, a in ipairs(at) do
        list[k] = "[" .. us(a[1]) .. "," .. us(a[2]) .. "," .. jstr(a[3]) .. "," .. jstr(a[4]) .. "]"
      end
      attempts[#attempts + 1] = '"' .. i .. '":[' .. concat(list, ",") .. "]"
      final[#final + 1] = '"' .. i .. '":' .. us(at.last or at[#at][2])
    end
    local m = cmetrics[i]
    if m then metrics[#metrics + 1] = '"' .. i .. '":' .. metrics_json(m) end
  end
  local summary = {}
  for _, s in ipairs(run:stats()) do
    local function d(x) return x and fmt("%.1f", x * 1e6) or "null" end
    summary[#summary + 1] = fmt('{"node":%s,"calls":%d,"ok":%d,"failed":%d,"retried":%d,' ..
      '"p50":%s,"p95":%s,"max":%s,"busy":%s,"metrics":%s}', jstr(s.node), s.calls, s.ok,
      s.failed, s.retried, d(s.p50), d(s.p95), d(s.max), d(s.busy), metrics_json(s.metrics))
  end
  local ended = run.ended or require("lasync.core").now()
  local err = run.error ~= nil and jstr(R.safe_tostring(run.error)) or "null"
  local data = {
    '{"run":{"id":', jstr(run.id), ',"name":', jstr(run.name), ',"status":', jstr(run.status),
    ',"started_at":', jnum(run.started_at), ',"duration":', us(ended), ',"error":', err,
    ',"summary":[', concat(summary, ","), "]}",
    ',"nodes":[', concat(nodes, ","), "]",
    ',"lanes":[', concat(lanes, ","), "]",
    ',"parent":[', concat(col.parent, ","), "]",
    ',"node":[', concat(col.node, ","), "]",
    ',"lane":[', concat(C[R.R_LANE], ",", 1, n), "]",
    ',"start":[', concat(col.start, ","), "]",
    ',"end":[', concat(col["end"], ","), "]",
    ',"status":[', concat(col.status, ","), "]",
    ',"attempt":[', concat(C[R.R_ATTEMPT], ",", 1, n), "]",
    ',"label":', sparse(C[R.R_LABEL], n, jstr),
    ',"input":', sparse(C[R.R_INPUT], n, jstr),
    ',"output":', sparse(C[R.R_OUTPUT], n, jstr),
    ',"error":', sparse(C[R.R_ERROR], n, jstr),
    ',"traceback":', sparse(C[R.R_TRACEBACK], n, jstr),
    ',"attempts":{', concat(attempts, ","), "}",
    ',"final":{', concat(final, ","), "}",
    ',"metrics":{', concat(metrics, ","), "}}",
  }
  -- "</" inside the JSON would end the script element: JSON allows "<\/"
  local json = concat(data):gsub("</", "<\\/")
  local a, b = TEMPLATE:find("/*DATA*/", 1, true)
  return { TEMPLATE:sub(1, a - 1), json, TEMPLATE:sub(b + 1) }
end

return M
