"""``peermesh capture`` for real, in a network namespace of its own (needs root and nft)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

ROOT_REASON = ""
if os.geteuid() != 0:
    ROOT_REASON = "capture changes nftables in a network namespace: run as root (CI does)"
elif shutil.which("nft") is None or shutil.which("ip") is None:
    ROOT_REASON = "needs nft (nftables) and ip (iproute2)"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(ROOT_REASON), reason=ROOT_REASON or "root available"),
]


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"pmcap-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ns = ["ip", "netns", "exec", name]
        subprocess.run([*ns, "ip", "link", "set", "lo", "up"], check=True)
        # A default route, so connect() to a VIP gets as far as the nat hook.
        subprocess.run(
            [*ns, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"], check=True
        )
        subprocess.run([*ns, "ip", "link", "set", "d0", "up"], check=True)
        subprocess.run([*ns, "ip", "addr", "add", "10.9.0.1/24", "dev", "d0"], check=True)
        subprocess.run([*ns, "ip", "route", "add", "default", "dev", "d0"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_ns(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *args], capture_output=True, text=True, check=check
    )


def peermesh(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return in_ns(netns, sys.executable, "-m", "peermesh", *args, check=check)


def ruleset(netns: str) -> str:
    return in_ns(netns, "nft", "list", "ruleset").stdout


INSTALL = (
    "capture", "install", "--agent-user", "65534", "--app-port", "8080", "--inbound", "strict",
    "--mesh-cidr", "10.9.0.0/24", "--exclude-port", "22", "--exclude-cidr", "192.168.0.0/16",
)  # fmt: skip


def test_install_is_idempotent_and_remove_restores_the_ruleset_exactly(netns):
    in_ns(netns, "nft", "add", "table", "ip", "theirs")
    in_ns(netns, "nft", "add", "chain", "ip", "theirs", "in",
          "{ type filter hook input priority 0; policy accept; }")  # fmt: skip
    in_ns(netns, "nft", "add", "rule", "ip", "theirs", "in", "tcp", "dport", "9", "drop")
    before = ruleset(netns)
    assert "peermesh" not in before

    assert peermesh(netns, "capture", "status", check=False).returncode == 3
    peermesh(netns, *INSTALL)
    once = ruleset(netns)
    peermesh(netns, *INSTALL)
    assert ruleset(netns) == once  # idempotent: replaced, not doubled
    assert "table ip theirs" in once and "table inet peermesh_capture" in once
    status = peermesh(netns, "capture", "status")
    assert "redirect to :15001" in status.stdout and "skuid 65534" in status.stdout

    peermesh(netns, "capture", "remove")
    assert ruleset(netns) == before
    peermesh(netns, "capture", "remove")  # removing twice is fine
    assert ruleset(netns) == before


def test_bad_settings_are_refused_before_nft_runs(netns):
    done = peermesh(netns, "capture", "install", "--mark", "0", check=False)
    assert done.returncode != 0 and "--agent-uid" in done.stderr
    done = peermesh(
        netns, "capture", "install", "--agent-user", "0", "--inbound", "permissive",
        "--app-port", "8080", check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "--plaintext-port" in done.stderr
    assert "peermesh" not in ruleset(netns)


PROBE = r"""
import socket, sys
from peermesh.net.origdst import original_destination
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 15001))
listener.listen()
listener.settimeout(5)
def dial(address, mark=0):
    client = socket.socket()
    if mark:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    client.settimeout(1)
    try:
        client.connect(address)
    except OSError as exc:
        client.close()
        return f"not captured ({type(exc).__name__})"
    conn, _ = listener.accept()
    found = original_destination(conn)
    conn.close(); client.close()
    return f"reached the listener, dialled {found}"
print(dial(("240.240.3.4", 6379)))
print(dial(("10.9.0.7", 8080)))
print(dial(("240.240.3.4", 22)))
print(dial(("240.240.3.4", 6379), mark=0x504D))
print(dial(("127.0.0.1", 15001)))
"""


def test_captured_connections_carry_their_original_destination(netns):
    peermesh(netns, *INSTALL)
    lines = in_ns(netns, sys.executable, "-c", PROBE).stdout.splitlines()
    assert lines[0] == "reached the listener, dialled ('240.240.3.4', 6379)"  # a VIP
    assert lines[1] == "reached the listener, dialled ('10.9.0.7', 8080)"  # a mesh CIDR
    assert lines[2].startswith("not captured")  # an excluded port
    assert lines[3].startswith("not captured")  # the agent's socket mark
    assert lines[4] == "reached the listener, dialled None"  # direct, not redirected


PROBE_V6 = r"""
import socket
from peermesh.net.origdst import original_destination
listener = socket.socket(socket.AF_INET6)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("::1", 15001))
listener.listen()
listener.settimeout(5)
client = socket.socket(socket.AF_INET6)
client.settimeout(1)
client.connect(("fd00:9::7", 6379))
conn, _ = listener.accept()
print(original_destination(conn))
"""


def test_an_ipv6_connection_to_a_mesh_cidr_carries_its_original_destination(netns):
    in_ns(netns, "ip", "-6", "addr", "add", "fd00:9::1/64", "dev", "d0", "nodad")
    in_ns(netns, "ip", "-6", "route", "add", "default", "dev", "d0")
    peermesh(netns, *INSTALL, "--mesh-cidr", "fd00:9::/64")
    done = in_ns(netns, sys.executable, "-c", PROBE_V6, check=False)
    assert done.stdout.strip() == "('fd00:9::7', 6379)", done.stderr
