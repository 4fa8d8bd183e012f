"""Stable virtual IPs for mesh services, the same on every agent.

A service's VIP is derived from its name alone: the first 16 bits of
``sha256("peermesh-vip/<name>/<n>")`` for n = 0, 1, 2, ... pick a host in
240.240.0.0/16 (the range Istio's DNS auto-allocation uses; class E, so no real host
owns it). Names are placed in sorted order and each takes the first candidate nobody
holds, so two agents that know the same services agree on every address, and a service
whose first candidate is free (almost all of them) keeps it whatever else is added.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping

VIP_NETWORK = ipaddress.IPv4Network("240.240.0.0/16")
#: .0.0 and .255.255 look like network and broadcast addresses to some tools; skip them.
_SLOTS = VIP_NETWORK.num_addresses - 2
#: More names than this and the table refuses the rest (the range holds 65,534).
MAX_SERVICES = 50_000
#: Candidates tried per name before giving up (only reached when the range is nearly full).
MAX_PROBES = 64


def candidate(name: str, n: int) -> ipaddress.IPv4Address:
    """The ``n``-th address ``name`` may take."""
    digest = hashlib.sha256(f"peermesh-vip/{name}/{n}".encode()).digest()
    slot = int.from_bytes(digest[:4], "big") % _SLOTS + 1
    return VIP_NETWORK.network_address + slot


class VipTable:
    """Service name ↔ VIP for one set of names (immutable once built)."""

    def __init__(self, services: Iterable[str]) -> None:
        by_name: dict[str, ipaddress.IPv4Address] = {}
        taken: dict[ipaddress.IPv4Address, str] = {}
        self.unplaced: list[str] = []
        for name in sorted(set(services))[:MAX_SERVICES]:
            for n in range(MAX_PROBES):
                vip = candidate(name, n)
                if vip not in taken:
                    taken[vip] = name
                    by_name[name] = vip
                    break
            else:
                self.unplaced.append(name)
        self._by_name: Mapping[str, ipaddress.IPv4Address] = by_name
        self._by_vip: Mapping[ipaddress.IPv4Address, str] = taken

    def vip(self, service: str) -> ipaddress.IPv4Address | None:
        return self._by_name.get(service)

    def service(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """The service a VIP stands for, or None (not a VIP, or not allocated)."""
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not isinstance(ip, ipaddress.IPv4Address):
            return None
        return self._by_vip.get(ip)

    def __len__(self) -> int:
        return len(self._by_name)

    def items(self) -> list[tuple[str, ipaddress.IPv4Address]]:
        return sorted(self._by_name.items())


class ServiceVips:
    """The current :class:`VipTable`, rebuilt only when the set of known services changes."""

    def __init__(self, services: Callable[[], Iterable[str]]) -> None:
        self._services = services
        self._key: frozenset[str] = frozenset()
        self._table = VipTable(())

    def table(self) -> VipTable:
        names = frozenset(self._services())
        if names != self._key:
            self._key, self._table = names, VipTable(names)
        return self._table
