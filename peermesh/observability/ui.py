"""The ``/ui`` page: an HTML shell, its style sheet and its script, each its own route.

The page draws ``/v1/mesh/graph`` (laid out on the agent for the width the browser
reports) and nothing else. Service names reach it from every peer's stats, so they are
hostile input: the script builds every node with ``textContent`` and ``setAttribute``,
and the Content-Security-Policy allows only this origin's script and style (no inline
code at all), so even a slip would not run. The policy travels as a response header and
again in a ``<meta>`` element (without ``frame-ancestors``, which browsers ignore there).
"""

from __future__ import annotations

from typing import Final

from peermesh.observability.ui_layout import MAX_WIDTH, MIN_WIDTH
from peermesh.observability.ui_script import SCRIPT

SCRIPT_PATH: Final = "/ui/app.js"
STYLE_PATH: Final = "/ui/app.css"
REFRESH_MS: Final = 2000

_POLICY = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
)
#: The response header's policy; the ``<meta>`` copy is the same less ``frame-ancestors``.
CSP: Final = "; ".join((*_POLICY, "frame-ancestors 'none'"))
CSP_META: Final = "; ".join(_POLICY)

#: Headers every ``/ui`` response carries.
HEADERS: Final = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)

PAGE_HTML: Final = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP_META}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>peermesh</title>
<link rel="stylesheet" href="{STYLE_PATH}">
<script src="{SCRIPT_PATH}" defer></script>
</head>
<body data-min-width="{MIN_WIDTH}" data-max-width="{MAX_WIDTH}" data-refresh-ms="{REFRESH_MS}">
<header><h1>peermesh</h1><div id="meta">loading&hellip;</div></header>
<svg id="graph" xmlns="http://www.w3.org/2000/svg" role="img"
 aria-label="services and the calls between them"></svg>
<p id="overflow" hidden></p>
<section id="panel" hidden aria-live="polite">
<h2><span id="panel-title"></span> <button id="panel-close" type="button">close</button></h2>
<div class="columns">
<div><h3>calls in</h3><ul id="panel-in"></ul></div>
<div><h3>calls out</h3><ul id="panel-out"></ul></div>
<div><h3>agents</h3><ul id="panel-agents"></ul></div>
</div></section>
<section id="legend-box"><h2>legend</h2><ul id="legend"></ul></section>
<table id="services"><thead><tr><th>service</th><th>agents</th><th>requests</th>
<th>RPS</th><th>success</th><th>5xx</th><th>denied</th><th>limited</th>
<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr></thead><tbody></tbody></table>
</body></html>
"""

MONO = 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", monospace'

STYLE_CSS: Final = f"""html{{scrollbar-gutter:stable}}
body{{font-family:system-ui,sans-serif;margin:0;padding:12px 16px;background:#fafafa;
color:#222}}
h1{{font-size:20px;margin:0 0 4px}}
h2{{font-size:15px;margin:14px 0 6px}}
h3{{font-size:13px;margin:6px 0 4px;color:#555}}
#meta,#overflow{{color:#555;font-size:13px;margin:0 0 8px}}
#graph{{display:block;background:#fff;outline:1px solid #ddd}}
.edge path{{fill:none;stroke:#9aa0a6;stroke-width:1.5;marker-end:url(#arrow)}}
.edge.refused path{{stroke:#e8837c}}
#arrow path{{fill:#9aa0a6}}
.node{{cursor:pointer}}
.node rect{{fill:#e8f0fe;stroke:#1a73e8;stroke-width:2}}
.node.unhealthy rect{{fill:#fde8e8;stroke:#d93025}}
.node.selected rect{{stroke-width:4}}
.node text{{text-anchor:middle;font-family:{MONO};fill:#222}}
.node .name{{font-size:13px}}
.node .detail,.node .refused{{font-size:10px;fill:#444}}
.node .refused,.label.refused text{{fill:#b3261e}}
.label rect{{fill:#fff;fill-opacity:.92;stroke:#dadce0}}
.label.refused rect{{stroke:#e8837c}}
.label text,.shelf-title{{font-size:11px;font-family:{MONO};fill:#333}}
.shelf-title{{fill:#777}}
#panel{{background:#fff;border:1px solid #ddd;padding:4px 12px 8px;margin-top:10px}}
#panel .columns{{display:flex;gap:32px;flex-wrap:wrap}}
#panel ul,#legend{{margin:0;padding-left:18px;font-size:13px}}
#panel li{{font-family:{MONO};font-size:12px}}
#legend{{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:4px 20px}}
.swatch{{display:inline-block;width:14px;height:10px;margin-right:6px;
border:2px solid #1a73e8;background:#e8f0fe;vertical-align:middle}}
.swatch.unhealthy{{border-color:#d93025;background:#fde8e8}}
.swatch.refused,.swatch.denied,.swatch.limited,.swatch.s5xx{{border-color:#e8837c;
background:#fff}}
.swatch.edge{{border:0;border-top:2px solid #9aa0a6;height:0;background:none}}
.swatch.shelf{{border:1px solid #dadce0;background:#fff}}
table{{border-collapse:collapse;margin-top:12px;background:#fff}}
td,th{{border:1px solid #ddd;padding:4px 10px;font-size:13px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}
tbody tr{{cursor:pointer}}
td.refused{{color:#b3261e;font-weight:600}}
"""

__all__ = ["CSP", "HEADERS", "PAGE_HTML", "SCRIPT", "SCRIPT_PATH", "STYLE_CSS", "STYLE_PATH"]
