"""Inbound protections from policy: local rate limit, mTLS mode, revoked identities."""

from __future__ import annotations

import dataclasses

import httpx
import trio

from examples.service import ExampleService, ServiceConfig
from peermesh.agent import Agent
from peermesh.net.admin_guard import ADMIN_HEADERS
from tests.support.meshkit import agent_config, eventually, two_agents
from tests.support.pki import TRUST_DOMAIN, make_mesh_pki


async def apply(agent: Agent, *objects: dict) -> None:
    host, port = agent.addresses["admin"]
    async with httpx.AsyncClient() as c:
        r = await c.put(
            f"http://{host}:{port}/v1/policy",
            json={"objects": list(objects)},
            headers=ADMIN_HEADERS,
        )
    assert r.status_code == 200, r.text


async def test_local_rate_limit_answers_429_with_retry_after(tmp_path):
    async with two_agents(tmp_path) as mesh, httpx.AsyncClient() as client:
        limit = {
            "kind": "TrafficPolicy",
            "name": "orders",
            "spec": {
                "host": "orders",
                "rateLimit": {"maxTokens": 5, "tokensPerFill": 1, "fillInterval": "10s"},
            },
        }
        await apply(mesh.server, limit)
        statuses = []
        for _ in range(8):
            r = await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert r.headers["x-peermesh-error"] == "rate-limited"
                assert int(r.headers["retry-after"]) >= 1
        assert statuses[:5] == [200] * 5
        assert statuses[5:] == [429] * 3
        assert mesh.server.metrics.rate_limited.labels("orders")._value.get() == 3


async def test_plaintext_port_only_in_permissive_mode(tmp_path):
    dirs = make_mesh_pki(tmp_path, nodes={"node-b": "orders"})
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        app = ExampleService(ServiceConfig(name="orders", port=0))
        port = await nursery.start(app.run)
        config = agent_config("node-b", "orders", dirs["node-b"], app_port=port)
        proxy = dataclasses.replace(config.proxy, plaintext=("127.0.0.1", 0))
        config = dataclasses.replace(config, proxy=proxy)
        agent = Agent(config)
        await nursery.start(agent.run)
        host, plain = agent.addresses["plaintext"]
        strict = await client.get(f"http://{host}:{plain}/", headers={"host": "orders"})
        assert strict.status_code == 403
        assert strict.headers["x-peermesh-error"] == "mtls-required"
        await apply(
            agent,
            {
                "kind": "MeshConfig",
                "name": "default",
                "spec": {"mtls": {"mode": "STRICT", "services": {"orders": "PERMISSIVE"}}},
            },
        )
        # PERMISSIVE lets plaintext in, but the default policy still wants an identity...
        anonymous = await client.get(f"http://{host}:{plain}/", headers={"host": "orders"})
        assert anonymous.status_code == 403 and "no identity" in anonymous.text
        await apply(
            agent,
            {
                "kind": "AuthorizationPolicy",
                "name": "orders-legacy-clients",
                "spec": {"service": "orders", "action": "ALLOW", "rules": [{}]},
            },
        )
        allowed = await client.get(f"http://{host}:{plain}/", headers={"host": "orders"})
        assert allowed.status_code == 200
        assert allowed.json()["service"] == "orders"
        nursery.cancel_scope.cancel()


async def test_revoked_identity_is_refused_before_its_certificate_expires(tmp_path, monkeypatch):
    async with two_agents(tmp_path) as mesh, httpx.AsyncClient() as client:
        # The server would close the connection when the revocation arrives
        # (tests/integration/test_ca_authority.py); keep it open to see the per-request check.
        monkeypatch.setattr(mesh.server, "_close_revoked", lambda: None)
        assert (
            await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
        ).status_code == 200
        revoke = {
            "kind": "MeshConfig",
            "name": "default",
            "spec": {
                "revokedIdentities": [
                    {"identity": f"spiffe://{TRUST_DOMAIN}/svc/frontend", "reason": "test"}
                ]
            },
        }
        await apply(mesh.client, revoke)
        await eventually(lambda: mesh.server.policy.get("MeshConfig", "default") is not None)
        # The open connection: refused at the next request.
        r = await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
        assert r.status_code == 403 and "revoked" in r.text
        # A new connection: refused at the handshake.
        await eventually(lambda: all(s.open_streams == 0 for s in mesh.client.pool.sessions()))
        for session in mesh.client.pool.sessions():
            session.close("test")
        r = await client.get(mesh.outbound_url + "/", headers={"host": "orders"})
        assert r.status_code in (502, 503)
        failures = mesh.server.metrics.tls_failures.labels("server", "revoked-identity")
        await eventually(lambda: failures._value.get() >= 1)
