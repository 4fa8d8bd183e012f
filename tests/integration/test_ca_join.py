"""Joining with a token: works with two of five signers down, refuses clearly with three
down, and succeeds once one comes back. Tokens are single-use and pinned to a service."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from peermesh.net.admin_guard import ADMIN_HEADERS
from tests.support.ca import bootstrap_mesh
from tests.support.meshkit import eventually

NODES = {f"node-{i}": f"svc-{i}" for i in range(1, 6)}


async def _token(admin: tuple[str, int], **request: object) -> str:
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"http://{admin[0]}:{admin[1]}/v1/ca/token", json=request, headers=ADMIN_HEADERS
        )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


async def test_join_with_quorum_and_refusal_without(tmp_path: Path) -> None:
    async with bootstrap_mesh(tmp_path, NODES) as mesh:
        admin = mesh.agents["node-1"].addresses["admin"]
        token = await _token(admin, service="newsvc", ttl=3600, uses=1)
        # The token is stored hashed: its secret is in no signer's files.
        secret = token.split(".")[2].encode()
        for path in tmp_path.rglob("tokens.msgpack"):  # noqa: ASYNC240
            assert secret not in path.read_bytes()
        await mesh.stop("node-4")
        await mesh.stop("node-5")
        joiner = await mesh.join("node-6", "newsvc", "node-1", token)
        with trio.fail_after(30):
            await joiner.ca.identity_ready.wait()
        assert str(joiner.tls.identity) == "spiffe://mesh.test/svc/newsvc"
        assert joiner.ca.committee is not None and joiner.ca.committee.threshold == 3
        # It got the gossip keyring too and joins the (encrypted) gossip.
        await eventually(
            lambda: "node-1" in {m["name"] for m in joiner.membership.status()["members"]},
            timeout=20,
        )

        # The used-up token admits nobody else.
        reuse = await mesh.join("node-8", "newsvc", "node-2", token)
        await eventually(lambda: "used up" in (reuse.ca.last_error or ""), timeout=20)
        assert not reuse.tls.loaded
        await mesh.stop("node-8")

        # A token for another service is refused for this CSR.
        other = await _token(admin, service="billing", ttl=3600, uses=1)
        wrong = await mesh.join("node-9", "newsvc", "node-2", other)
        await eventually(
            lambda: "allows service 'billing'" in (wrong.ca.last_error or ""), timeout=20
        )
        await mesh.stop("node-9")

        # Three of five signers down: fewer than t = 3 reachable; the refusal says who.
        token2 = await _token(admin, service="late", ttl=3600, uses=1)
        restart_config = mesh.configs["node-3"]
        await mesh.stop("node-3")
        late = await mesh.join("node-7", "late", "node-1", token2)
        expected = (
            "2 of 3 required signers reachable: node-1, node-2; unreachable: node-3, node-4, node-5"
        )
        await eventually(lambda: expected in (late.ca.last_error or ""), timeout=30)
        assert not late.tls.loaded
        async with httpx.AsyncClient() as client:
            host, port = late.addresses["admin"]
            status = (await client.get(f"http://{host}:{port}/v1/ca/status")).json()
        assert expected in status["last_error"], json.dumps(status)

        # One signer returns (same data dir and ports): the waiting agent gets in.
        await mesh.start("node-3", restart_config)
        with trio.fail_after(40):
            await late.ca.identity_ready.wait()
        assert str(late.tls.identity) == "spiffe://mesh.test/svc/late"


async def test_joining_agent_readiness_names_the_ca_not_dev_ca(tmp_path: Path) -> None:
    from peermesh.agent import Agent
    from peermesh.ca.tokens import JoinToken
    from tests.support.meshkit import agent_config, free_port

    token = str(JoinToken.generate("ab" * 32))
    config = agent_config(
        "node-x", "orders", tmp_path / "x", join_token=token, join=(f"127.0.0.1:{free_port()}",)
    )
    agent = Agent(config)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
        await nursery.start(agent.run)
        host, port = agent.addresses["admin"]
        await eventually(lambda: agent.ca.last_error)
        ready = await client.get(f"http://{host}:{port}/readyz")
        nursery.cancel_scope.cancel()
    assert ready.status_code == 503
    assert "threshold CA joining" in ready.text, ready.text
    assert "dev-ca" not in ready.text
    assert agent.ca.last_error.strip()
