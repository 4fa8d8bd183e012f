"""Two agents with mDNS off find each other only through DNS seeds from a loopback server."""

from __future__ import annotations

import trio

from gossip.codec import generate_gossip_key, save_keyring
from peermesh.agent import Agent
from tests.support.dnskit import DnsResponder
from tests.support.meshkit import agent_config, eventually
from tests.support.pki import make_mesh_pki

SVC = "peermesh-committee.peermesh.svc.cluster.local."
SRV = "_inbound._tcp." + SVC


def _live(agent: Agent) -> set[str]:
    assert agent.membership is not None
    return {m["name"] for m in agent.membership.status()["members"] if m["state"] == "alive"}


async def test_two_agents_join_through_srv_seeds_alone(tmp_path):
    nodes = {"node-1": "frontend", "node-2": "orders"}
    dirs = make_mesh_pki(tmp_path, nodes=nodes)
    key = tmp_path / "gossip.key"
    save_keyring(key, [generate_gossip_key()])
    dns_server = DnsResponder()
    agents: list[Agent] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(dns_server.serve)
        for node, service in nodes.items():
            config = agent_config(
                node, service, dirs[node], gossip="127.0.0.1:0", gossip_key_file=key,
                gossip_profile="local", mdns=False, advertise="127.0.0.1",
                seeds=(f"srv:{SRV}",), seeds_resolver="{}:{}".format(*dns_server.address),
            )  # fmt: skip
            assert not config.gossip.join
            agent = Agent(config)
            await nursery.start(agent.run)
            agents.append(agent)
            # The Service lists the pod once it is ready, as a headless Service does.
            pods = [f"0 0 {a.addresses['inbound'][1]} pod-{i}.{SVC}" for i, a in enumerate(agents)]
            dns_server.records[(SRV, "SRV")] = pods
            for i in range(len(agents)):
                dns_server.records[(f"pod-{i}.{SVC}", "A")] = ["127.0.0.1"]
        await eventually(lambda: all(_live(a) == set(nodes) for a in agents), timeout=30)
        assert dns_server.queries > 0
        nursery.cancel_scope.cancel()
