"""Hosts on one machine: network namespaces joined by veth pairs to a bridge.

Every name this module creates starts with a prefix, so ``teardown(prefix)`` can
remove everything a lab made, also after the process that made it crashed. The
bridge lives in its own namespace, so the machine's own network is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_PREFIX = "pmlab"
DEFAULT_SUBNET = "10.77.0"  # the lab's private /24, inside its own namespaces only


class LabError(RuntimeError):
    """The lab cannot be built here; the message says what is missing."""


def require_root() -> None:
    """Namespaces need root and iproute2; say so plainly otherwise."""
    if os.geteuid() != 0:
        raise LabError("network namespaces need root: run as root (CI does)")
    if shutil.which("ip") is None:
        raise LabError("the 'ip' command (iproute2) is not installed")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


@dataclass
class Host:
    """One namespace with one interface on the lab bridge."""

    name: str
    netns: str
    address: str

    def command(self, *args: str) -> list[str]:
        """``args`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *args]


@dataclass
class Lab:
    """N hosts on one bridge: ``10.77.0.1`` … ``10.77.0.N``."""

    prefix: str = DEFAULT_PREFIX
    subnet: str = DEFAULT_SUBNET
    hosts: list[Host] = field(default_factory=list)

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-br"

    def up(self, count: int) -> list[Host]:
        require_root()
        teardown(self.prefix)
        run("ip", "netns", "add", self.bridge_ns)
        run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        for i in range(1, count + 1):
            netns = f"{self.prefix}-h{i}"
            outer, inner = f"{self.prefix}{i}a", f"{self.prefix}{i}b"
            address = f"{self.subnet}.{i}"
            run("ip", "netns", "add", netns)
            run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            run("ip", "link", "set", outer, "netns", self.bridge_ns)
            run("ip", "link", "set", inner, "netns", netns)
            run("ip", "-n", self.bridge_ns, "link", "set", outer, "master", "br0", "up")
            run("ip", "-n", netns, "link", "set", inner, "name", "eth0")
            run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
            run("ip", "-n", netns, "link", "set", "eth0", "multicast", "on", "up")
            run("ip", "-n", netns, "link", "set", "lo", "up")
            run("ip", "-n", netns, "route", "add", "224.0.0.0/4", "dev", "eth0")
            self.hosts.append(Host(name=f"h{i}", netns=netns, address=address))
        return self.hosts

    def down(self) -> None:
        teardown(self.prefix)
        self.hosts.clear()


def lab_namespaces(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Namespaces that belong to a lab with ``prefix``."""
    result = run("ip", "netns", "list", check=False)
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix + "-")]


def teardown(prefix: str = DEFAULT_PREFIX, extra: Sequence[str] = ()) -> None:
    """Kill processes inside the lab's namespaces and delete them (idempotent)."""
    for netns in [*lab_namespaces(prefix), *extra]:
        pids = run("ip", "netns", "pids", netns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        run("ip", "netns", "delete", netns, check=False)
