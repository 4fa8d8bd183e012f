"""The demo's capture step: an unmodified app in a network namespace reaches the mesh by name.

Two namespaces on a bridge of their own (``chaos.netns``): the app host runs an agent with
mesh DNS and the ``peermesh capture`` nftables table, the service host runs orders and a
cache (redis when installed, else a TCP echo) behind their agents. curl and redis-cli run
as an ordinary user with an empty environment, so no proxy setting helps them: the name
``orders.mesh`` resolves to a VIP through the capture's DNS redirect, the connection to it
is redirected to the agent, and it crosses to the other namespace over mTLS. The hosts
have a development CA of their own. Everything it makes (namespaces, the nft table inside
one, the resolver file, processes) is removed on every way out, Ctrl-C included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from chaos.netns import Host, Lab

PREFIX = "pmdemo"
TRUST_DOMAIN = "capture.demo"
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
TOOLS = ("ip", "nft", "curl", "setpriv")
#: An address nobody serves: every name the app resolves is answered by the agent.
RESOLVER = "10.77.0.254"
#: A plain TCP echo for when redis is not installed.
ECHO = r"""
import socketserver
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("127.0.0.1", 6379), Echo).serve_forever()
"""
ECHO_CLIENT = r"""
import socket
sock = socket.create_connection(("cache.mesh", 6379), timeout=10)
sock.sendall(b"hello through the mesh\n")
print(sock.makefile().readline().strip())
"""


#: Where root's tools live, also when the demo was started with a user's PATH.
SYSTEM_BIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def _system_path() -> str:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join([*parts, *(d for d in SYSTEM_BIN if d not in parts)])


def unavailable() -> str | None:
    """Why the step cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and nftables): run `sudo make demo` to see it"
    missing = [tool for tool in TOOLS if shutil.which(tool, path=_system_path()) is None]
    if missing:
        return f"needs {', '.join(missing)} installed"
    return None


def _ready(host: Host, admin: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = host.command("curl", "-sf", "--max-time", "1", f"127.0.0.1:{admin}/readyz")
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"the agent in namespace {host.netns} did not become ready")


def _as_app(host: Host, *args: str) -> list[str]:
    return host.command("env", "-i", "PATH=/usr/bin:/bin", *NOBODY, *args)


@contextmanager
def _lab(work: Path) -> Iterator[tuple[Host, Host]]:
    lab = Lab(prefix=PREFIX)
    resolv = Path("/etc/netns") / f"{PREFIX}-h1"
    try:
        app, service = lab.up(2)
        resolv.mkdir(parents=True, exist_ok=True)
        (resolv / "resolv.conf").write_text(f"nameserver {RESOLVER}\n")
        subprocess.run(app.command("ip", "route", "add", "default", "dev", "eth0"), check=True)
        yield app, service
    finally:
        lab.down()  # kills what runs inside and deletes the namespaces (and the nft table)
        shutil.rmtree(resolv, ignore_errors=True)


def run(
    work: Path,
    say: Callable[[str], None],
    start: Callable[[list[str], Path], subprocess.Popen[bytes]],
) -> None:
    """The whole step; ``say`` prints a line, ``start`` starts a logged process."""
    why = unavailable()
    if why is not None:
        say(f"   capture step skipped: {why}")
        return
    os.environ["PATH"] = _system_path()  # ip, nft and the rest, for every child too
    if work.exists():
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    py = sys.executable
    redis = shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None
    subprocess.run(
        [py, "-m", "peermesh", "dev-ca", "init", "--dir", str(work / "ca"),
         "--trust-domain", TRUST_DOMAIN],
        check=True, capture_output=True,
    )  # fmt: skip
    nodes = {"node-app": "frontend", "node-orders": "orders", "node-cache": "cache"}
    for node, svc in nodes.items():
        subprocess.run(
            [py, "-m", "peermesh", "dev-ca", "issue", "--ca-dir", str(work / "ca"),
             "--node", node, "--service", svc, "--data-dir", str(work / node)],
            check=True, capture_output=True,
        )  # fmt: skip
    with _lab(work) as (app, service), ExitStack() as procs:

        def spawn(host: Host, name: str, args: list[str]) -> None:
            proc = start(host.command(*args), work / "logs" / f"{name}.log")
            procs.callback(_stop, proc)

        def agent(host: Host, node: str, svc: str, ports: tuple[int, ...], *extra: str) -> None:
            inbound, admin, outbound = ports
            spawn(host, node, [
                py, "-m", "peermesh", "agent", "--name", node, "--service", svc,
                "--data-dir", str(work / node), "--trust-domain", TRUST_DOMAIN,
                "--inbound", f"{host.address}:{inbound}", "--admin", f"127.0.0.1:{admin}",
                "--outbound", f"localhost:{outbound}", "--gossip", "off",
                "--log-level", "warning", *extra,
            ])  # fmt: skip

        say(
            f"   namespaces {app.netns} (the app, {app.address}) and {service.netns}"
            f" (orders, cache: {service.address}), an agent per service"
        )
        spawn(service, "orders-app", [py, "-m", "examples.service", "--name", "orders",
                                      "--port", "8080"])  # fmt: skip
        if redis:
            spawn(service, "redis", ["redis-server", "--port", "6379", "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no"])  # fmt: skip
        else:
            spawn(service, "echo", [py, "-c", ECHO])
        agent(service, "node-orders", "orders=8080", (15443, 15000, 15001))
        agent(service, "node-cache", "cache=6379", (15543, 15100, 15101))
        agent(
            app, "node-app", "frontend=8080", (15443, 15000, 15001),
            "--peer", f"orders={service.address}:15443",
            "--peer", f"cache={service.address}:15543",
            "--dns", "127.0.0.1:15053", "--dns-upstream", f"{RESOLVER}:53",
        )  # fmt: skip
        for host, admin in ((service, 15000), (service, 15100), (app, 15000)):
            _ready(host, admin)
        subprocess.run(app.command(
            py, "-m", "peermesh", "capture", "install", "--agent-user", "0",
            "--mesh-cidr", "10.77.0.0/24",
        ), check=True, capture_output=True)  # fmt: skip
        say(
            f"   [cyan]peermesh capture install[/] in {app.netns}: an nft table sends DNS to"
            " the agent, TCP to VIPs to its outbound"
        )
        _show_http(app, say)
        _show_tcp(app, say, redis)
    say("   namespaces, the nft table and their processes are gone")


def _show_http(app: Host, say: Callable[[str], None]) -> None:
    say("   [cyan]curl http://orders.mesh/[/] (no proxy settings, an ordinary user):")
    done = subprocess.run(
        _as_app(app, "curl", "-sS", "--max-time", "10", "http://orders.mesh/"),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    try:
        body = json.loads(done.stdout)
    except ValueError:
        say(f"   [red]curl failed[/]: {(done.stderr or done.stdout).strip()}")
        return
    say(
        f"   capture → orders answered (version {body.get('version')}), seeing the caller"
        f" as {str(body.get('caller', '')).rsplit('URI=', 1)[-1]} over mTLS"
    )


def _show_tcp(app: Host, say: Callable[[str], None], redis: bool) -> None:
    if redis:
        say("   [cyan]redis-cli -h cache.mesh SET demo hello; GET demo[/] (TCP, tunnelled):")
        outputs = []
        for words in (("SET", "demo", "hello"), ("GET", "demo")):
            done = subprocess.run(
                _as_app(app, "redis-cli", "-h", "cache.mesh", "-p", "6379", *words),
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            outputs.append((done.stdout or done.stderr).strip())
        say(f"   redis answered {outputs[0]} then {outputs[1]!r} across the mesh")
    else:
        say("   a TCP echo on cache.mesh:6379 (redis is not installed), tunnelled:")
        done = subprocess.run(
            _as_app(app, sys.executable, "-c", ECHO_CLIENT),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        say(f"   the echo answered {(done.stdout or done.stderr).strip()!r} across the mesh")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
