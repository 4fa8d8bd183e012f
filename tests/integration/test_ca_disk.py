"""A signer whose data dir is full refuses to sign (it cannot store its single-use nonce
or the token's use count) instead of signing without a durable record; once space
returns, the same join succeeds. Real agents, a real DKG, a real full tmpfs."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.support.ca import bootstrap_mesh
from tests.support.disk import fill, small_tmpfs
from tests.support.meshkit import eventually

NODES = {"node-1": "svc-1", "node-2": "svc-2", "node-3": "svc-3"}


async def test_a_signer_with_a_full_disk_refuses_until_space_returns(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "node-3", "4m") as full_dir:
        async with bootstrap_mesh(tmp_path, NODES, threshold=3) as mesh:
            host, port = mesh.agents["node-1"].addresses["admin"]
            async with httpx.AsyncClient() as client:
                r = await client.post(
                    f"http://{host}:{port}/v1/ca/token",
                    json={"service": "newsvc", "ttl": 3600, "uses": 1},
                    headers={"x-peermesh-request": "1"},
                )
            assert r.status_code == 200, r.text
            token = str(r.json()["token"])
            signer = mesh.agents["node-3"]
            await eventually(lambda: r.json()["id"] in signer.policy.compiled().join_tokens)
            filler = full_dir / "filler"
            fill(filler)
            joiner = await mesh.join("node-4", "newsvc", "node-1", token)
            await eventually(
                lambda: "No space left on device" in (joiner.ca.last_error or ""), timeout=30
            )
            assert not joiner.tls.loaded
            assert signer.ca.node.state.nonces.pending == 0  # none issued that is not on disk
            filler.unlink()
            with trio.fail_after(60):
                await joiner.ca.identity_ready.wait()
            assert str(joiner.tls.identity) == "spiffe://mesh.test/svc/newsvc"
