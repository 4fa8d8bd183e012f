"""/ui in headless Chromium over the DevTools protocol, against real agents and traffic:
every edge label legible (no two label boxes intersect, none covers a node), the page as
wide as its window, the legend, the denied count, the click panel, and a strict CSP
under which a hostile service name is only ever text."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import time
from typing import Any

import httpx
import pytest
import trio

from peermesh.agent import Agent
from peermesh.observability.ui import CSP
from tests.integration.test_authz import ORDERS_DENY_ADMIN
from tests.integration.test_observability_meshview import admin_url, five_agents, traffic
from tests.support.cdp import CHROMIUM, Page, chromium
from tests.support.meshkit import eventually, two_agents

pytestmark = pytest.mark.skipif(
    not shutil.which(CHROMIUM), reason="Debian's chromium is not installed"
)

HOSTILE = '<img src=x onerror="window.__pwned=1">'
DENIED = 3

# Collects CSP violations from before the page's first script runs.
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
"""

SNAPSHOT = """JSON.stringify({
  labels: [...document.querySelectorAll("#labels .label")].map((g) => ({
    edge: g.dataset.source + " -> " + g.dataset.destination,
    shelf: g.classList.contains("shelf"),
    text: g.querySelector("text").textContent,
    box: g.getBoundingClientRect().toJSON(),
    rect: g.querySelector("rect").getBoundingClientRect().toJSON(),
    glyphs: g.querySelector("text").getBoundingClientRect().toJSON(),
  })),
  nodes: [...document.querySelectorAll("#nodes .node")].map((g) => ({
    service: g.dataset.service,
    title: g.querySelector("title").textContent,
    refused: (g.querySelector(".refused") || {}).textContent || "",
    box: g.querySelector("rect").getBoundingClientRect().toJSON(),
    texts: [...g.querySelectorAll("text")].map((t) => t.getBoundingClientRect().toJSON()),
  })),
  shelfTitle: document.querySelectorAll("#labels .shelf-title").length,
  graph: document.getElementById("graph").getBoundingClientRect().toJSON(),
  room: document.documentElement.clientWidth,
  inner: window.innerWidth,
  legend: [...document.querySelectorAll("#legend li")].map((li) => li.textContent),
  rows: [...document.querySelectorAll("#services tbody tr")].map(
    (tr) => [...tr.children].map((td) => td.textContent)),
  imgs: document.querySelectorAll("img").length,
  pwned: window.__pwned === undefined ? null : window.__pwned,
})"""


def intersects(a: dict[str, float], b: dict[str, float]) -> bool:
    """Boxes that share area (touching edges do not count)."""
    return not (
        a["right"] <= b["left"]
        or b["right"] <= a["left"]
        or a["bottom"] <= b["top"]
        or b["bottom"] <= a["top"]
    )


async def snapshot(page: Page) -> dict[str, Any]:
    raw = await page.evaluate(SNAPSHOT)
    data: dict[str, Any] = json.loads(raw)
    return data


def assert_legible(shot: dict[str, Any], edges: int) -> None:
    labels, nodes = shot["labels"], shot["nodes"]
    assert len(labels) == edges, [label["edge"] for label in labels]
    # Labels on the strip under the graph come under a caption saying why.
    assert shot["shelfTitle"] == int(any(label["shelf"] for label in labels))
    for label in labels:
        # The text is drawn inside its box: the layout's idea of the font's width holds.
        glyphs, rect = label["glyphs"], label["rect"]
        assert glyphs["width"] > 0, label
        assert rect["left"] <= glyphs["left"] and glyphs["right"] <= rect["right"] + 0.5, label
        assert label["box"]["right"] <= shot["graph"]["right"] + 0.5, label
    for node in nodes:
        for text in node["texts"]:  # the name and the count lines fit in the node
            assert node["box"]["left"] <= text["left"] and text["right"] <= node["box"]["right"]
    for a, b in itertools.combinations(labels, 2):
        assert not intersects(a["box"], b["box"]), (a, b)
    for label, node in itertools.product(labels, nodes):
        assert not intersects(label["box"], node["box"]), (label, node)


async def denied_calls(agent: Agent, n: int) -> None:
    host, port = agent.addresses["outbound"]
    async with httpx.AsyncClient() as c:
        for _ in range(n):
            r = await c.get(f"http://{host}:{port}/admin/x", headers={"host": "orders"})
            assert r.status_code == 403, r.text


async def open_ui(page: Page, url: str, width: int) -> dict[str, Any]:
    await page.set_viewport(width, 900)
    await page.call("Page.navigate", {"url": url})
    return await rendered(page, width)


async def rendered(page: Page, width: int) -> dict[str, Any]:
    """Wait for a drawing laid out for this window's width; the snapshot of it."""
    graph = "(document.getElementById('graph') || {dataset: {}})"
    await page.wait_for(
        f"document.readyState == 'complete' && window.innerWidth == {width}"
        f" && {graph}.dataset.width == String(document.documentElement.clientWidth - 32)"
    )
    return await snapshot(page)


async def test_ui_draws_legible_labels_counts_and_panel_under_a_strict_csp(tmp_path):
    async with five_agents(tmp_path) as agents:
        frontend, billing = agents[0], agents[4]
        await eventually(lambda: len(frontend.endpoints.endpoints("orders") or []) == 2)
        await eventually(lambda: bool(frontend.endpoints.endpoints("reviews")))
        async with httpx.AsyncClient() as c:
            r = await c.put(
                admin_url(billing) + "/v1/policy",
                json={"objects": [ORDERS_DENY_ADMIN]},
                headers={"X-Peermesh-Request": "1"},
            )
            assert r.status_code == 200, r.text
        deny = ORDERS_DENY_ADMIN["name"]
        await eventually(
            lambda: all(a.policy.get("AuthorizationPolicy", deny) for a in agents), timeout=20
        )
        # Crossing calls: frontend and billing both call orders and reviews.
        await traffic(frontend, "orders", 10)
        await traffic(frontend, "reviews", 5)
        await traffic(billing, "orders", 4)
        await traffic(billing, "reviews", 6)
        await denied_calls(frontend, DENIED)
        # A peer's stats reply may name any service: one that is markup, seen by billing.
        billing.observability.golden.record(
            "inbound", "frontend", HOSTILE, True, 0.002, time.monotonic(), 200
        )
        async with httpx.AsyncClient() as c:
            # The sidecars count a request once its answer is sent: wait for the last.
            with trio.fail_after(10):
                while True:
                    graph = (await c.get(admin_url(billing) + "/v1/mesh/graph?width=968")).json()
                    orders = next(n for n in graph["nodes"] if n["service"] == "orders")
                    if orders["counts"]["denied"] == DENIED:
                        break
                    await trio.sleep(0.05)
        edges = len(graph["edges"])
        assert edges >= 5, graph["edges"]
        url = admin_url(billing) + "/ui"

        async with chromium(tmp_path / "profile") as browser:
            page = await browser.new_page()
            for domain in ("Page", "Runtime", "Log"):
                await page.call(f"{domain}.enable")
            await page.call("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_CSP})

            for width in (1000, 1600):
                if width == 1000:
                    shot = await open_ui(page, url, width)
                else:
                    await page.set_viewport(width, 900)  # a resize: the page lays out again
                    shot = await rendered(page, width)
                assert_legible(shot, edges)
                # The graph takes the page's width (less the body's padding), no more.
                assert shot["graph"]["width"] == shot["room"] - 32
                assert shot["graph"]["right"] <= shot["room"]
                assert shot["room"] >= 0.97 * width

            nodes = {n["service"]: n for n in shot["nodes"]}
            assert {"frontend", "orders", "reviews", HOSTILE} <= set(nodes)
            assert nodes["orders"]["refused"] == f"{DENIED} denied"
            label = next(x for x in shot["labels"] if x["edge"] == "frontend -> orders")
            assert f"{DENIED} denied" in label["text"] and "rps" in label["text"], label
            row = next(r for r in shot["rows"] if r[0] == "orders")
            assert row[1] == "2" and row[6] == str(DENIED), row  # agents, denied
            legend = " ".join(shot["legend"])
            for word in ("success rate (non-5xx)", "denied: 403", "limited: 429", "5xx"):
                assert word in legend, legend

            # The markup is a name: text in the node, no element made of it, nothing run.
            assert nodes[HOSTILE]["title"] == HOSTILE
            assert shot["imgs"] == 0 and shot["pwned"] is None

            # A real click on the orders node opens its panel: its calls and its agents.
            box = nodes["orders"]["box"]
            await page.click(box["left"] + box["width"] / 2, box["top"] + box["height"] / 2)
            await page.wait_for(
                "!document.getElementById('panel').hidden"
                " && document.getElementById('panel').dataset.service == 'orders'"
            )
            panel = json.loads(
                await page.evaluate(
                    "JSON.stringify(Object.fromEntries(['panel-title', 'panel-in', 'panel-out',"
                    " 'panel-agents'].map((id) => [id, [...document.getElementById(id)"
                    ".querySelectorAll('li')].map((li) => li.textContent)"
                    " .concat(id == 'panel-title' ? [document.getElementById(id)"
                    ".textContent] : [])])))"
                )
            )
            assert panel["panel-title"] == ["orders"]
            calls_in = " | ".join(panel["panel-in"])
            assert "frontend → orders" in calls_in and "billing → orders" in calls_in
            assert f"{DENIED} denied" in calls_in
            assert panel["panel-out"] == ["none"]
            assert panel["panel-agents"] == ["node-b", "node-c"]

            # No violation so far, no script error, nothing in the console about CSP.
            assert await page.evaluate("window.__csp") == []
            assert not page.events("Runtime.exceptionThrown")
            console = [e["params"]["entry"]["text"] for e in page.events("Log.entryAdded")]
            console += [
                " ".join(str(a.get("value")) for a in e["params"]["args"])
                for e in page.events("Runtime.consoleAPICalled")
            ]
            assert not [t for t in console if "Content Security Policy" in t], console
            # ...and the policy is in force: an inline script added now is refused.
            await page.evaluate(
                "const s = document.createElement('script');"
                " s.textContent = 'window.__inline = 1'; document.body.appendChild(s); 0"
            )
            await page.wait_for("window.__csp.length > 0")
            assert await page.evaluate("window.__inline === undefined")
            assert "script-src" in (await page.evaluate("window.__csp"))[0]


async def test_graph_route_parses_width_strictly_and_pages_carry_the_csp(tmp_path):
    async with five_agents(tmp_path) as agents:
        frontend, billing = agents[0], agents[4]
        await eventually(lambda: bool(frontend.endpoints.endpoints("reviews")))
        await traffic(frontend, "reviews", 3)
        base = admin_url(billing)
        async with httpx.AsyncClient() as c:
            graph = (await c.get(base + "/v1/mesh/graph")).json()
            assert graph["width"] == 1200
            wide = (await c.get(base + "/v1/mesh/graph?width=2000")).json()
            assert wide["width"] == 2000
            assert {"nodes", "edges", "overflow", "legend", "height"} <= set(wide)
            edge = next(e for e in wide["edges"] if e["source"] == "frontend")
            assert edge["destination"] == "reviews" and len(edge["points"]) == 4
            assert edge["counts"]["requests"] == 3 and edge["counts"]["success_rate"] == 1.0
            assert edge["label"] == "0.10 rps · 100.0% ok"
            node = next(n for n in wide["nodes"] if n["service"] == "reviews")
            assert node["agents"] == ["node-d"] and node["counts"]["denied"] == 0
            for box in [node["box"], edge["label_box"]]:
                assert box["x"] >= 0 and box["x"] + box["w"] <= 2000

            for query in (
                "width=abc",
                "width=479",
                "width=4001",
                "width=99999999",
                "width=+800",
                "width=800.0",
                "width=%D9%A1%D9%A2%D9%A0%D9%A0",  # Arabic-Indic digits
                "width=800&width=900",
                "width=",
                "height=800",
                "width=800&x=1&y=2&z=3&w=4",
                "x" * 300,
            ):
                r = await c.get(base + "/v1/mesh/graph?" + query)
                assert r.status_code == 400, (query, r.text)
                body = r.json()
                assert body["code"] == "invalid-graph-query" and "width=N" in body["hint"]
            r = await c.post(
                base + "/v1/mesh/graph", headers={"X-Peermesh-Request": "1"}, content=b""
            )
            assert r.status_code == 405
            assert billing.mesh_view.graph_refusals == 13

            page = await c.get(base + "/ui")
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert page.headers["content-security-policy"] == CSP
            assert "default-src 'none'" in CSP and "connect-src 'self'" in CSP
            assert 'http-equiv="Content-Security-Policy"' in page.text
            assert "<script>" not in page.text and "<style>" not in page.text
            assert " style=" not in page.text and "onclick" not in page.text
            for asset, kind in (("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")):
                r = await c.get(base + asset)
                assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
                assert r.headers["x-content-type-options"] == "nosniff"
            assert "innerHTML" not in (await c.get(base + "/ui/app.js")).text
            assert (await c.get(base + "/ui/other")).status_code == 404


async def test_a_crowded_mesh_keeps_every_label_legible_at_two_widths(tmp_path):
    """Many services and crossing edges, as a peer's stats may report them: the browser's
    real font metrics still leave every label clear of every other and of every node."""
    rng = random.Random(7)
    names = [f"svc-{i:02d}" for i in range(18)] + ["café-crème", "a-rather-long-service-name"]
    pairs = {(rng.choice(names), rng.choice(names)) for _ in range(45)}
    async with two_agents(tmp_path) as mesh:
        golden = mesh.server.observability.golden
        now = time.monotonic()
        for i, (a, b) in enumerate(sorted(pairs)):
            for n in range(1 + i % 7):
                status = (200, 200, 403, 429, 503)[(i + n) % 5]
                golden.record("inbound", a, b, status < 500, 0.001 * (n + 1), now, status)
        url = admin_url(mesh.server) + "/ui"
        async with chromium(tmp_path / "profile") as browser:
            page = await browser.new_page()
            await page.call("Runtime.enable")
            shelves = []
            for width in (800, 1400):
                shot = await open_ui(page, url, width)
                assert_legible(shot, len(pairs))
                assert shot["graph"]["width"] == shot["room"] - 32
                shelves.append(shot["shelfTitle"])
            assert not page.events("Runtime.exceptionThrown")
        # A narrow page has too little room along the edges: the strip is used, and named.
        assert shelves[0] == 1
