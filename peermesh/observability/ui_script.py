"""The ``/ui`` page's script, served as ``/ui/app.js`` so the page needs no inline code.

It asks ``/v1/mesh/graph`` for a layout as wide as the page, draws the boxes and paths it
is given (it computes no positions), and refreshes. Strings from the mesh go into the
document only through ``textContent`` and ``setAttribute``; no markup is ever parsed.
"""

from __future__ import annotations

from typing import Final

SCRIPT: Final = r"""
"use strict";
const NS = "http://www.w3.org/2000/svg";
const body = document.body;
const MIN_WIDTH = Number(body.dataset.minWidth), MAX_WIDTH = Number(body.dataset.maxWidth);
const REFRESH_MS = Number(body.dataset.refreshMs);
let latest = null, selected = null, renders = 0;

function svg(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}
function html(name, cls, text) {
  const e = document.createElement(name);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function pct(x) { return x === null || x === undefined ? "-" : (100 * x).toFixed(1) + "%"; }
function num(x) { return x === null || x === undefined ? "-" : String(x); }
function refusedCount(c) { return (c.errors || 0) + (c.denied || 0) + (c.limited || 0); }

function pageWidth() {
  const style = getComputedStyle(body);
  const room = document.documentElement.clientWidth
    - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return Math.max(MIN_WIDTH, Math.min(MAX_WIDTH, Math.floor(room)));
}

function drawGraph(data) {
  const root = document.getElementById("graph");
  root.replaceChildren();
  root.setAttribute("width", data.width);
  root.setAttribute("height", data.height);
  root.setAttribute("viewBox", "0 0 " + data.width + " " + data.height);
  const defs = svg("defs");
  const marker = svg("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                markerWidth: 7, markerHeight: 7, orient: "auto"});
  marker.appendChild(svg("path", {d: "M0,0L10,5L0,10z"}));
  defs.appendChild(marker);
  root.appendChild(defs);
  const edges = svg("g", {id: "edges"}), nodes = svg("g", {id: "nodes"});
  const labels = svg("g", {id: "labels"});
  for (const e of data.edges) {
    const cls = refusedCount(e.counts) ? "edge refused" : "edge";
    const g = svg("g", {"class": cls, "data-source": e.source,
                        "data-destination": e.destination});
    g.appendChild(svg("path", {d: e.path}));
    edges.appendChild(g);
    const b = e.label_box;
    const l = svg("g", {"class": "label" + (e.on_shelf ? " shelf" : "") +
                                 (refusedCount(e.counts) ? " refused" : ""),
                        "data-source": e.source, "data-destination": e.destination});
    l.appendChild(svg("rect", {x: b.x, y: b.y, width: b.w, height: b.h, rx: 3}));
    l.appendChild(svg("text", {x: b.x + 4, y: b.y + 12}, e.label));
    labels.appendChild(l);
  }
  for (const n of data.nodes) {
    const b = n.box, cx = b.x + b.w / 2;
    const g = svg("g", {"class": "node" + (n.unhealthy ? " unhealthy" : "") +
                                 (n.service === selected ? " selected" : ""),
                        "data-service": n.service, tabindex: 0, role: "button"});
    g.appendChild(svg("title", {}, n.service));
    g.appendChild(svg("rect", {x: b.x, y: b.y, width: b.w, height: b.h, rx: 6}));
    g.appendChild(svg("text", {"class": "name", x: cx, y: b.y + 16}, n.text));
    g.appendChild(svg("text", {"class": "detail", x: cx, y: b.y + 29}, n.detail));
    if (n.refused) g.appendChild(svg("text", {"class": "refused", x: cx, y: b.y + 40},
                                     n.refused));
    g.addEventListener("click", () => select(n.service));
    g.addEventListener("keydown", (ev) => { if (ev.key === "Enter") select(n.service); });
    nodes.appendChild(g);
  }
  if (data.overflow.labels) {
    labels.appendChild(svg("text", {"class": "shelf-title", x: 16, y: data.overflow.top - 8},
                           "labels with no room on their edge:"));
  }
  root.append(edges, nodes, labels);
  root.dataset.width = String(data.width);
}

function drawTable(data) {
  const tbody = document.querySelector("#services tbody");
  tbody.replaceChildren();
  for (const n of data.nodes) {
    const c = n.counts, tr = html("tr");
    tr.dataset.service = n.service;
    const cells = [
      [n.service, ""], [String(n.agent_count), ""], [String(c.requests), ""],
      [c.rps.toFixed(2), ""], [pct(c.success_rate), ""],
      [String(c.errors), c.errors ? "refused" : ""],
      [String(c.denied), c.denied ? "refused" : ""],
      [String(c.limited), c.limited ? "refused" : ""],
      [num(c.p50_ms), ""], [num(c.p95_ms), ""], [num(c.p99_ms), ""],
    ];
    for (const [text, cls] of cells) tr.appendChild(html("td", cls, text));
    tr.addEventListener("click", () => select(n.service));
    tbody.appendChild(tr);
  }
}

function drawLegend(data) {
  const list = document.getElementById("legend");
  list.replaceChildren();
  for (const item of data.legend) {
    const li = html("li");
    const key = /^[a-z0-9]+$/.test(item.key) ? item.key : "x";
    li.dataset.key = key;
    li.append(html("span", "swatch " + (/^[0-9]/.test(key) ? "s" + key : key)),
              document.createTextNode(item.text));
    list.appendChild(li);
  }
}

function edgeLine(e) {
  return e.source + " \u2192 " + e.destination + ": " + e.label;
}

function drawPanel() {
  const panel = document.getElementById("panel");
  const node = latest && selected !== null ?
    latest.nodes.find((n) => n.service === selected) : undefined;
  if (!node) { panel.hidden = true; return; }
  document.getElementById("panel-title").textContent = node.service;
  const fill = (id, lines) => {
    const ul = document.getElementById(id);
    ul.replaceChildren(...(lines.length ? lines : ["none"]).map((t) => html("li", "", t)));
  };
  fill("panel-in", latest.edges.filter((e) => e.destination === node.service).map(edgeLine));
  fill("panel-out", latest.edges.filter((e) => e.source === node.service).map(edgeLine));
  const more = node.agent_count - node.agents.length;
  fill("panel-agents", node.agents.concat(more > 0 ? [more + " more"] : []));
  panel.dataset.service = node.service;
  panel.hidden = false;
}

function select(service) {
  selected = service;
  for (const g of document.querySelectorAll("#nodes .node")) {
    g.classList.toggle("selected", g.dataset.service === service);
  }
  drawPanel();
}

function drawMeta(data) {
  const parts = ["from " + data.node, "nodes: " + data.nodes_reporting.join(", ")];
  if (data.errors.length) parts.push("unreachable: " + data.errors.map((e) => e.peer).join(", "));
  parts.push("updated " + new Date().toLocaleTimeString());
  document.getElementById("meta").textContent = parts.join(" \u00b7 ");
  const overflow = document.getElementById("overflow");
  overflow.textContent = data.overflow.note;
  overflow.hidden = !data.overflow.note;
}

async function refresh() {
  const width = pageWidth();
  try {
    const r = await fetch("/v1/mesh/graph?width=" + width, {cache: "no-store"});
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.status);
    latest = data;
    drawGraph(data); drawTable(data); drawLegend(data); drawPanel(); drawMeta(data);
    renders += 1;
    body.dataset.renders = String(renders);
  } catch (err) {
    document.getElementById("meta").textContent = "cannot load /v1/mesh/graph: " + err;
  }
}

let resizing = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(refresh, 150);
});
document.getElementById("panel-close").addEventListener("click", () => select(null));
refresh();
setInterval(refresh, REFRESH_MS);
"""
