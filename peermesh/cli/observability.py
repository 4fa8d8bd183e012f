"""``peermesh top``, ``tap`` and ``check``: the mesh from one node.

All three talk only to the local agent's admin API; the agent fans out to its peers
over mTLS (``/v1/mesh/stats``, ``/v1/mesh/tap``, ``/v1/mesh/check``).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from peermesh.cli.admin import admin_call, agent_option


def _fmt(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def _rps(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def render_stats(data: dict[str, Any]) -> Group:
    """The ``top`` frame: a services table and an edges table.

    SUCCESS is non-5xx (Linkerd's definition); DENIED (403) and LIMITED (429) count the
    policy's refusals apart, so they show even while the success rate is 100%.
    """
    services = Table(title="services (last 30s)", expand=False)
    columns = ("SERVICE", "RPS", "SUCCESS", "DENIED", "LIMITED", "P50 ms", "P95 ms", "P99 ms",
               "REQUESTS")  # fmt: skip
    for column in columns:
        services.add_column(column, justify="left" if column == "SERVICE" else "right")
    for s in data.get("services", []):
        services.add_row(
            s["service"], _rps(s["rps"]), _pct(s["success_rate"]), str(s.get("denied", 0)),
            str(s.get("limited", 0)), _fmt(s["p50_ms"]), _fmt(s["p95_ms"]), _fmt(s["p99_ms"]),
            str(s["requests"]),
        )  # fmt: skip
    edges = Table(title="edges", expand=False)
    for column in ("FROM", "TO", "RPS", "SUCCESS", "DENIED", "LIMITED", "P50 ms", "P99 ms"):
        edges.add_column(column, justify="left" if column in ("FROM", "TO") else "right")
    for e in data.get("edges", []):
        edges.add_row(
            e["source"], e["destination"], _rps(e["rps"]), _pct(e["success_rate"]),
            str(e.get("denied", 0)), str(e.get("limited", 0)), _fmt(e["p50_ms"]),
            _fmt(e["p99_ms"]),
        )  # fmt: skip
    nodes = ", ".join(data.get("nodes", []))
    footer = Text(f"from {data.get('node')} · nodes: {nodes}", style="dim")
    parts: list[Any] = [services, edges, footer]
    for err in data.get("errors", []):
        parts.append(Text(f"unreachable {err['peer']}: {err['error']}", style="red"))
    return Group(*parts)


def fetch_stats(agent_url: str) -> dict[str, Any]:
    code, data = admin_call(agent_url, "/v1/mesh/stats")
    if code != 200 or not isinstance(data, dict):
        raise click.ClickException(f"/v1/mesh/stats answered {code}: {data}")
    return data


@click.command()
@agent_option
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option("--iterations", type=int, default=0, help="Stop after N frames (0: forever).")
@click.option("--interval", type=float, default=1.0, show_default=True)
def top(agent_url: str, once: bool, iterations: int, interval: float) -> None:
    """Live services and edges across the mesh: RPS, success rate, latency."""
    console = Console()
    if once:
        console.print(render_stats(fetch_stats(agent_url)))
        return
    frames = 0
    with Live(render_stats(fetch_stats(agent_url)), console=console, screen=False) as live:
        frames = 1
        try:
            while not iterations or frames < iterations:
                time.sleep(interval)
                live.update(render_stats(fetch_stats(agent_url)))
                frames += 1
        except KeyboardInterrupt:
            pass


@click.command()
@agent_option
@click.argument("service")
@click.option("--path", "path_prefix", help="Only requests whose path starts with this.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--iterations", type=int, default=0, help="Stop after N polls (0: forever).")
@click.option("--interval", type=float, default=1.0, show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def tap(
    agent_url: str,
    service: str,
    path_prefix: str | None,
    limit: int,
    iterations: int,
    interval: float,
    output: str,
) -> None:
    """Stream summaries of live requests to or from SERVICE (bounded, sampled)."""
    query = {"service": service, "limit": str(limit)}
    if path_prefix:
        query["path"] = path_prefix
    url = "/v1/mesh/tap?" + urllib.parse.urlencode(query)
    seen: set[tuple[str, str, str, str]] = set()
    polls = 0
    try:
        while not iterations or polls < iterations:
            code, data = admin_call(agent_url, url)
            if code != 200 or not isinstance(data, dict):
                raise click.ClickException(f"/v1/mesh/tap answered {code}: {data}")
            for r in data.get("requests", []):
                key = (r["node"], r["direction"], r["request_id"], r["time"])
                if key in seen:
                    continue
                seen.add(key)
                if output == "json":
                    click.echo(json.dumps(r))
                else:
                    click.echo(
                        f"{r['time']} {r['node']:<10} {r['direction']:<8} "
                        f"{r['source']} -> {r['destination']} {r['method']} {r['path']} "
                        f"{r['status']} {r['duration_ms']}ms trace={r['trace_id']}"
                    )
            polls += 1
            if not iterations or polls < iterations:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


@click.command()
@agent_option
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def check(agent_url: str, output: str) -> None:
    """Diagnose this agent and its view of the mesh; exit 1 if anything fails."""
    try:
        code, data = admin_call(agent_url, "/v1/mesh/check")
    except click.ClickException as exc:
        if output == "json":
            failed = {"name": "agent up", "ok": False, "detail": exc.message}
            click.echo(json.dumps({"ok": False, "checks": [failed]}))
        else:
            click.echo(f"✘ agent up: {exc.message}")
            click.echo("    → start it with 'peermesh agent ...' or pass --agent URL")
        sys.exit(1)
    if code != 200 or not isinstance(data, dict):
        click.echo(f"✘ agent up: /v1/mesh/check answered {code}")
        sys.exit(1)
    up = {"name": "agent up", "ok": True, "detail": agent_url, "fix": ""}
    checks = [up, *data["checks"]]
    ok = all(c["ok"] for c in checks)
    if output == "json":
        click.echo(json.dumps({"ok": ok, "checks": checks}, indent=2))
    else:
        for c in checks:
            mark = "✔" if c["ok"] else "✘"
            click.echo(f"{mark} {c['name']}: {c['detail']}")
            if not c["ok"] and c.get("fix"):
                click.echo(f"    → {c['fix']}")
        click.echo("all checks passed" if ok else "some checks FAILED")
    sys.exit(0 if ok else 1)


COMMANDS: tuple[click.Command, ...] = (top, tap, check)
