"""Agent processes for the benchmarks: one dev CA, free loopback ports, real CLI.

Each agent is ``python -m peermesh agent`` (or a wrapper that runs the same command)
with its admin, inbound and outbound listeners on free loopback ports, started in a
``ProcessGroup`` so that it is always stopped; identities come from ``peermesh dev-ca``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from bench._common import ProcessGroup, free_port, http_ok, wait_until

PY = sys.executable


class Agents:
    """Agent processes on loopback with free ports; certificates from one dev CA."""

    def __init__(self, work: Path, group: ProcessGroup, trust_domain: str) -> None:
        self.work = work
        self.group = group
        self.admin: dict[str, int] = {}
        self.inbound: dict[str, int] = {}
        self.outbound: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.trust_domain = trust_domain
        self._ca = work / "ca"
        subprocess.run(
            [PY, "-m", "peermesh", "dev-ca", "init", "--dir", str(self._ca),
             "--trust-domain", trust_domain],
            check=True, capture_output=True,
        )  # fmt: skip

    def start(
        self,
        node: str,
        service: str,
        app_port: int,
        *flags: str,
        certificate: bool = True,
        outbound: int | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        """Start ``node`` serving ``service`` (its app on ``app_port``); return once its
        admin API answers. ``command`` replaces ``python -m peermesh agent`` (a wrapper
        that takes the same arguments)."""
        data = self.work / node
        if certificate:
            subprocess.run(
                [PY, "-m", "peermesh", "dev-ca", "issue", "--ca-dir", str(self._ca),
                 "--node", node, "--service", service, "--data-dir", str(data)],
                check=True, capture_output=True,
            )  # fmt: skip
        self.admin[node], self.inbound[node] = free_port(), free_port()
        self.outbound[node] = free_port() if outbound is None else outbound
        args = [
            "--name", node, "--service", f"{service}={app_port}", "--data-dir", str(data),
            "--trust-domain", self.trust_domain, "--outbound", f"127.0.0.1:{self.outbound[node]}",
            "--inbound", f"127.0.0.1:{self.inbound[node]}",
            "--admin", f"127.0.0.1:{self.admin[node]}", "--log-level", "warning", *flags,
        ]  # fmt: skip
        self.started[node] = time.monotonic()
        self.group.start(node, [*(command or (PY, "-m", "peermesh", "agent")), *args])
        port = self.admin[node]
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), f"{node} admin", 60)

    def gossip_flags(self, join: str | None = None) -> list[str]:
        flags = ["--gossip", f"127.0.0.1:{free_port()}", "--insecure-gossip", "--no-mdns",
                 "--gossip-profile", "local", "--advertise", "127.0.0.1"]  # fmt: skip
        return flags + (["--join", f"127.0.0.1:{self.inbound[join]}"] if join else [])

    def wait_ready(self) -> None:
        """Every agent answers ``/readyz`` (it holds a certificate) and sees all alive."""
        for node, port in self.admin.items():
            wait_until(lambda p=port: http_ok(f"http://127.0.0.1:{p}/readyz"), f"{node} ready", 60)
        wait_until(lambda: self.converged(len(self.admin)), "gossip membership", 60)

    def converged(self, count: int) -> bool:
        for port in self.admin.values():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/members", timeout=5) as r:
                members = json.loads(r.read()).get("members", [])
            if sum(m["state"] == "alive" for m in members) != count:
                return False
        return True

    def stop(self, node: str) -> None:
        proc = self.group.procs.pop(node)
        proc.terminate()
        proc.wait(timeout=30)
