"""Renewal under MockClock: agents renew at half their lifetime and open connections survive."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from examples.service import ExampleService, ServiceConfig
from peermesh.ca.renewal import renewal_delay
from tests.support.ca import bootstrap_mesh, free_port_pair

NODES = {"node-1": "frontend", "node-2": "orders", "node-3": "payments"}


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_agents_renew_before_expiry_and_keep_connections(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    ports = {node: free_port_pair() for node in NODES}
    async with trio.open_nursery() as apps:
        app = ExampleService(ServiceConfig(name="orders", port=0, version="node-2"))
        app_port = await apps.start(app.run)
        async with bootstrap_mesh(
            tmp_path,
            NODES,
            app_ports={"node-2": app_port},
            inbound_ports=ports,
            gossip="off",
            cert_lifetime="1h",
            per_node={"node-1": {"peers": (f"orders=127.0.0.1:{ports['node-2']}",)}},
        ) as mesh:
            frontend = mesh.agents["node-1"]
            first = {n: a.tls.certificate for n, a in mesh.agents.items()}
            lifetime = first["node-1"].not_valid_after_utc - first["node-1"].not_valid_before_utc
            assert lifetime.total_seconds() == 3600
            host, port = frontend.addresses["outbound"]
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://{host}:{port}/", headers={"host": "orders"})
                assert r.status_code == 200
                sessions = frontend.pool.sessions()
                assert len(sessions) == 1
                mesh_link = sessions[0]
                started = trio.current_time()
                # Nothing renews early; everything renews well before expiry.
                await trio.sleep(20 * 60)
                assert all(a.ca.renewals == 0 for a in mesh.agents.values())
                with trio.fail_after(20 * 60):
                    while not all(a.ca.renewals >= 1 for a in mesh.agents.values()):  # noqa: ASYNC110
                        await trio.sleep(10)
                elapsed = trio.current_time() - started
                assert 20 * 60 < elapsed < 40 * 60
                for node, agent in mesh.agents.items():
                    renewed = agent.tls.certificate
                    assert renewed.serial_number != first[node].serial_number
                    assert renewed.public_key() != first[node].public_key()
                    assert str(agent.tls.identity).endswith("/svc/" + NODES[node])
                # The same HTTP/2 connection between the agents still carries requests.
                opened = mesh_link.stats.streams_opened
                r = await client.get(f"http://{host}:{port}/", headers={"host": "orders"})
                assert r.status_code == 200
                assert not mesh_link.is_closed and mesh_link in frontend.pool.sessions()
                assert mesh_link.stats.streams_opened == opened + 1  # it carried that request
        apps.cancel_scope.cancel()


def test_renewal_delay_is_half_the_lifetime_with_jitter() -> None:
    import datetime as dt
    import random

    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(hours=24)
    rng = random.Random(7)
    delays = [renewal_delay(start, end, start, rng) for _ in range(200)]
    assert all(0.45 * 86400 <= d <= 0.55 * 86400 for d in delays)
    assert len({round(d) for d in delays}) > 100  # jittered, not one instant
    assert renewal_delay(start, end, end, rng) == 0.0  # overdue: now
