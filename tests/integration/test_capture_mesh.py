"""An unmodified app reaches a mesh service by name: capture, mesh DNS and two agents.

The client namespace has no proxy settings at all: curl (run as an ordinary user) asks the
namespace's resolver for ``orders.mesh``, the capture table hands that query to the agent's
mesh DNS, the VIP it gets back is redirected to the outbound listener, and the agent carries
the request over mTLS to the orders agent in the other namespace.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from chaos.netns import Host, Lab
from tests.support.meshkit import process
from tests.support.pki import TRUST_DOMAIN, make_mesh_pki
from tests.support.root import NEEDS_ROOT

MISSING_TOOLS = shutil.which("nft") is None or shutil.which("setpriv") is None

pytestmark = [
    *NEEDS_ROOT,
    pytest.mark.skipif(MISSING_TOOLS, reason="needs nft (nftables) and setpriv (util-linux)"),
]

NODES = {"node-a": "frontend", "node-b": "orders", "node-c": "cache"}
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
#: Only frontend may reach the cache's redis port.
CACHE_ALLOW_FRONTEND = {
    "kind": "AuthorizationPolicy",
    "name": "cache-allow-frontend",
    "spec": {
        "service": "cache",
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"principals": [f"spiffe://{TRUST_DOMAIN}/svc/frontend"]}}],
                "to": [{"operation": {"ports": [6379]}}],
            }
        ],
    },
}


def wait_admin(host: Host, url: str = "127.0.0.1:15000/readyz") -> None:
    """Start-up (not a timing assertion): poll the agent's /readyz (or ``url``) until it answers."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = subprocess.run(
            host.command("curl", "-sf", "--max-time", "1", url), capture_output=True
        )
        if done.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} in {host.netns} never became ready")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, Host, Host]]:
    """frontend (h1) and orders (h2) run unmodified clients under capture; cache (h3) is redis."""
    dirs = make_mesh_pki(tmp_path_factory.mktemp("capture-mesh"), nodes=NODES)
    lab = Lab(prefix="pmcap")
    client, server, cache = lab.up(3)
    resolvs = []
    for host in (client, server):
        # The resolver: an address nobody serves, so every answer below is the agent's.
        resolv = Path("/etc/netns") / host.netns
        resolv.mkdir(parents=True, exist_ok=True)
        (resolv / "resolv.conf").write_text("nameserver 10.77.0.254\n")
        resolvs.append(resolv)
        subprocess.run(
            ["ip", "-n", host.netns, "route", "add", "default", "dev", "eth0"], check=True
        )
    dns = ("--dns", "127.0.0.1:15053", "--dns-bare-names", "--dns-upstream", "10.77.0.254:53")
    to_cache = ("--peer", f"cache={cache.address}:15443")
    try:
        with ExitStack() as stack:
            stack.enter_context(process(server.command(
                sys.executable, "-m", "examples.service", "--name", "orders", "--port", "8080",
            )))  # fmt: skip
            stack.enter_context(process(cache.command(
                "redis-server", "--port", "6379", "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no",
            ), stdout=subprocess.DEVNULL))  # fmt: skip
            for host, node, service, extra in (
                (cache, "node-c", "cache=6379", ()),
                (server, "node-b", "orders=8080", (*dns, *to_cache)),
                (client, "node-a", "frontend=8080", (
                    "--peer", f"orders={server.address}:15443", *to_cache, *dns,
                )),
            ):  # fmt: skip
                stack.enter_context(process(host.command(
                    sys.executable, "-m", "peermesh", "agent", "--name", node,
                    "--service", service, "--data-dir", str(dirs[node]),
                    "--trust-domain", TRUST_DOMAIN, "--inbound", f"{host.address}:15443",
                    "--gossip", "off", "--log-level", "warning", *extra,
                )))  # fmt: skip
            for host in (cache, server, client):
                wait_admin(host)
            for host in (client, server):
                subprocess.run(host.command(
                    sys.executable, "-m", "peermesh", "capture", "install", "--agent-user", "0",
                    "--mesh-cidr", "10.77.0.0/24",
                ), check=True, capture_output=True)  # fmt: skip
            policy = json.dumps({"objects": [CACHE_ALLOW_FRONTEND]})
            subprocess.run(cache.command(
                "curl", "-sf", "-X", "PUT", "-H", "X-Peermesh-Request: 1", "--data-binary", policy,
                "127.0.0.1:15000/v1/policy",
            ), check=True, capture_output=True)  # fmt: skip
            yield client, server, cache
    finally:
        lab.down()
        for resolv in resolvs:
            shutil.rmtree(resolv, ignore_errors=True)


def as_app(host: Host, *args: str) -> list[str]:
    """``args`` as an ordinary user with an empty environment: no proxy settings at all."""
    return host.command("env", "-i", "PATH=/usr/bin:/bin", *NOBODY, *args)


def curl(host: Host, url: str) -> dict[str, object]:
    done = subprocess.run(
        as_app(host, "curl", "-sS", "--max-time", "10", url), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_unmodified_client_reaches_orders_by_name_through_both_agents(mesh):
    client, server, _cache = mesh
    caller = f"URI=spiffe://{TRUST_DOMAIN}/svc/frontend"
    for url in ("http://orders.mesh/", "http://orders:8080/", f"http://{server.address}:8080/"):
        body = curl(client, url)
        assert body["service"] == "orders", url
        assert str(body["caller"]).endswith(caller), (url, body)  # it came over mTLS
    # The agent's own connection to the orders agent was not captured (or it would loop).
    metrics = subprocess.run(
        client.command("curl", "-s", "127.0.0.1:15000/metrics"), capture_output=True, text=True
    ).stdout
    assert 'peermesh_dns_queries_total{outcome="answered"}' in metrics


#: A minimal pipelined RESP client (the stdlib only): every SET, then every GET, by name.
REDIS_CLIENT = r"""
import socket, sys
host, keys = sys.argv[1], int(sys.argv[2])
sock = socket.create_connection((host, 6379), timeout=60)
reader = sock.makefile("rb")
def command(*words):
    out = b"*%d\r\n" % len(words)
    for w in words:
        w = w.encode()
        out += b"$%d\r\n%s\r\n" % (len(w), w)
    return out
def reply():
    line = reader.readline()
    if line[:1] == b"$":
        data = reader.read(int(line[1:]) + 2)
        return data[:-2].decode()
    return line.strip().decode()
sock.sendall(b"".join(command("SET", f"key:{i}", f"value-{i}") for i in range(keys)))
assert all(reply() == "+OK" for _ in range(keys)), "a SET failed"
sock.sendall(b"".join(command("GET", f"key:{i}") for i in range(keys)))
bad = [i for i in range(keys) if reply() != f"value-{i}"]
print(f"ok {keys} keys" if not bad else f"bad values for {len(bad)} keys")
"""


def test_redis_through_the_mesh_and_the_port_policy(mesh):
    client, server, _cache = mesh
    done = subprocess.run(
        as_app(client, sys.executable, "-c", REDIS_CLIENT, "cache.mesh", "10000"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.stdout.strip() == "ok 10000 keys", done.stderr
    # redis-cli itself, by bare name, one round trip.
    pong = subprocess.run(
        as_app(client, "redis-cli", "-h", "cache", "-p", "6379", "PING"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert pong.stdout.strip() == "PONG", pong.stderr

    # orders is another identity: the cache's policy lets only frontend reach port 6379.
    denied = subprocess.run(
        as_app(server, "redis-cli", "-h", "cache", "-p", "6379", "PING"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "PONG" not in denied.stdout
    metrics = subprocess.run(
        client.command("curl", "-s", "127.0.0.1:15000/metrics"), capture_output=True, text=True
    ).stdout
    tcp = [line for line in metrics.splitlines() if line.startswith("peermesh_tcp_connections")]
    assert any('destination_service="cache"' in t and 'outcome="ok"' in t for t in tcp), tcp


#: The IPv6 lab: the client's namespace keeps no IPv4 address but its loopback's.
V6_CLIENT, V6_SERVER = "fd00:77::1", "fd00:77::2"


@pytest.fixture(scope="module")
def mesh6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, Host]]:
    """frontend in an IPv6-only namespace under capture; orders across IPv6 mTLS."""
    dirs = make_mesh_pki(tmp_path_factory.mktemp("capture-mesh6"))
    lab = Lab(prefix="pmcap6")
    client, server = lab.up(2)
    try:
        for host, address in ((client, V6_CLIENT), (server, V6_SERVER)):
            subprocess.run(host.command(
                "ip", "-6", "addr", "add", f"{address}/64", "dev", "eth0", "nodad",
            ), check=True)  # fmt: skip
        subprocess.run(client.command(
            "ip", "addr", "del", f"{client.address}/24", "dev", "eth0",
        ), check=True)  # fmt: skip
        with ExitStack() as stack:
            stack.enter_context(process(server.command(
                sys.executable, "-m", "examples.service", "--name", "orders", "--port", "8080",
            )))  # fmt: skip
            for host, node, service, extra in (
                (server, "node-b", "orders=8080", ("--inbound", f"[{V6_SERVER}]:15443")),
                (client, "node-a", "frontend=8080", (
                    "--inbound", f"[{V6_CLIENT}]:15443",
                    "--peer", f"orders=[{V6_SERVER}]:15443",
                )),
            ):  # fmt: skip
                stack.enter_context(process(host.command(
                    sys.executable, "-m", "peermesh", "agent", "--name", node,
                    "--service", service, "--data-dir", str(dirs[node]),
                    "--trust-domain", TRUST_DOMAIN, "--gossip", "off",
                    "--log-level", "warning", *extra,
                )))  # fmt: skip
            for host in (server, client):
                wait_admin(host)
            wait_admin(server, "127.0.0.1:8080/")  # the app too, or the first call gets 502
            subprocess.run(client.command(
                sys.executable, "-m", "peermesh", "capture", "install", "--agent-user", "0",
                "--mesh-cidr", "fd00:77::/64",
            ), check=True, capture_output=True)  # fmt: skip
            yield client, server
    finally:
        lab.down()


#: Connect, stay silent past protocol detection (so the agent tunnels it as plain TCP),
#: then speak HTTP/1.0 over the tunnel and print the status line that comes back. It
#: reads to the end before closing: closing with unread bytes would make the kernel reset
#: the connection, and the agent would rightly count the tunnel as reset by the app.
SILENT_FIRST = r"""
import socket, sys, time
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
time.sleep(1.5)
sock.sendall(b"GET / HTTP/1.0\r\nHost: orders\r\nConnection: close\r\n\r\n")
got = b""
while len(got) < 1 << 20:
    chunk = sock.recv(4096)
    if not chunk:
        break
    got += chunk
print(got.split(b"\r\n", 1)[0].decode())
"""


def test_an_ipv6_only_app_reaches_a_service_by_its_ipv6_address_through_two_agents(mesh6):
    client, _server = mesh6
    caller = f"URI=spiffe://{TRUST_DOMAIN}/svc/frontend"
    body = curl(client, f"http://[{V6_SERVER}]:8080/")  # redirected to [::1]:15001
    assert body["service"] == "orders"
    assert str(body["caller"]).endswith(caller), body  # it came over mTLS, over IPv6
    done = subprocess.run(
        as_app(client, sys.executable, "-c", SILENT_FIRST, V6_SERVER, "8080"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.strip().startswith("HTTP/1."), done.stderr
    assert " 200 " in done.stdout, done.stdout
    # The client has read to the end; the agent counts the tunnel once both sides closed.
    for _ in range(50):
        metrics = subprocess.run(
            client.command("curl", "-s", "127.0.0.1:15000/metrics"), capture_output=True, text=True
        ).stdout
        tcp = [line for line in metrics.splitlines() if line.startswith("peermesh_tcp_connections")]
        if any('destination_service="orders"' in t and 'outcome="ok"' in t for t in tcp):
            break
        time.sleep(0.1)
    assert any('destination_service="orders"' in t and 'outcome="ok"' in t for t in tcp), tcp
