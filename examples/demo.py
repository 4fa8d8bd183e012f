"""``make demo``: a local mesh of real agents and services, with a live view of the traffic.

Four nodes on loopback, each an agent process beside an app process. No endpoint
is configured anywhere: the agents find each other by mDNS and agree on who is
alive (and which services each fronts) by SWIM gossip.

    edge (this script's load) ─▶ frontend ─▶ orders ─▶ payments

Every arrow between services is an mTLS HTTP/2 hop between two agents. The demo
sends a steady trickle of requests, now and then one to a service that does not
exist (the sidecar answers 503 itself), and shows what went where every second.
Ctrl-C (or ``--duration N``) stops everything with SIGTERM, the agents drain and
exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

TRUST_DOMAIN = "demo.mesh"
CHAIN = [("frontend", "orders"), ("orders", "payments"), ("payments", None)]

console = Console()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    name: str
    service: str
    app_port: int
    outbound: int = field(default_factory=free_port)
    inbound: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)
    gossip: int = field(default_factory=free_port)
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
    console.print(f"[bold]1.[/] development root CA for trust domain [cyan]{TRUST_DOMAIN}[/]")
    run_cli("dev-ca", "init", "--dir", str(root / "ca"), "--trust-domain", TRUST_DOMAIN)
    nodes = [
        Node("node-edge", "edge", free_port()),
        Node("node-frontend", "frontend", free_port()),
        Node("node-orders", "orders", free_port()),
        Node("node-payments", "payments", free_port()),
    ]
    for node in nodes:
        run_cli(
            "dev-ca", "issue", "--ca-dir", str(root / "ca"), "--node", node.name,
            "--service", node.service, "--data-dir", str(root / node.name),
        )  # fmt: skip
        console.print(
            f"   issued [green]spiffe://{TRUST_DOMAIN}/svc/{node.service}[/] → {root / node.name}"
        )
    return nodes


def start_mesh(root: Path, nodes: list[Node]) -> None:
    key = root / "gossip.key"
    run_cli("keygen", "gossip", "--out", str(key))
    console.print(f"   gossip key (AES-256-GCM keyring) → {key}")
    console.print(
        "[bold]2.[/] starting apps and agents (one agent beside each app); no endpoint is"
        " configured: agents find each other by mDNS and agree on members by SWIM gossip"
    )
    for node in nodes:
        calls = dict(CHAIN).get(node.service)
        if node.service != "edge":
            app = [
                sys.executable, "-m", "examples.service", "--name", node.service,
                "--port", str(node.app_port),
            ]  # fmt: skip
            if calls:
                app += ["--call", calls, "--proxy", f"127.0.0.1:{node.outbound}"]
            node.procs.append(start(app, root / "logs" / f"{node.service}.log"))
        agent = [
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
            "--gossip-key-file", str(key),
            "--gossip-profile", "local",
            "--advertise", "127.0.0.1",
            "--label", "version=v1",
        ]  # fmt: skip
        node.procs.append(start(agent, root / "logs" / f"{node.name}.log"))
    for node in nodes:
        wait_ready(node)
        console.print(
            f"   {node.name:14} admin {node.admin_url}  outbound :{node.outbound}"
            f"  inbound :{node.inbound}  gossip :{node.gossip}/udp"
        )
    wait_converged(nodes)


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
            console.print("   membership converged: every agent sees all four alive")
            return
        time.sleep(0.2)
    raise SystemExit("agents did not find each other by mDNS; see demo-data/logs/")


def send(edge: Node, service: str) -> tuple[int, str]:
    status, body = get_json(f"http://127.0.0.1:{edge.outbound}/", headers={"Host": service})
    if status == 200:
        hops = []
        cursor: dict | None = body
        while isinstance(cursor, dict) and "service" in cursor:
            hops.append(cursor["service"])
            cursor = cursor.get("downstream")
        return status, " → ".join(["edge", *hops])
    error = body.get("x-peermesh-error") or body.get("error", "")
    return status, f"edge → {service}: {error}"


def _short(identity: str | None) -> str:
    return (identity or "").replace(f"spiffe://{TRUST_DOMAIN}", "")


def render(nodes: list[Node], sent: int, last: list[tuple[int, str]], elapsed: float) -> Group:
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
    for code, path in last[-5:]:
        colour = "green" if code == 200 else "red"
        recent.add_row(f"[{colour}]{code}[/]", path)
    hint = Panel(
        "Each hop is mTLS HTTP/2 between agents; identities are SPIFFE IDs from the dev CA.\n"
        "Every 10th request asks for 'inventory', which no one serves: the sidecar answers 503.\n"
        "Ctrl-C stops the mesh gracefully.",
        title="what you see",
    )
    return Group(table, recent, hint)


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
        console.print("   control RPC over the same mTLS connections:")
        subprocess.run(
            [sys.executable, "-m", "peermesh", "ping", "--agent", edge.admin_url,
             f"127.0.0.1:{nodes[2].inbound}"],
            check=False,
        )  # fmt: skip
        console.print("[bold]4.[/] traffic (Ctrl-C to stop)")
        started = time.monotonic()
        sent = 0
        last: list[tuple[int, str]] = []
        next_refresh = 0.0
        with Live(render(nodes, 0, last, 0), console=console, refresh_per_second=2) as live:
            while not args.duration or time.monotonic() - started < args.duration:
                target = "inventory" if sent % 10 == 9 else "frontend"
                last.append(send(edge, target))
                sent += 1
                now = time.monotonic()
                if now >= next_refresh:
                    live.update(render(nodes, sent, last, now - started))
                    next_refresh = now + 1
                time.sleep(1 / args.rate)
            live.update(render(nodes, sent, last, time.monotonic() - started))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        console.print("\n[bold]5.[/] stopping: SIGTERM → agents drain and exit")
        for name, code in stop_mesh(nodes):
            mark = "[green]✔[/]" if code == 0 else f"[yellow]exit {code}[/]"
            console.print(f"   {mark} {name}")
    console.print(f"logs and certificates are in {root}")
    if interrupted:
        sys.exit(0)


if __name__ == "__main__":
    main()
