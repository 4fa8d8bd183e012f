"""Mesh VIPs: derived from the name alone, the same on every agent, collisions settled."""

from __future__ import annotations

import ipaddress
import random

from peermesh.capture import vips
from peermesh.capture.vips import VIP_NETWORK, ServiceVips, VipTable


def test_vip_is_in_the_reserved_range_and_stable():
    table = VipTable(["orders", "payments"])
    vip = table.vip("orders")
    assert vip is not None and vip in VIP_NETWORK
    assert vip not in (VIP_NETWORK.network_address, VIP_NETWORK.broadcast_address)
    assert VipTable(["payments", "orders", "frontend"]).vip("orders") == vip
    assert table.service(str(vip)) == "orders"
    assert table.service(f"::ffff:{vip}") == "orders"
    assert table.service("10.0.0.1") is None
    assert table.service("not an ip") is None
    assert table.vip("unknown") is None


def test_every_agent_agrees_whatever_order_it_learned_the_names_in():
    names = [f"svc-{i}" for i in range(3000)]  # enough for birthday collisions in a /16
    shuffled = names[:]
    random.Random(7).shuffle(shuffled)
    a, b = VipTable(names), VipTable(shuffled)
    assert a.items() == b.items()
    assert len({vip for _, vip in a.items()}) == len(names)


def test_a_collision_is_settled_by_name_order(monkeypatch):
    real = vips.candidate

    def clashing(name: str, n: int) -> ipaddress.IPv4Address:
        if name in ("alpha", "beta") and n == 0:
            return ipaddress.IPv4Address("240.240.1.1")
        return real(name, n)

    monkeypatch.setattr(vips, "candidate", clashing)
    for order in (["alpha", "beta"], ["beta", "alpha"]):
        table = VipTable(order)
        assert table.vip("alpha") == ipaddress.IPv4Address("240.240.1.1")
        assert table.vip("beta") == real("beta", 1)


def test_service_vips_rebuilds_only_when_the_service_set_changes():
    known = {"orders"}
    directory = ServiceVips(lambda: known)
    first = directory.table()
    assert directory.table() is first
    known.add("payments")
    assert directory.table() is not first
    assert directory.table().vip("orders") == first.vip("orders")
