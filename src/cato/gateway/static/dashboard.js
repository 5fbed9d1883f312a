/* The CATO gateway's live dashboard: polls /dashboard/data?since=<t> every second and draws the
   gateway's recent history with uPlot (served from the package). window.catoDashboard exposes
   the charts' point counts for tests. */
(function () {
  "use strict";
  const POLL_MS = 1000;
  const TASK_COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#4b5563"];
  const REPLICA_COLORS = ["#0f766e", "#b45309", "#7c3aed", "#be123c", "#1d4ed8", "#4d7c0f", "#a21caf", "#374151"];
  const PCT_COLORS = { p50: "#93c5fd", p95: "#2563eb", p99: "#1e3a8a" };
  const ACTION_COLORS = { add: "#16a34a", ready: "#0d9488", remove: "#ea580c", stopped: "#6b7280",
    crashed: "#dc2626", failed: "#dc2626", unhealthy: "#dc2626" };
  const state = { samples: [], last: 0, horizon: 900, tasks: {}, scale: [], health: [], meta: null };
  const charts = {};   // id -> {u, key, el}
  const taskColor = { completion: TASK_COLORS[0], generation: TASK_COLORS[1], summarization: TASK_COLORS[2],
    translation: TASK_COLORS[3] };

  function colorOf(task) {
    if (!(task in taskColor)) taskColor[task] = TASK_COLORS[Object.keys(taskColor).length % TASK_COLORS.length];
    return taskColor[task];
  }
  const COUNT_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];
  const countRange = (u, min, max) => [0, Math.max(4, Math.ceil(max * 1.15))];
  function fmtTime(t) { return new Date(t * 1000).toLocaleTimeString([], { hour12: false }); }
  function unitAxis(unit, decimals, integer) {
    const a = { label: unit, labelSize: 18, size: 56,
      values: (u, vals) => vals.map(v => v == null ? "" : v.toFixed(decimals)) };
    if (integer) a.incrs = COUNT_INCRS;
    return a;
  }

  /* Vertical markers for scale events (model's replicas chart) */
  function eventMarkers() {
    return { hooks: { draw: [u => {
      const ctx = u.ctx, [x0, x1] = [u.scales.x.min, u.scales.x.max];
      ctx.save();
      ctx.font = `${Math.round(10 * devicePixelRatio)}px sans-serif`;
      const groups = [];       // one marker for the same action within 2 s ("add x2")
      for (const e of state.scale) {
        const g = groups[groups.length - 1];
        if (g && g.action === e.action && e.at_unix - g.at_unix < 2) g.n++;
        else groups.push({ at_unix: e.at_unix, action: e.action, n: 1 });
      }
      let n = 0;
      for (const e of groups) {
        if (e.at_unix < x0 || e.at_unix > x1) continue;
        const row = n++ % 3;   // labels of events close in time are staggered
        const x = Math.round(u.valToPos(e.at_unix, "x", true));
        ctx.strokeStyle = ACTION_COLORS[e.action] || "#6b7280";
        ctx.fillStyle = ctx.strokeStyle;
        ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
        ctx.lineWidth = devicePixelRatio;
        ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
        ctx.fillText(e.n > 1 ? `${e.action} \u00d7${e.n}` : e.action, x + 3 * devicePixelRatio, u.bbox.top + (12 + 12 * row) * devicePixelRatio);
      }
      ctx.restore();
    }] } };
  }

  function card(id, title, note) {
    let el = document.getElementById("card-" + id);
    if (!el) {
      el = document.createElement("div");
      el.className = "card"; el.id = "card-" + id;
      el.innerHTML = `<h2></h2><p class="note"></p><div class="chart" id="chart-${id}"></div>`;
      document.getElementById("charts").appendChild(el);
    }
    el.querySelector("h2").textContent = title;
    el.querySelector(".note").textContent = note || "";
    return el.querySelector(".chart");
  }

  /* Create or update one chart; it is rebuilt when its series change (replicas come and go). */
  function upsert(id, title, note, yAxis, series, data, opts) {
    const host = card(id, title, note);
    const key = series.map(s => s.label).join("|");
    const c = charts[id];
    if (c && c.key === key) { c.u.setData(data); showLatest(c); return; }
    if (c) c.u.destroy();
    const width = Math.max(300, host.clientWidth || 540);
    const u = new uPlot(Object.assign({
      width, height: 230,
      scales: { x: { time: true }, y: opts && opts.y ? opts.y : {} },
      axes: [{ label: "time", labelSize: 18, space: 70, values: (u, vals) => vals.map(fmtTime) }, yAxis],
      series: [{ label: "time", value: (u, v) => v == null ? "-" : fmtTime(v) }].concat(series),
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      plugins: opts && opts.plugins ? opts.plugins : [],
    }), data, host);
    charts[id] = { u, key, host, hover: false };
    host.addEventListener("mouseenter", () => { charts[id].hover = true; });
    host.addEventListener("mouseleave", () => { charts[id].hover = false; showLatest(charts[id]); });
    showLatest(charts[id]);
  }

  /* Outside hover, the legend shows the latest values. */
  function showLatest(c) {
    if (!c.hover && c.u.data[0].length) c.u.setLegend({ idx: c.u.data[0].length - 1 });
  }

  function col(f) { return state.samples.map(f); }

  function render() {
    const s = state.samples;
    if (!s.length) return;
    const xs = col(x => x.t);
    const taskNames = Array.from(new Set(s.flatMap(x => Object.keys(x.tasks)))).sort();
    const direct = Object.keys(state.tasks).filter(t => state.tasks[t].endpoints.includes("direct")).sort();
    const shown = Array.from(new Set(direct.concat(taskNames)));
    const win = state.meta ? state.meta.window_s : 10;

    // attainment and goodput per task
    upsert("attainment", "SLA attainment per task", `share of requests meeting their SLA, last ${win} s`,
      unitAxis("% met", 0),
      shown.map(t => ({ label: t, stroke: colorOf(t), width: 2, value: (u, v) => v == null ? "-" : v.toFixed(1) + " %" })),
      [xs].concat(shown.map(t => col(x => x.tasks[t] && x.tasks[t].attainment != null ? 100 * x.tasks[t].attainment : null))),
      { y: { range: [0, 100] } });
    upsert("goodput", "Goodput per task", `requests meeting their SLA per second, last ${win} s`,
      unitAxis("req/s", 1),
      shown.map(t => ({ label: t, stroke: colorOf(t), width: 2, value: (u, v) => v == null ? "-" : v.toFixed(2) + " req/s" })),
      [xs].concat(shown.map(t => col(x => x.tasks[t] ? x.tasks[t].goodput_rps : null))));

    // latency percentiles against each task's SLA
    for (const t of shown) {
      const info = state.tasks[t] || { sla_kind: "e2e", sla_ms: null };
      const metric = info.sla_kind === "ttft" ? "ttft_ms" : "e2e_ms";
      const name = info.sla_kind === "ttft" ? "TTFT" : "E2E";
      const series = ["p50", "p95", "p99"].map(p => ({ label: `${name} ${p.toUpperCase()}`, stroke: PCT_COLORS[p],
        width: p === "p95" ? 2 : 1.5, value: (u, v) => v == null ? "-" : v.toFixed(0) + " ms" }));
      const data = [xs].concat(["p50", "p95", "p99"].map(p => col(x => x.tasks[t] ? x.tasks[t][metric][p] : null)));
      if (info.sla_ms != null) {
        series.push({ label: `SLA ${info.sla_ms.toFixed(0)} ms`, stroke: "#dc2626", width: 2, dash: [8, 5],
          value: (u, v) => v == null ? "-" : v.toFixed(0) + " ms" });
        data.push(xs.map(() => info.sla_ms));
      }
      upsert("latency-" + t, `${t}: ${name} percentiles vs SLA`,
        `${name} of requests finished in the last ${win} s; the SLA is on ${name}`,
        unitAxis("ms", 0), series, data, { y: { range: (u, min, max) => [0, Math.max(10, max * 1.08)] } });
    }

    // queues and calls in flight per replica
    const last = s[s.length - 1];
    const reps = Array.from(new Set(s.slice(-120).flatMap(x => x.replicas.map(r => r.id)))).sort();
    const repVal = (x, id, k) => { const r = x.replicas.find(r => r.id === id); return r ? r[k] : null; };
    const repSeries = reps.map((id, i) => ({ label: id, stroke: REPLICA_COLORS[i % REPLICA_COLORS.length], width: 2,
      value: (u, v) => v == null ? "-" : v.toFixed(0) }));
    upsert("queued", "Queued calls per replica", "calls waiting in the gateway for each replica",
      unitAxis("calls", 0, true), repSeries, [xs].concat(reps.map(id => col(x => repVal(x, id, "queued")))),
      { y: { range: countRange } });
    upsert("inflight", "In-flight calls per replica", "calls released to each replica's engine and not finished",
      unitAxis("calls", 0, true), repSeries.map(x => Object.assign({}, x)),
      [xs].concat(reps.map(id => col(x => repVal(x, id, "in_flight")))), { y: { range: countRange } });

    // replicas per model, with scale events
    const models = Array.from(new Set(s.flatMap(x => Object.keys(x.models)))).sort();
    const mSeries = [], mData = [xs];
    models.forEach((m, i) => {
      const c = TASK_COLORS[(i + 4) % TASK_COLORS.length];
      mSeries.push({ label: `${m} live`, stroke: c, width: 2, value: (u, v) => v == null ? "-" : v.toFixed(0) });
      mSeries.push({ label: `${m} ready`, stroke: c, width: 1.5, dash: [6, 4], value: (u, v) => v == null ? "-" : v.toFixed(0) });
      mData.push(col(x => x.models[m] ? x.models[m].replicas : null));
      mData.push(col(x => x.models[m] ? x.models[m].ready : null));
    });
    upsert("replicas", "Replicas per model", "live and ready replicas; dashed verticals are scale events (table below)",
      unitAxis("replicas", 0, true), mSeries, mData,
      { y: { range: (u, min, max) => [0, Math.max(2, max + 1)] }, plugins: [eventMarkers()] });

    // ejections and retries
    const counters = ["retries", "ejections", "readmissions", "engine_errors", "aborts"];
    const cColors = ["#2563eb", "#dc2626", "#16a34a", "#ea580c", "#6b7280"];
    upsert("reliability", "Ejections and retries", "cumulative counts since the gateway started",
      unitAxis("count", 0, true),
      counters.map((k, i) => ({ label: k.replace("_", " "), stroke: cColors[i], width: 2, value: (u, v) => v == null ? "-" : v.toFixed(0) })),
      [xs].concat(counters.map(k => col(x => x.counters[k] != null ? x.counters[k] : null))),
      { y: { range: countRange } });

    renderTiles(shown, last);
    renderTables();
  }

  function renderTiles(shown, last) {
    const el = document.getElementById("tiles");
    el.innerHTML = "";
    for (const t of shown) {
      const x = last.tasks[t], info = state.tasks[t] || {};
      const att = x && x.attainment != null ? 100 * x.attainment : null;
      const metric = info.sla_kind === "ttft" ? "ttft_ms" : "e2e_ms";
      const p95 = x ? x[metric].p95 : null;
      const div = document.createElement("div");
      div.className = "tile";
      div.innerHTML = `<div class="name"></div><div class="big"></div><div class="small"></div>`;
      div.querySelector(".name").textContent = t;
      const big = div.querySelector(".big");
      big.textContent = att == null ? "no requests" : att.toFixed(1) + " % met";
      if (att != null) big.className = "big " + (att >= 90 ? "good" : "bad");
      div.querySelector(".small").textContent = `${x ? x.requests : 0} req in window · ` +
        `${(info.sla_kind || "").toUpperCase()} P95 ${p95 == null ? "-" : p95.toFixed(0) + " ms"} / SLA ${info.sla_ms == null ? "-" : info.sla_ms.toFixed(0) + " ms"}`;
      el.appendChild(div);
    }
  }

  function fillTable(id, rows, cols) {
    const body = document.querySelector(`#${id} tbody`);
    body.innerHTML = "";
    if (!rows.length) {
      const tr = body.insertRow(); const td = tr.insertCell();
      td.colSpan = cols.length; td.className = "empty"; td.textContent = "none yet";
      return;
    }
    for (const r of rows.slice(-20).reverse()) {
      const tr = body.insertRow();
      for (const c of cols) tr.insertCell().textContent = c === "at_unix" ? fmtTime(r[c]) : String(r[c] ?? "");
    }
  }
  function renderTables() {
    fillTable("scale-events", state.scale, ["at_unix", "model", "action", "replica", "reason"]);
    fillTable("health-events", state.health, ["at_unix", "replica", "action", "reason"]);
  }

  async function poll() {
    try {
      const r = await fetch(`/dashboard/data?since=${state.last}`, { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401 || r.status === 403) { location.reload(); return; }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const d = await r.json();
      state.meta = d; state.tasks = d.tasks; state.scale = d.scale_events; state.health = d.health_events;
      state.horizon = Math.round(d.horizon_s / d.interval_s);
      for (const x of d.samples) state.samples.push(x);
      if (state.samples.length > state.horizon) state.samples.splice(0, state.samples.length - state.horizon);
      if (d.samples.length) state.last = d.samples[d.samples.length - 1].t;
      render();
      document.getElementById("status").textContent =
        `policy ${d.policy} · ${state.samples.length} samples (every ${d.interval_s} s, up to ${Math.round(d.horizon_s / 60)} min) · updated ${fmtTime(d.now)}`;
    } catch (e) {
      document.getElementById("status").textContent = `update failed: ${e.message}; retrying`;
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  window.addEventListener("resize", () => {
    for (const c of Object.values(charts)) c.u.setSize({ width: Math.max(300, c.host.clientWidth), height: 230 });
  });
  window.catoDashboard = {
    points: () => Object.fromEntries(Object.entries(charts).map(([id, c]) => [id, c.u.data[0].length])),
    samples: () => state.samples.length,
  };
  poll();
})();
