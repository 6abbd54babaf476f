// The status page's script: polls /status.json every second and draws what
// it says. Every string from the data (keys, names, plugin labels, errors)
// goes into the page with textContent or setAttribute, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed",
  "#0891b2", "#db2777", "#65a30d", "#ea580c", "#4b5563"];

// The output chosen for the chart, by name (its index can move when a
// reload changes an aggregation's outputs).
let chosen = null;
let columns = [];
// The next poll; one at a time.
let timer = null;

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(poll, ms);
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function setText(selector, text) {
  for (const e of document.querySelectorAll(selector)) e.textContent = text;
}

function count(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

function num(v) {
  if (v === null || v === undefined) return "–";
  if (!Number.isFinite(v)) return String(v);
  const digits = Math.abs(v) >= 100 ? 1 : 3;
  return v.toLocaleString("en-US", { maximumFractionDigits: digits });
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.abs(seconds);
  const sign = seconds < 0 ? "-" : "";
  if (s < 0.001) return sign + (s * 1e6).toFixed(1) + " µs";
  if (s < 1) return sign + (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + " ms";
  if (s < 60) return sign + s.toFixed(1) + " s";
  if (s < 3600) return sign + Math.floor(s / 60) + "m " + Math.floor(s % 60) + "s";
  if (s < 86400) return sign + Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return sign + Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}

function bytes(n) {
  if (n === null || n === undefined) return "not reported";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return (u === 0 ? v : v.toFixed(1)) + " " + units[u];
}

function timeOf(ms) {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return String(ms);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function clock(ms) {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return String(ms);
  return d.toISOString().slice(11, 19);
}

// A result's key is the JSON object the records carry: shown as
// `field=value, ...`, or as its text if it is anything else.
function keyLabel(text) {
  try {
    const k = JSON.parse(text);
    if (k && typeof k === "object" && !Array.isArray(k)) {
      return Object.entries(k)
        .map(([f, v]) => f + "=" + (typeof v === "string" ? v : JSON.stringify(v)))
        .join(", ");
    }
  } catch (_) { /* shown as it is */ }
  return text;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

// A line chart into `svg`: `series` is [{points: [[x, y]...], color}], x
// and y numbers; `xLabel(x)` names an x value on the axis.
function lineChart(svg, series, xLabel, opts) {
  clear(svg);
  const width = Math.max(svg.clientWidth || 0, 200);
  const height = Math.max(svg.clientHeight || 0, 100);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const left = 52, right = 10, top = 8, bottom = 22;
  const w = width - left - right, h = height - top - bottom;
  let xs = [], ys = [];
  for (const s of series) for (const [x, y] of s.points) {
    xs.push(x);
    if (y !== null && Number.isFinite(y)) ys.push(y);
  }
  if (xs.length === 0) {
    svg.appendChild(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "nodata" },
      opts.empty || "no data yet"));
    return;
  }
  let x0 = opts.xMin !== undefined ? opts.xMin : Math.min(...xs);
  let x1 = opts.xMax !== undefined ? opts.xMax : Math.max(...xs);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  let y0 = opts.zero ? 0 : (ys.length ? Math.min(...ys) : 0);
  let y1 = ys.length ? Math.max(...ys) : 1;
  if (y1 === y0) { y1 = y0 + (y0 === 0 ? 1 : Math.abs(y0) * 0.1); }
  if (!opts.zero) {
    // Some room above and below the lines, but no negative axis for
    // values that are never negative.
    const pad = (y1 - y0) * 0.08;
    y0 = y0 >= 0 ? Math.max(0, y0 - pad) : y0 - pad;
    y1 += pad;
  }
  const px = x => left + ((x - x0) / (x1 - x0)) * w;
  const py = y => top + h - ((y - y0) / (y1 - y0)) * h;
  for (const f of [0, 0.5, 1]) {
    const v = y0 + (y1 - y0) * f;
    svg.appendChild(svgEl("line", { x1: left, x2: left + w, y1: py(v), y2: py(v), class: "grid" }));
    svg.appendChild(svgEl("text", { x: left - 6, y: py(v) + 4, "text-anchor": "end", class: "axis" }, num(v)));
  }
  svg.appendChild(svgEl("text", { x: left, y: height - 6, class: "axis" }, xLabel(x0)));
  svg.appendChild(svgEl("text", { x: left + w, y: height - 6, "text-anchor": "end", class: "axis" }, xLabel(x1)));
  for (const s of series) {
    // A gap (null) in a series breaks its line.
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        svg.appendChild(svgEl("circle", { cx: run[0][0], cy: run[0][1], r: 2.5, fill: s.color }));
      } else if (run.length > 1) {
        const d = run.map(([x, y], i) => (i ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1)).join(" ");
        if (s.fill) {
          const area = d + ` L${run[run.length - 1][0].toFixed(1)} ${py(y0).toFixed(1)} L${run[0][0].toFixed(1)} ${py(y0).toFixed(1)} Z`;
          svg.appendChild(svgEl("path", { d: area, fill: s.color, "fill-opacity": 0.12, stroke: "none" }));
        }
        svg.appendChild(svgEl("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.6 }));
      }
      run = [];
    };
    for (const [x, y] of s.points) {
      if (y === null || !Number.isFinite(y)) { flush(); continue; }
      run.push([px(x), py(y)]);
    }
    flush();
  }
}

function renderPipeline(data) {
  const p = data.pipeline;
  setText('[data-pipeline="source"]', (p.source_kind === "kafka" ? "Kafka " : p.source_kind === "file" ? "file " : "") + p.source);
  setText('[data-pipeline="window"]', p.window);
  setText('[data-pipeline="out_of_orderness"]', p.out_of_orderness);
  setText('[data-pipeline="allowed_lateness"]', p.allowed_lateness);
  setText('[data-pipeline="trigger"]', p.trigger);
  setText('[data-pipeline="uptime"]', duration(data.now - data.started));
}

function renderCounters(data) {
  const t = data.totals;
  for (const k of ["events_in", "results_out", "late", "dead_lettered", "duplicates"]) {
    setText(`[data-metric="${k}"]`, count(t[k]));
  }
  setText('[data-metric="windows_open"]', count(data.windows_open));
  if (data.watermark_ms === null) {
    setText('[data-metric="watermark"]', "none yet");
    setText('[data-metric="watermark_lag"]', "");
  } else {
    setText('[data-metric="watermark"]', timeOf(data.watermark_ms));
    setText('[data-metric="watermark_lag"]', duration(data.now - data.watermark_ms / 1000) + " behind the wall clock");
  }
}

function renderRates(data) {
  const r = data.rates;
  const n = r.events.length;
  const first = r.last - n + 1;
  const secondsAgo = s => s >= r.last ? "now" : "-" + duration(r.last - s);
  for (const [what, values, color] of [["events", r.events, COLORS[0]], ["results", r.results, COLORS[2]]]) {
    const points = values.map((v, i) => [first + i, v]);
    lineChart(document.getElementById("chart-" + what), [{ points, color, fill: true }], secondsAgo,
      { zero: true, xMin: Math.min(first, r.last - 59), xMax: r.last, empty: "collecting…" });
    const last = values.length ? values[values.length - 1] : null;
    const recent = values.slice(-60);
    const mean = recent.length ? recent.reduce((a, b) => a + b, 0) / recent.length : null;
    setText(`[data-rate="${what}"]`, last === null ? "–" : `${count(last)} now · ${num(mean)} avg 1m`);
  }
}

function renderPlugins(data) {
  const body = document.querySelector("#plugins tbody");
  clear(body);
  const aggs = data.pipeline.aggregations;
  aggs.forEach((agg, i) => {
    const h = data.plugins[i];
    const tr = el("tr", { "data-aggregation": agg.name });
    tr.appendChild(el("td", { "data-col": "name" }, agg.name));
    tr.appendChild(el("td", { "data-col": "plugin", title: agg.plugin }, h ? h.plugin : agg.plugin));
    tr.appendChild(el("td", { "data-col": "field" }, agg.field === null ? "(count)" : agg.field));
    tr.appendChild(el("td", { "data-col": "calls", class: "num" }, h ? count(h.calls) : "–"));
    tr.appendChild(el("td", { "data-col": "mean", class: "num" }, h && h.calls > 0 ? duration(h.seconds / h.calls) : "–"));
    tr.appendChild(el("td", { "data-col": "failures", class: "num" + (h && h.failures > 0 ? " bad" : "") }, h ? count(h.failures) : "–"));
    const q = h && h.quarantined !== null ? h.quarantined : null;
    tr.appendChild(el("td", { "data-col": "quarantined", class: q ? "bad" : "ok" }, q ? "yes: " + q : "no"));
    body.appendChild(tr);
  });
}

function renderPartitions(data) {
  const body = document.querySelector("#partitions tbody");
  clear(body);
  const empty = document.getElementById("partitions-empty");
  const table = document.getElementById("partitions");
  if (data.pipeline.source_kind !== "kafka") {
    empty.textContent = "one input (" + data.pipeline.source_kind + "): no partitions or consumer lag";
    table.hidden = true;
    return;
  }
  table.hidden = data.partitions.length === 0;
  empty.textContent = data.partitions.length === 0 ? "no partition has delivered an event yet" : "";
  for (const p of data.partitions) {
    const tr = el("tr", { "data-topic": p.topic, "data-partition": p.partition });
    tr.appendChild(el("td", {}, p.topic));
    tr.appendChild(el("td", { class: "num" }, p.partition));
    tr.appendChild(el("td", { class: "num", "data-col": "watermark_lag" }, duration(p.watermark_lag_seconds)));
    tr.appendChild(el("td", { class: "num", "data-col": "consumer_lag" }, p.consumer_lag === null ? "–" : count(p.consumer_lag)));
    body.appendChild(tr);
  }
}

function renderCheckpoint(data) {
  const p = data.pipeline;
  if (p.state === null) {
    setText('[data-checkpoint="age"]', "no checkpoints (the pipeline has no state: rocksdb)");
    setText('[data-checkpoint="size"]', "–");
    setText('[data-checkpoint="interval"]', "–");
    setText('[data-checkpoint="path"]', "–");
    return;
  }
  setText('[data-checkpoint="interval"]', p.checkpoint_interval);
  setText('[data-checkpoint="path"]', p.state);
  if (data.checkpoint === null) {
    setText('[data-checkpoint="age"]', "no checkpoints yet in this run");
    setText('[data-checkpoint="size"]', "–");
  } else {
    setText('[data-checkpoint="age"]', duration(data.now - data.checkpoint.unix_seconds) + " ago");
    setText('[data-checkpoint="size"]', bytes(data.checkpoint.bytes));
  }
}

function renderResults(data) {
  columns = data.columns;
  const select = document.getElementById("output");
  const names = Array.from(select.options).map(o => o.value);
  if (names.join("\u0000") !== columns.join("\u0000")) {
    clear(select);
    for (const c of columns) select.appendChild(el("option", { value: c }, c));
  }
  if (chosen === null || !columns.includes(chosen)) {
    // Prefer a high percentile, then a mean, then the first output.
    chosen = columns.find(c => /p99$/.test(c)) || columns.find(c => /mean$/.test(c)) || columns[0] || null;
  }
  if (chosen !== null) select.value = chosen;

  const head = document.querySelector("#results thead tr");
  clear(head);
  for (const h of ["key", "window end", "emit"]) head.appendChild(el("th", {}, h));
  for (const c of columns) head.appendChild(el("th", { class: "num" }, c));
  const body = document.querySelector("#results tbody");
  clear(body);
  const series = [];
  const legend = document.getElementById("legend");
  clear(legend);
  data.results.forEach((r, i) => {
    const color = COLORS[i % COLORS.length];
    const tr = el("tr", { "data-key": r.key });
    const label = keyLabel(r.key);
    const keyCell = el("td", { "data-col": "key" });
    keyCell.appendChild(el("span", { class: "swatch", "data-color": i % COLORS.length }));
    keyCell.appendChild(el("span", { class: "key" }, label));
    tr.appendChild(keyCell);
    tr.appendChild(el("td", { "data-col": "end", title: timeOf(r.start) + " – " + timeOf(r.end) }, timeOf(r.end)));
    tr.appendChild(el("td", { "data-col": "emit" }, r.emit + (r.filled ? " (filled)" : "")));
    columns.forEach((c, j) => {
      const v = r.values[j];
      tr.appendChild(el("td", { class: "num", "data-col": c }, v === undefined ? "–" : num(v)));
    });
    if (r.errors.length) {
      tr.setAttribute("class", "failed");
      tr.setAttribute("title", r.errors.map(([a, why]) => a + ": " + why).join("\n"));
    }
    body.appendChild(tr);
    if (data.output !== null) {
      series.push({ points: r.history, color });
      const item = el("span", { class: "item" });
      item.appendChild(el("span", { class: "swatch", "data-color": i % COLORS.length }));
      item.appendChild(document.createTextNode(label));
      legend.appendChild(item);
    }
  });
  setText("#results-count", data.results.length ? `${data.results.length} keys` : "");
  setText("#more-keys", data.more_keys
    ? "Results came for more keys than the table holds; it shows the first keys seen (a key silent for 5 minutes gives its place up)."
    : "");
  lineChart(document.getElementById("chart-output"), series, clock, { empty: "no results yet" });
}

function render(data) {
  renderPipeline(data);
  renderCounters(data);
  renderRates(data);
  renderPlugins(data);
  renderPartitions(data);
  renderCheckpoint(data);
  renderResults(data);
  const conn = document.getElementById("conn");
  conn.setAttribute("data-state", "live");
  conn.textContent = data.updated === null
    ? "live · waiting for the first batch"
    : "live · updated " + clock(data.updated * 1000) + " UTC";
}

async function poll() {
  const index = chosen === null ? -1 : columns.indexOf(chosen);
  const url = "/status.json" + (index >= 0 ? "?output=" + index : "");
  try {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    const data = await response.json();
    render(data);
    // The first answer chose an output: ask again for its history now.
    if (data.output === null && chosen !== null && columns.includes(chosen)) {
      schedule(0);
      return;
    }
  } catch (e) {
    const conn = document.getElementById("conn");
    conn.setAttribute("data-state", "down");
    conn.textContent = "not reachable (" + e.message + "); retrying";
  }
  schedule(1000);
}

document.getElementById("output").addEventListener("change", e => {
  chosen = e.target.value;
  schedule(0);
});
poll();
