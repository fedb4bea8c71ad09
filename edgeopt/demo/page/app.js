// edgeopt demo page: one EventSource, plain DOM updates and <canvas> charts; nothing loaded from the network.
"use strict";

const HISTORY_SECONDS = 60;
const CHART_EVERY = 5;  // redraw the charts on every 5th update (2 per second): they span a minute
let chartTick = -1;
const COLORS = { baseline: "#6d7fa6", optimized: "#0e9f6e", busy: "rgba(245, 159, 0, 0.16)", grid: "#e8ebf2", text: "#8a93a8" };
const ROLES = ["baseline", "optimized"];
let info = null;
const history = [];
const cost = { ms: 0, n: 0, since: performance.now() };

const $ = (sel, root = document) => root.querySelector(sel);
const fmt = (v, digits = 1, unit = "") => (v === null || v === undefined || Number.isNaN(v)) ? "–" : v.toFixed(digits) + unit;
const pct = (v, digits = 1) => (v === null || v === undefined) ? "–" : (100 * v).toFixed(digits) + "%";

function setText(root, key, text) { const el = $(`[data-k="${key}"]`, root); if (el && el.textContent !== text) el.textContent = text; }

function clock(t) { const s = Math.max(0, Math.floor(t)); return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`; }

async function loadInfo() {
  info = await (await fetch("/api/info")).json();
  $("#subtitle").textContent = info.subtitle;
  for (const role of ROLES) {
    const panel = $(`.panel[data-role="${role}"]`), m = info.models[role];
    setText(panel, "title", m.title);
    setText(panel, "method", `${m.method} · ${(m.macs / 1e6).toFixed(1)} M MACs · ${(m.weight_bytes / 1e3).toFixed(0)} kB of weights · ${m.threads} threads`);
    setText(panel, "isa", m.isa_line);
    const bars = $('[data-k="bars"]', panel);
    bars.innerHTML = info.classes.map((c, i) => `<div class="bar" data-i="${i}"><div class="fill" style="height:2%"></div><div class="name">${c}</div></div>`).join("");
  }
  $("#facts").textContent = info.facts;
}

function renderPanel(role, m) {
  const panel = $(`.panel[data-role="${role}"]`);
  if (m.pred === undefined) return;
  setText(panel, "pred", info.classes[m.pred]);
  setText(panel, "conf", pct(m.conf, 0));
  const verdict = $('[data-k="verdict"]', panel);
  const v = m.correct === null || m.correct === undefined ? ["unscored", "window not scored"]
    : m.correct ? ["right", "✓ right"] : ["wrong", `✗ truth: ${info.classes[m.truth]}`];
  verdict.className = "verdict " + v[0]; verdict.textContent = v[1];
  drawBars(panel, m.probs || [], m.pred, m.truth);
  setText(panel, "rolling_accuracy", pct(m.rolling_accuracy));
  setText(panel, "accuracy_sub", `${m.rolling_scored} windows · whole run ${pct(m.accuracy)} of ${m.scored}`);
  setText(panel, "latency", `${fmt(m.latency_p50_ms, 2)} / ${fmt(m.latency_p95_ms, 2)} ms`);
  setText(panel, "cpu_percent", fmt(m.cpu_percent, 1, "%"));
  setText(panel, "sustainable", fmt(m.sustainable_per_s, 0, "/s"));
  setText(panel, "rtf", fmt(m.rtf, 3));
  setText(panel, "lag", fmt(m.lag_p95_ms, 0, " ms"));
  setText(panel, "dropped", String(m.dropped));
  setText(panel, "processed", `of ${m.processed + m.dropped} windows`);
  setText(panel, "backlog", `${m.backlog} (max ${m.backlog_max})`);
  $('[data-k="dropped"]', panel).classList.toggle("warn", m.dropped > 0);
  $('[data-k="backlog"]', panel).classList.toggle("warn", m.backlog_max >= 10);
}

function drawBars(panel, probs, pred, truth) {
  panel.querySelectorAll(".bar").forEach((bar, i) => {
    const p = probs[i] || 0;
    bar.firstChild.style.height = Math.max(2, 100 * p).toFixed(1) + "%";
    bar.classList.toggle("top", i === pred);
    bar.classList.toggle("truth", i === truth);
  });
}

function renderKpis(state) {
  const r = state.ratio;
  const kc = $("#kpi-cpu"), kl = $("#kpi-latency"), ka = $("#kpi-accuracy");
  setText(kc, "cpu_ratio", r.cpu === null ? "–" : `${r.cpu.toFixed(2)}×`);
  kc.className = "kpi " + (r.cpu === null ? "pending" : r.cpu <= 1 / 3 ? "" : "miss");
  setText(kl, "latency_ratio", r.latency === null ? "–" : `${r.latency.toFixed(1)}× lower`);
  kl.className = "kpi " + (r.latency === null ? "pending" : "");
  const d = r.accuracy_delta_points;
  setText(ka, "accuracy_delta", d === null ? "–" : `${d >= 0 ? "+" : "−"}${Math.abs(d).toFixed(1)} points`);
  ka.className = "kpi " + (d === null ? "pending" : Math.abs(d) <= 1 || d > 0 ? "" : "miss");
  $('[data-k="accuracy_note"]', ka).innerHTML = `on the same ${r.paired_n} scored windows <span class="target">target within 1 point</span>`;
}

function renderNow(state) {
  const np = state.now_playing, truth = $("#truth");
  if (np) {
    truth.textContent = np.emotion; truth.className = "truth";
    $("#sentence").textContent = np.name.split("-")[4] === "01" ? "“Kids are talking by the door”" : "“Dogs are sitting by the door”";
    $("#clipmeta").textContent = `actor ${np.actor} (held out) · sentence ${np.index} of ${np.of}${np.lap > 1 ? ` · lap ${np.lap}` : ""} · ${np.name}.flac`;
  } else {
    truth.textContent = state.source_kind === "mic" ? "microphone" : "–";
    truth.className = "truth none";
    $("#sentence").textContent = state.source_kind === "mic" ? "no ground truth for live input" : "";
    $("#clipmeta").innerHTML = "&nbsp;";
  }
}

// magma-like colour map for the spectrogram
const LUT = (() => {
  const stops = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]];
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = i / 255 * (stops.length - 1), k = Math.min(stops.length - 2, Math.floor(x)), f = x - k;
    for (let c = 0; c < 3; c++) lut[3 * i + c] = stops[k][c] + f * (stops[k + 1][c] - stops[k][c]);
  }
  return lut;
})();

function drawSpectrogram(spec) {
  const canvas = $("#spectrogram"), ctx = canvas.getContext("2d");
  const bytes = Uint8Array.from(atob(spec.data), ch => ch.charCodeAt(0));
  const img = ctx.createImageData(spec.cols, spec.rows);
  for (let i = 0; i < bytes.length; i++) {
    const v = bytes[i];
    img.data[4 * i] = LUT[3 * v]; img.data[4 * i + 1] = LUT[3 * v + 1]; img.data[4 * i + 2] = LUT[3 * v + 2]; img.data[4 * i + 3] = 255;
  }
  if (!drawSpectrogram.buffer) { drawSpectrogram.buffer = document.createElement("canvas"); }
  const buf = drawSpectrogram.buffer; buf.width = spec.cols; buf.height = spec.rows;
  buf.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(buf, 0, 0, canvas.width, canvas.height);
}

function drawWaveform(w) {
  const canvas = $("#waveform"), ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  const n = w.min.length, peak = Math.max(0.05, ...w.max.map(Math.abs), ...w.min.map(Math.abs));
  ctx.fillStyle = "#4b5a7d";
  for (let i = 0; i < n; i++) {
    const x = i / n * W, y0 = H / 2 - w.max[i] / peak * H * 0.46, y1 = H / 2 - w.min[i] / peak * H * 0.46;
    ctx.fillRect(x, y0, Math.max(1, W / n - 0.5), Math.max(1, y1 - y0));
  }
}

function lineChart(canvas, opts) {
  const dpr = window.devicePixelRatio || 1, cssW = canvas.clientWidth || canvas.width, cssH = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(cssW * dpr)) { canvas.width = Math.round(cssW * dpr); canvas.height = Math.round(cssH * dpr); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const W = cssW, H = cssH, L = 38, R = 8, T = 6, B = 18;
  ctx.clearRect(0, 0, W, H);
  if (!history.length) return;
  const tMax = history[history.length - 1].t, tMin = tMax - HISTORY_SECONDS;
  const X = t => L + (t - tMin) / HISTORY_SECONDS * (W - L - R);
  let lo = opts.min, hi = opts.max;
  const values = history.flatMap(h => opts.series.map(s => s.get(h))).filter(v => v !== null && v !== undefined && Number.isFinite(v));
  if (hi === undefined) hi = values.length ? Math.max(...values) * 1.15 : 1;
  if (lo === undefined) lo = 0;
  if (opts.log) { lo = Math.log10(Math.max(opts.min, 1e-3)); hi = Math.log10(Math.max(hi, opts.min * 10)); }
  if (hi <= lo) hi = lo + 1;
  const Y = v => T + (1 - ((opts.log ? Math.log10(Math.max(v, 1e-6)) : v) - lo) / (hi - lo)) * (H - T - B);
  // one-core-busy spans
  ctx.fillStyle = COLORS.busy;
  let start = null;
  history.forEach((h, i) => {
    if (h.busy && start === null) start = h.t;
    if ((!h.busy || i === history.length - 1) && start !== null) { ctx.fillRect(X(Math.max(start, tMin)), T, X(h.t) - X(Math.max(start, tMin)), H - T - B); start = null; }
  });
  // grid and labels
  ctx.strokeStyle = COLORS.grid; ctx.fillStyle = COLORS.text; ctx.lineWidth = 1; ctx.font = "10px system-ui, sans-serif";
  const ticks = opts.log ? logTicks(lo, hi) : linTicks(lo, hi);
  for (const v of ticks) {
    const y = Y(v); ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(W - R, y); ctx.stroke();
    ctx.textAlign = "right"; ctx.fillText(opts.label ? opts.label(v) : String(v), L - 5, y + 3);
  }
  ctx.textAlign = "center";
  for (let s = 0; s <= HISTORY_SECONDS; s += 15) ctx.fillText(s === 0 ? "now" : `−${s} s`, X(tMax - s), H - 4);
  if (opts.threshold !== undefined) {
    ctx.strokeStyle = "#c0c6d4"; ctx.setLineDash([4, 4]); const y = Y(opts.threshold);
    ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(W - R, y); ctx.stroke(); ctx.setLineDash([]);
  }
  for (const s of opts.series) {
    ctx.strokeStyle = s.color; ctx.lineWidth = s.width || 2; ctx.beginPath();
    let pen = false;
    for (const h of history) {
      const v = s.get(h);
      if (v === null || v === undefined || !Number.isFinite(v) || h.t < tMin) { pen = false; continue; }
      const x = X(h.t), y = Y(v);
      if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      pen = true;
    }
    ctx.stroke();
  }
}

function linTicks(lo, hi) {
  const span = hi - lo, step = Math.pow(10, Math.floor(Math.log10(span / 3)));
  const nice = [1, 2, 5, 10].map(m => m * step).find(s => span / s <= 5);
  const out = []; for (let v = Math.ceil(lo / nice) * nice; v <= hi + 1e-9; v += nice) out.push(+v.toFixed(6));
  return out;
}
function logTicks(lo, hi) { const out = []; for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) out.push(Math.pow(10, e)); return out.length ? out : [Math.pow(10, lo)]; }

function renderCharts() {
  const base = k => h => h.baseline ? h.baseline[k] : null, opt = k => h => h.optimized ? h.optimized[k] : null;
  lineChart($("#chart-latency"), { log: true, min: 0.1, label: v => v >= 1 ? `${v}` : v.toFixed(1),
    series: [{ get: base("latency"), color: COLORS.baseline }, { get: opt("latency"), color: COLORS.optimized }] });
  lineChart($("#chart-cpu"), { min: 0, label: v => `${v}%`,
    series: [{ get: base("cpu"), color: COLORS.baseline }, { get: opt("cpu"), color: COLORS.optimized }] });
  lineChart($("#chart-accuracy"), { min: 0, max: 100, threshold: 12.5, label: v => `${v}`,
    series: [{ get: base("acc"), color: COLORS.baseline }, { get: opt("acc"), color: COLORS.optimized }] });
  lineChart($("#chart-lag"), { min: 0, label: v => `${v}`,
    series: [{ get: base("lag"), color: COLORS.baseline }, { get: opt("lag"), color: COLORS.optimized },
             { get: base("drop_rate"), color: "#b0b9d0", width: 1 }, { get: opt("drop_rate"), color: "#7fd6b4", width: 1 }] });
}

function remember(state) {
  const entry = { t: state.t, busy: state.busy };
  for (const role of ROLES) {
    const m = state.models[role];
    if (m.latency_p50_ms === undefined) continue;
    const prev = history.length ? history[history.length - 1][role] : null;
    entry[role] = { latency: m.latency_p50_ms, cpu: m.cpu_percent, acc: m.rolling_accuracy === null ? null : 100 * m.rolling_accuracy,
                    lag: m.lag_p95_ms, dropped: m.dropped, drop_rate: prev ? Math.max(0, m.dropped - prev.dropped) : 0 };
  }
  history.push(entry);
  while (history.length && history[0].t < state.t - HISTORY_SECONDS - 1) history.shift();
}

function renderCosts(state) {
  const p = state.page || {};
  const parts = [`page server ${fmt(p.server_cpu_percent, 1, "%")} of a core`, `statistics ${fmt(p.stats_cpu_percent, 1, "%")}`,
                 `browser ${fmt(p.browser_render_ms, 2, " ms")} per redraw (${fmt(p.browser_render_cpu_percent, 1, "%")} of a core)`,
                 `streaming log-mel front end ${fmt(state.stream_cpu_percent, 1, "%")}`];
  $("#costs").textContent = "Cost of everything but the models: " + parts.join(" · ");
}

function render(state) {
  const t0 = performance.now();
  const pill = $("#status");
  pill.dataset.state = state.error ? "error" : "live";
  pill.textContent = state.error ? "error" : `live · ${clock(state.t)}`;
  if (state.error && !$(".error")) { const d = document.createElement("div"); d.className = "error"; d.textContent = state.error; document.body.insertBefore(d, $("main")); }
  const busy = $("#busy"); busy.setAttribute("aria-pressed", String(state.busy)); $(".label b", busy).textContent = state.busy ? "on" : "off";
  renderNow(state);
  for (const role of ROLES) renderPanel(role, state.models[role]);
  renderKpis(state);
  if (state.spectrogram) drawSpectrogram(state.spectrogram);
  if (state.waveform) drawWaveform(state.waveform);
  remember(state);
  if (++chartTick % CHART_EVERY === 0) renderCharts();
  renderCosts(state);
  cost.ms += performance.now() - t0; cost.n += 1;
  const elapsed = performance.now() - cost.since;
  if (elapsed > 2000 && cost.n) {
    fetch("/api/render", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ render_ms: cost.ms / cost.n, render_cpu_percent: 100 * cost.ms / elapsed }) }).catch(() => {});
    cost.ms = 0; cost.n = 0; cost.since = performance.now();
  }
  document.body.dataset.updates = String((+document.body.dataset.updates || 0) + 1);
}

$("#busy").addEventListener("click", async () => {
  const on = $("#busy").getAttribute("aria-pressed") !== "true";
  $("#busy").disabled = true;
  try { await fetch("/api/busy", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ on }) }); }
  finally { $("#busy").disabled = false; }
});

loadInfo().then(() => {
  const events = new EventSource("/events");
  events.onmessage = e => render(JSON.parse(e.data));
  events.addEventListener("end", () => { events.close(); const pill = $("#status"); pill.dataset.state = "ended"; pill.textContent = "stream ended"; });
  events.onerror = () => { const pill = $("#status"); if (pill.dataset.state !== "ended") { pill.dataset.state = "ended"; pill.textContent = "disconnected"; } };
});
