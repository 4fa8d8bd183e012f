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

from chaos.netns import Host, Lab, LabError, require_root
from tests.support.meshkit import process
from tests.support.pki import TRUST_DOMAIN, make_mesh_pki

try:
    require_root()
    if shutil.which("nft") is None or shutil.which("setpriv") is None:
        raise LabError("needs nft (nftables) and setpriv (util-linux)")
    ROOT_REASON = ""
except LabError as exc:
    ROOT_REASON = str(exc)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(ROOT_REASON), reason=ROOT_REASON or "root available"),
]

NODES = {"node-a": "frontend", "node-b": "orders"}
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def wait_admin(host: Host) -> None:
    """Agent start-up (not a timing assertion): poll /readyz until it answers."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = subprocess.run(
            host.command("curl", "-sf", "--max-time", "1", "127.0.0.1:15000/readyz"),
            capture_output=True,
        )
        if done.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"agent in {host.netns} never became ready")


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Host, Host]]:
    dirs = make_mesh_pki(tmp_path, nodes=NODES)
    lab = Lab(prefix="pmcap")
    client, server = lab.up(2)
    # The client's resolver: an address nobody serves, so every answer below is the agent's.
    resolv = Path("/etc/netns") / client.netns
    resolv.mkdir(parents=True, exist_ok=True)
    (resolv / "resolv.conf").write_text("nameserver 10.77.0.254\n")
    subprocess.run(["ip", "-n", client.netns, "route", "add", "default", "dev", "eth0"], check=True)
    try:
        with ExitStack() as stack:
            stack.enter_context(process(server.command(
                sys.executable, "-m", "examples.service", "--name", "orders", "--port", "8080",
            )))  # fmt: skip
            for host, node, service, extra in (
                (server, "node-b", "orders", ()),
                (client, "node-a", "frontend", (
                    "--peer", f"orders={server.address}:15443",
                    "--dns", "127.0.0.1:15053", "--dns-bare-names",
                    "--dns-upstream", "10.77.0.254:53",
                )),
            ):  # fmt: skip
                stack.enter_context(process(host.command(
                    sys.executable, "-m", "peermesh", "agent", "--name", node,
                    "--service", f"{service}=8080", "--data-dir", str(dirs[node]),
                    "--trust-domain", TRUST_DOMAIN, "--inbound", f"{host.address}:15443",
                    "--gossip", "off", "--log-level", "warning", *extra,
                )))  # fmt: skip
            wait_admin(server)
            wait_admin(client)
            subprocess.run(client.command(
                sys.executable, "-m", "peermesh", "capture", "install", "--agent-user", "0",
                "--mesh-cidr", f"{server.address}/32",
            ), check=True, capture_output=True)  # fmt: skip
            yield client, server
    finally:
        lab.down()
        shutil.rmtree(resolv, ignore_errors=True)


def curl(host: Host, url: str) -> dict[str, object]:
    done = subprocess.run(
        host.command("env", "-i", "PATH=/usr/bin:/bin", *NOBODY, "curl", "-sS", "--max-time",
                     "10", url),
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_unmodified_client_reaches_orders_by_name_through_both_agents(mesh):
    client, server = mesh
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
