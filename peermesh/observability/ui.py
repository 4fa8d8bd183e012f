"""The ``/ui`` dashboard: one self-contained page (inline script, no external assets)."""

from __future__ import annotations

DASHBOARD_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>peermesh</title>
<style>
body{font-family:system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:20px;margin:0 0 8px}
#meta{color:#666;font-size:13px;margin-bottom:8px}
svg{background:#fff;border:1px solid #ddd}
.node circle{fill:#e8f0fe;stroke:#1a73e8;stroke-width:2}
.node.bad circle{fill:#fde8e8;stroke:#d93025}
.node text{font-size:13px;text-anchor:middle}
.edge line{stroke:#888;stroke-width:2;marker-end:url(#arrow)}
.edge text{font-size:11px;fill:#444;text-anchor:middle}
table{border-collapse:collapse;margin-top:12px;background:#fff}
td,th{border:1px solid #ddd;padding:4px 10px;font-size:13px;text-align:right}
td:first-child,th:first-child{text-align:left}
</style></head>
<body>
<h1>peermesh</h1>
<div id="meta">loading&hellip;</div>
<svg id="topology" width="760" height="420" viewBox="0 0 760 420">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"
 markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="#888"/></marker></defs>
<g id="edges"></g><g id="nodes"></g></svg>
<table><thead><tr><th>service</th><th>RPS</th><th>success</th><th>denied</th>
<th>limited</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr></thead>
<tbody id="services"></tbody></table>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function pct(x) { return x === null || x === undefined ? "-" : (100 * x).toFixed(1) + "%"; }
function num(x) { return x === null || x === undefined ? "-" : String(x); }
function rps(x) { return x === null || x === undefined ? "-" : Number(x).toFixed(2); }
function refused(e) {
  const parts = [];
  if (e.denied) parts.push(e.denied + " denied");
  if (e.limited) parts.push(e.limited + " limited");
  return parts.length ? " \\u00b7 " + parts.join(", ") : "";
}
function draw(data) {
  const services = data.services || [], edges = data.edges || [];
  const n = Math.max(services.length, 1), cx = 380, cy = 210, r = 150;
  const pos = {};
  services.forEach((s, i) => {
    const a = 2 * Math.PI * i / n - Math.PI / 2;
    pos[s.service] = [cx + r * Math.cos(a), cy + r * Math.sin(a)];
  });
  const eg = document.getElementById("edges"), ng = document.getElementById("nodes");
  eg.replaceChildren(); ng.replaceChildren();
  for (const e of edges) {
    const a = pos[e.source], b = pos[e.destination];
    if (!a || !b) continue;
    const dx = b[0] - a[0], dy = b[1] - a[1], len = Math.hypot(dx, dy) || 1;
    const k = 42 / len;
    const g = el("g", {"class": "edge", "data-source": e.source,
                       "data-destination": e.destination});
    g.appendChild(el("line", {x1: a[0] + dx * k, y1: a[1] + dy * k,
                              x2: b[0] - dx * k, y2: b[1] - dy * k}));
    g.appendChild(el("text", {x: (a[0] + b[0]) / 2, y: (a[1] + b[1]) / 2 - 6},
      rps(e.rps) + " rps \\u00b7 " + pct(e.success_rate) + refused(e)));
    eg.appendChild(g);
  }
  for (const s of services) {
    const p = pos[s.service];
    const bad = s.success_rate !== null && s.success_rate < 0.95;
    const g = el("g", {"class": "node" + (bad ? " bad" : ""), "data-service": s.service});
    g.appendChild(el("circle", {cx: p[0], cy: p[1], r: 40}));
    g.appendChild(el("text", {x: p[0], y: p[1] + 4}, s.service));
    ng.appendChild(g);
  }
  const tb = document.getElementById("services");
  tb.replaceChildren();
  for (const s of services) {
    const tr = document.createElement("tr");
    const cells = [s.service, rps(s.rps), pct(s.success_rate), String(s.denied || 0),
                   String(s.limited || 0), num(s.p50_ms), num(s.p95_ms), num(s.p99_ms)];
    for (const v of cells) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    tb.appendChild(tr);
  }
  document.getElementById("meta").textContent = "from " + data.node + " \\u00b7 nodes: " +
    (data.nodes || []).join(", ") + (data.errors && data.errors.length ?
    " \\u00b7 unreachable: " + data.errors.map(e => e.peer).join(", ") : "") +
    " \\u00b7 updated " + new Date().toLocaleTimeString();
}
async function refresh() {
  try {
    const r = await fetch("/v1/mesh/stats");
    draw(await r.json());
  } catch (err) {
    document.getElementById("meta").textContent = "cannot load /v1/mesh/stats: " + err;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body></html>
"""
