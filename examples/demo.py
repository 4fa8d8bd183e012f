"""``make demo``: a local mesh of real agents and services, with a live view of the traffic.

Five nodes on loopback, each an agent process beside an app process. No endpoint
is configured anywhere: the agents find each other by mDNS and agree on who is
alive (and which services each fronts) by SWIM gossip. Nobody holds a CA key: the
five agents share one bootstrap token, create the root together by a DKG and sign
every certificate with FROST (3 of 5); ``peermesh ca status`` shows the committee.
A sixth agent then joins with a join token that lives in the replicated policy.

    edge (this script's load) ─▶ frontend ─▶ orders ─▶ payments

Every arrow between services is an mTLS HTTP/2 hop between two agents. The demo
sends a steady trickle of requests, now and then one to a service that does not
exist (the sidecar answers 503 itself), and shows what went where every second.
Run as root, it then shows transparent capture (``examples/capture_demo.py``): curl and
redis-cli in a network namespace, with no proxy settings, reach services by mesh name.
Ctrl-C (or ``--duration N``) stops everything with SIGTERM, the agents drain and
exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from examples import capture_demo
from peermesh.agent.devmesh import free_port, free_port_pair

TRUST_DOMAIN = "demo.mesh"
CHAIN = [("frontend", "orders"), ("orders", "payments"), ("payments", None)]

# Piped or captured output has no terminal width: rich would assume 80 columns and cut
# the tables. Use the caller's COLUMNS, else a width the tables fit in.
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120)


@dataclass
class Node:
    name: str
    service: str
    app_port: int
    outbound: int = field(default_factory=free_port)
    inbound: int = field(default_factory=lambda: free_port_pair())  # +1: bootstrap listener
    admin: int = field(default_factory=free_port)
    gossip: int = field(default_factory=free_port)
    version: str = "v1"
    flaky: float = 0.0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"


def run_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "peermesh", *args], check=True, stdout=subprocess.DEVNULL)


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        cmd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # Ctrl-C reaches only the demo; it stops the rest in order
    )


def get_json(url: str, *, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
            try:
                return response.status, json.loads(raw or b"{}")
            except ValueError:
                return response.status, {"text": raw.decode(errors="replace")}
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"error": body.decode(errors="replace").strip(), **dict(exc.headers)}
    except OSError as exc:
        return 0, {"error": str(exc)}


def wait_ready(node: Node, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _ = get_json(node.admin_url + "/readyz")
        if status == 200:
            return
        time.sleep(0.1)
    raise SystemExit(f"agent {node.name} did not become ready; see demo-data/logs/")


def build_mesh(root: Path) -> list[Node]:
    if root.exists():
        shutil.rmtree(root)
    (root / "logs").mkdir(parents=True)
    console.print(
        f"[bold]1.[/] a bootstrap token for trust domain [cyan]{TRUST_DOMAIN}[/]: no CA key"
        " anywhere; the agents will create the root together (DKG) and sign with FROST"
    )
    run_cli("keygen", "bootstrap-token", "--out", str(root / "bootstrap.token"))
    nodes = [
        Node("node-edge", "edge", free_port()),
        Node("node-frontend", "frontend", free_port()),
        Node("node-orders", "orders", free_port()),
        Node("node-orders-v2", "orders", free_port(), version="v2"),
        Node("node-payments", "payments", free_port(), flaky=25.0),
    ]
    return nodes


def agent_command(root: Path, node: Node, *extra: str) -> list[str]:
    """``peermesh agent`` for ``node`` on loopback, plus how it gets its identity."""
    return [
        sys.executable, "-m", "peermesh", "agent",
        "--name", node.name,
        "--service", f"{node.service}={node.app_port}",
        "--data-dir", str(root / node.name),
        "--trust-domain", TRUST_DOMAIN,
        "--outbound", f"127.0.0.1:{node.outbound}",
        "--inbound", f"127.0.0.1:{node.inbound}",
        "--admin", f"127.0.0.1:{node.admin}",
        "--drain-timeout", "5",
        "--gossip", f"127.0.0.1:{node.gossip}",
        "--gossip-profile", "local",
        "--advertise", "127.0.0.1",
        *extra,
    ]  # fmt: skip


def start_mesh(root: Path, nodes: list[Node]) -> None:
    token = root / "bootstrap.token"
    console.print(f"   bootstrap token → {token} (the gossip key is derived from it)")
    console.print(
        "[bold]2.[/] starting apps and agents (one agent beside each app); no endpoint is"
        " configured: agents find each other by mDNS and agree on members by SWIM gossip"
    )
    for node in nodes:
        calls = dict(CHAIN).get(node.service)
        if node.service != "edge":
            app = [
                sys.executable, "-m", "examples.service", "--name", node.service,
                "--port", str(node.app_port), "--version", node.version,
                "--flaky", str(node.flaky),
            ]  # fmt: skip
            if calls:
                app += ["--call", calls, "--proxy", f"127.0.0.1:{node.outbound}"]
            node.procs.append(start(app, root / "logs" / f"{node.service}.log"))
        agent = agent_command(
            root, node,
            "--bootstrap-expect", str(len(nodes)),
            "--bootstrap-token-file", str(token),
            *(["--join", f"127.0.0.1:{nodes[0].inbound}"] if node is not nodes[0] else []),
            "--label", f"version={node.version}",
        )  # fmt: skip
        node.procs.append(start(agent, root / "logs" / f"{node.name}.log"))
    console.print(
        f"   threshold CA: {len(nodes)} agents meet, run a DKG (t = {len(nodes) // 2 + 1}),"
        " FROST-sign the root, then each gets its first certificate"
    )
    for node in nodes:
        wait_ready(node)
        _code, status = get_json(node.admin_url + "/v1/status")
        console.print(f"   issued [green]{status.get('identity')}[/] → {root / node.name}")
    for node in nodes:
        console.print(
            f"   {node.name:14} admin {node.admin_url}  outbound :{node.outbound}"
            f"  inbound :{node.inbound}  gossip :{node.gossip}/udp"
        )
    wait_converged(nodes)


def join_with_token(root: Path, nodes: list[Node]) -> Node:
    """A sixth agent joins the running mesh with a join token from the replicated policy."""
    issuer, edge = nodes[1], nodes[0]
    console.print(
        f"   a join token, created on {issuer.name} ([cyan]peermesh token create --service"
        " audit[/]): a JoinToken policy object holding only its SHA-256"
    )
    created = subprocess.run(
        [sys.executable, "-m", "peermesh", "token", "create", "--agent", issuer.admin_url,
         "--service", "audit", "--ttl", "10m"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    token = created.stdout.strip()
    console.print(f"   token [green]{token[:24]}…[/]; replicated, as {edge.name} sees it:")
    subprocess.run(
        [sys.executable, "-m", "peermesh", "token", "list", "--agent", edge.admin_url],
        check=False,
    )  # fmt: skip
    audit = Node("node-audit", "audit", free_port())
    # A file only the agent's user can read (the flag would show the token in argv).
    token_file = root / "audit.join-token"
    token_file.touch(mode=0o600)
    token_file.chmod(0o600)
    token_file.write_text(token + "\n")
    agent = agent_command(
        root, audit, "--join-token-file", str(token_file), "--join", f"127.0.0.1:{edge.inbound}"
    )
    audit.procs.append(start(agent, root / "logs" / f"{audit.name}.log"))
    wait_ready(audit)
    _code, status = get_json(audit.admin_url + "/v1/status")
    console.print(
        f"   {audit.name} joined with it: issued [green]{status.get('identity')}[/] by 3 of 5"
        " signers; the used-up token admits nobody else"
    )
    return audit


def wait_converged(nodes: list[Node], timeout: float = 30) -> None:
    """Until every agent sees every other alive (mDNS finds them, gossip agrees)."""
    deadline = time.monotonic() + timeout
    names = {n.name for n in nodes}
    while time.monotonic() < deadline:
        views = []
        for node in nodes:
            _, members = get_json(node.admin_url + "/v1/members")
            views.append({m["name"] for m in members.get("members", []) if m["state"] == "alive"})
        if all(view == names for view in views):
            console.print(f"   membership converged: every agent sees all {len(names)} alive")
            return
        time.sleep(0.2)
    raise SystemExit("agents did not find each other by mDNS; see demo-data/logs/")


@dataclass(frozen=True)
class Result:
    """One demo request: where it went and how it ended."""

    kind: str  # chain | direct | unknown
    status: int
    path: str
    orders_version: str | None = None


def send(edge: Node, service: str, kind: str) -> Result:
    status, body = get_json(f"http://127.0.0.1:{edge.outbound}/", headers={"Host": service})
    hops: list[str] = []
    version = None
    cursor: dict | None = body
    while isinstance(cursor, dict) and "service" in cursor:
        label = cursor["service"]
        if label == "orders":
            version = cursor.get("version")
            label = f"orders({version})"
        hops.append(label)
        cursor = cursor.get("downstream")
    if status == 200 or (hops and kind == "chain"):
        tail = "" if status == 200 else f" ✘ {status}"
        return Result(kind, status, " → ".join(["edge", *hops]) + tail, version)
    error = body.get("x-peermesh-error") or body.get("error", "")
    return Result(kind, status, f"edge → {service}: {status} {error}")


def _route(v1: int, v2: int) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": "orders",
        "spec": {
            "host": "orders",
            "http": [
                {
                    "name": "canary",
                    "route": [
                        {"destination": {"host": "orders", "subset": "v1"}, "weight": v1},
                        {"destination": {"host": "orders", "subset": "v2"}, "weight": v2},
                    ],
                }
            ],
        },
    }


SUBSETS = {
    "kind": "TrafficPolicy",
    "name": "orders",
    "spec": {
        "host": "orders",
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
        ],
    },
}
PAYMENTS_RETRIES = {
    "kind": "Route",
    "name": "payments",
    "spec": {
        "host": "payments",
        "http": [
            {
                "route": [{"destination": {"host": "payments"}}],
                "retries": {"attempts": 3, "retryOn": "5xx"},
            }
        ],
    },
}
PAYMENTS_AUTHZ = {
    "kind": "AuthorizationPolicy",
    "name": "payments-only-from-orders",
    "spec": {
        "service": "payments",
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": [f"spiffe://{TRUST_DOMAIN}/svc/orders"]}}]}],
    },
}
PHASES: list[tuple[str, str, list[dict[str, Any]]]] = [
    (
        "no policy yet",
        "orders balanced over v1+v2 (p2c-EWMA); payments fails 25% of the time; "
        "anyone may call payments",
        [],
    ),
    (
        "policy applied on node-payments",
        "canary orders 90/10; 3 retries hide payments' failures; only orders may call payments "
        "(edited on node-payments, enforced by node-frontend's and node-edge's sidecars)",
        [SUBSETS, _route(90, 10), PAYMENTS_RETRIES, PAYMENTS_AUTHZ],
    ),
    ("canary 50/50", "the canary shift, live: no connection is dropped", [_route(50, 50)]),
    ("canary 0/100", "v2 takes all orders traffic", [_route(0, 100)]),
]


def apply_phase(root: Path, node: Node, index: int) -> str:
    """``peermesh policy apply -f`` against one agent; returns what the CLI printed."""
    objects = PHASES[index][2]
    if not objects:
        return ""
    path = root / "policy" / f"phase-{index}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    out = subprocess.run(
        [sys.executable, "-m", "peermesh", "policy", "apply", "-f", str(path),
         "--agent", node.admin_url],
        capture_output=True, text=True,
    )  # fmt: skip
    return (out.stdout + out.stderr).strip()


def wait_replicated(node: Node, timeout: float = 15) -> str:
    """Wait until every peer of ``node`` holds the policy it holds; say how long it took.

    The next requests then show the new policy in effect on every sidecar, however
    slowly a busy machine replicates it.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        code, status = get_json(node.admin_url + "/v1/policy/status")
        peers = status.get("peers", []) if code == 200 else []
        if (
            peers
            and status.get("converged_with_reachable_peers")
            and all(p.get("reachable") for p in peers)
        ):
            took = time.monotonic() - started
            return f"replicated to {len(peers)} other agents in {took:.1f}s"
        time.sleep(0.1)
    return f"not yet replicated to every agent after {timeout:.0f}s"


def _short(identity: str | None) -> str:
    return (identity or "").replace(f"spiffe://{TRUST_DOMAIN}", "")


def render(
    nodes: list[Node],
    sent: int,
    last: list[Result],
    elapsed: float,
    phase: int = 0,
    applied: str = "",
) -> Group:
    table = Table(title=f"peermesh demo — {sent} requests in {elapsed:.0f}s", expand=True)
    table.add_column("node")
    table.add_column(f"identity (spiffe://{TRUST_DOMAIN}…)", no_wrap=True)
    for column in ("direction", "service", "status", "count"):
        table.add_column(column)
    for node in nodes:
        code, status = get_json(node.admin_url + "/v1/status")
        if code != 200:
            table.add_row(node.name, "[red]down[/]", "", "", "", "")
            continue
        rows = status.get("traffic", [])
        first = True
        for row in rows:
            colour = "green" if row["status"] < 400 else "red"
            table.add_row(
                node.name if first else "",
                _short(status["identity"]) if first else "",
                row["direction"],
                row["service"],
                f"[{colour}]{row['status']}[/]",
                str(row["count"]),
            )
            first = False
        if first:
            table.add_row(node.name, _short(status["identity"]), "", "", "", "")
    recent = Table(title="last requests", expand=True, show_header=False)
    recent.add_column("status")
    recent.add_column("path")
    for result in last[-6:]:
        colour = "green" if result.status == 200 else "red"
        recent.add_row(f"[{colour}]{result.status}[/]", result.path)
    chain = [r for r in last[-60:] if r.kind == "chain"]
    ok = sum(r.status == 200 for r in chain)
    versions = Counter(r.orders_version for r in chain if r.orders_version)
    total = sum(versions.values()) or 1
    direct = [r for r in last[-60:] if r.kind == "direct"][-1:]
    title, what, _ = PHASES[phase]
    summary = (
        f"[bold]phase {phase + 1}/{len(PHASES)}: {title}[/] — {what}\n"
        f"last {len(chain)} chain requests: {ok / max(len(chain), 1):.0%} succeeded; "
        f"orders v1 {versions['v1'] / total:.0%} / v2 {versions['v2'] / total:.0%}\n"
        + (f"edge → payments directly: {direct[0].path}\n" if direct else "")
        + (f"[dim]{applied}[/]\n" if applied else "")
        + "Every 10th request calls payments directly, every 10th+5 a service nobody runs."
        " Ctrl-C stops the mesh gracefully."
    )
    return Group(table, recent, Panel(summary, title="what you see"))


def show_observability(nodes: list[Node]) -> None:
    """Where to look while the mesh runs, and a few frames of ``peermesh top``."""
    edge = nodes[0]
    console.print(
        "[bold]5.[/] observability: every agent serves Prometheus metrics and a dashboard"
    )
    for node in nodes:
        console.print(f"   {node.name:15} {node.admin_url}/metrics   {node.admin_url}/ui")
    console.print("   [cyan]peermesh top[/] (golden metrics merged from every agent over mTLS):")
    subprocess.run(
        [sys.executable, "-m", "peermesh", "top", "--agent", edge.admin_url,
         "--iterations", "3", "--interval", "1"],
        check=False, env={**os.environ, "COLUMNS": str(console.width)},
    )  # fmt: skip


def stop_mesh(nodes: list[Node]) -> list[tuple[str, int | None]]:
    exits: list[tuple[str, int | None]] = []
    for node in nodes:
        for proc in node.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    for node in nodes:
        for proc in node.procs:
            try:
                what = " ".join(str(a) for a in list(proc.args)[2:4])  # type: ignore[arg-type]
                exits.append((f"{what} ({node.name})", proc.wait(timeout=15)))
            except subprocess.TimeoutExpired:
                proc.kill()
                exits.append((node.name, None))
    return exits


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a local peermesh and watch it work.")
    parser.add_argument("--duration", type=float, default=0, help="stop after N seconds")
    parser.add_argument("--rate", type=float, default=5, help="requests per second")
    parser.add_argument("--dir", default="demo-data", help="where certificates and logs go")
    parser.add_argument(
        "--phase-seconds", type=float, default=8, help="how long each policy phase lasts"
    )
    args = parser.parse_args()
    root = Path(args.dir).resolve()
    nodes = build_mesh(root)
    interrupted = False
    try:
        start_mesh(root, nodes)
        edge = nodes[0]
        console.print("[bold]3.[/] the mesh as node-edge sees it ([cyan]peermesh members[/]):")
        subprocess.run(
            [sys.executable, "-m", "peermesh", "members", "--agent", edge.admin_url], check=False
        )
        console.print("   the threshold CA ([cyan]peermesh ca status[/]):")
        subprocess.run(
            [sys.executable, "-m", "peermesh", "ca", "status", "--agent", edge.admin_url],
            check=False,
        )
        nodes.append(join_with_token(root, nodes))
        wait_converged(nodes)
        console.print("   control RPC over the same mTLS connections:")
        subprocess.run(
            [sys.executable, "-m", "peermesh", "ping", "--agent", edge.admin_url,
             f"127.0.0.1:{nodes[2].inbound}"],
            check=False,
        )  # fmt: skip
        console.print("[bold]4.[/] traffic (Ctrl-C to stop); policy changes every few seconds")
        started = time.monotonic()
        sent = 0
        last: list[Result] = []
        next_refresh = 0.0
        phase, applied = 0, ""
        direct_next = False
        payments = next(n for n in nodes if n.service == "payments")
        with Live(render(nodes, 0, last, 0), console=console, refresh_per_second=2) as live:
            while not args.duration or time.monotonic() - started < args.duration:
                now = time.monotonic()
                due = min(int((now - started) // args.phase_seconds), len(PHASES) - 1)
                while phase < due:
                    phase += 1
                    applied = apply_phase(root, payments, phase)
                    if applied:
                        applied += "\n" + wait_replicated(payments)
                    console.log(f"phase {phase + 1}: {PHASES[phase][0]}\n{applied}")
                    # Show at once what a new authorization does to a direct call.
                    direct_next = True
                if sent % 10 == 9 or direct_next:
                    direct_next = False
                    last.append(send(edge, "payments", "direct"))
                elif sent % 10 == 4:
                    last.append(send(edge, "inventory", "unknown"))
                else:
                    last.append(send(edge, "frontend", "chain"))
                sent += 1
                if now >= next_refresh:
                    live.update(render(nodes, sent, last, now - started, phase, applied))
                    next_refresh = now + 1
                time.sleep(1 / args.rate)
            live.update(render(nodes, sent, last, time.monotonic() - started, phase, applied))
        # The panel's last border apart from the next heading; off a terminal, Live leaves
        # its last frame without the final newline.
        console.line(1 if console.is_terminal else 2)
        show_observability(nodes)
        console.print(
            "\n[bold]6.[/] transparent capture: an unmodified app in a network namespace"
            " reaches services by mesh name"
        )
        capture_demo.run(root / "capture", console.print, start)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        console.print("\n[bold]7.[/] stopping: SIGTERM → agents drain and exit")
        for name, code in stop_mesh(nodes):
            mark = "[green]✔[/]" if code == 0 else f"[yellow]exit {code}[/]"
            console.print(f"   {mark} {name}")
    console.print(f"logs and certificates are in {root}")
    if interrupted:
        sys.exit(0)


if __name__ == "__main__":
    main()
