"""The nftables table ``peermesh capture install`` writes, as text (sans-IO).

Everything lives in one table of our own, ``inet peermesh_capture``, so installing
replaces exactly that table (atomically, in one ``nft -f`` transaction) and removing it
leaves the namespace's other rules as they were. Order inside the output chain is the
whole design, as in Istio's ``istio-iptables``:

1. the agent's own sockets (its uid, or the socket mark it sets) return first, so its
   connections to peers and its queries to the host's resolvers are never looped back;
2. the app's DNS (UDP port 53) goes to the agent's mesh DNS (a TCP retry reaches the
   host's resolvers directly);
3. loopback, the admin port, excluded ports and excluded CIDRs return untouched;
4. TCP to a mesh VIP (240.240.0.0/16) or to a mesh CIDR goes to the outbound listener.

Inbound, the app's ports refuse connections that did not come through the agent (STRICT:
a TCP reset for anything not on loopback) or send them to the plaintext listener
(PERMISSIVE).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from peermesh.capture.vips import VIP_NETWORK

TABLE_FAMILY = "inet"
TABLE_NAME = "peermesh_capture"
DEFAULT_MARK = 0x504D  # "PM"


class InboundMode(enum.StrEnum):
    """What happens to a connection to the app's port that did not come through the mesh."""

    STRICT = "strict"
    PERMISSIVE = "permissive"
    OFF = "off"


class CaptureError(ValueError):
    """Capture settings that cannot make a correct ruleset; the message says which."""


@dataclass(frozen=True)
class CaptureSpec:
    """What to capture; every field is checked by :meth:`check`."""

    outbound_port: int = 15001
    dns_port: int | None = 15053
    admin_port: int = 15000
    agent_uid: int | None = None
    mark: int = DEFAULT_MARK
    app_ports: tuple[int, ...] = ()
    inbound: InboundMode = InboundMode.OFF
    plaintext_port: int | None = None
    mesh_cidrs: tuple[str, ...] = ()
    exclude_cidrs: tuple[str, ...] = ()
    exclude_ports: tuple[int, ...] = field(default=())

    def check(self) -> None:
        ports = [self.outbound_port, self.admin_port, *self.app_ports, *self.exclude_ports]
        if self.dns_port is not None:
            ports.append(self.dns_port)
        if self.plaintext_port is not None:
            ports.append(self.plaintext_port)
        for port in ports:
            if not 0 < port < 65536:
                raise CaptureError(f"port {port} is outside 1-65535")
        if self.agent_uid is None and not self.mark:
            raise CaptureError(
                "give the agent's uid (--agent-uid) or a socket mark: without one the"
                " agent's own connections would be captured and loop back into it"
            )
        if self.inbound is InboundMode.PERMISSIVE and self.plaintext_port is None:
            raise CaptureError(
                "--inbound permissive needs --plaintext-port (the agent's --plaintext)"
            )
        if self.inbound is not InboundMode.OFF and not self.app_ports:
            raise CaptureError(f"--inbound {self.inbound} needs the app's ports (--app-port)")
        for cidr in (*self.mesh_cidrs, *self.exclude_cidrs):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise CaptureError(f"{cidr!r} is not an address or CIDR") from None


def _split(cidrs: Sequence[str]) -> tuple[list[str], list[str]]:
    v4: list[str] = []
    v6: list[str] = []
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        (v4 if net.version == 4 else v6).append(str(net))
    return v4, v6


def _set(items: Sequence[object]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def table_script(spec: CaptureSpec) -> str:
    """An ``nft -f`` script that replaces our table with one built from ``spec``."""
    spec.check()
    out: list[str] = []
    rule = out.append
    rule("# agent's own sockets: never captured")
    if spec.agent_uid is not None:
        rule(f"meta skuid {spec.agent_uid} return")
    if spec.mark:
        rule(f"meta mark {spec.mark:#x} return")
    if spec.dns_port is not None:
        rule(f"udp dport 53 redirect to :{spec.dns_port}")
    rule("ip daddr 127.0.0.0/8 return")
    rule("ip6 daddr ::1 return")
    rule(f"tcp dport {spec.admin_port} return")
    if spec.exclude_ports:
        rule(f"tcp dport {_set(sorted(set(spec.exclude_ports)))} return")
    ex4, ex6 = _split(spec.exclude_cidrs)
    if ex4:
        rule(f"ip daddr {_set(ex4)} return")
    if ex6:
        rule(f"ip6 daddr {_set(ex6)} return")
    mesh4, mesh6 = _split((str(VIP_NETWORK), *spec.mesh_cidrs))
    rule(f"ip daddr {_set(mesh4)} meta l4proto tcp redirect to :{spec.outbound_port}")
    if mesh6:
        rule(f"ip6 daddr {_set(mesh6)} meta l4proto tcp redirect to :{spec.outbound_port}")
    output = "\n".join(f"\t\t{line}" for line in out)

    inbound: list[str] = []
    ports = _set(sorted(set(spec.app_ports))) if spec.app_ports else ""
    if spec.inbound is InboundMode.PERMISSIVE:
        inbound.append(
            f"\tchain prerouting {{\n\t\ttype nat hook prerouting priority -100; policy accept;\n"
            f'\t\tiifname != "lo" tcp dport {ports} redirect to :{spec.plaintext_port}\n\t}}'
        )
    elif spec.inbound is InboundMode.STRICT:
        inbound.append(
            f"\tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n"
            f'\t\tiifname != "lo" tcp dport {ports} reject with tcp reset\n\t}}'
        )
    body = (
        f"\tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n{output}\n\t}}"
    )
    table = f"{TABLE_FAMILY} {TABLE_NAME}"
    return (
        # Declaring then deleting makes the replace work whether or not the table exists,
        # all in the one transaction nft -f applies atomically.
        f"table {table}\ndelete table {table}\n"
        f"table {table} {{\n{body}\n" + "".join(f"{c}\n" for c in inbound) + "}\n"
    )


def remove_script() -> str:
    """An ``nft -f`` script that deletes our table, present or not."""
    table = f"{TABLE_FAMILY} {TABLE_NAME}"
    return f"table {table}\ndelete table {table}\n"
