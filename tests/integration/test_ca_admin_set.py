"""The MeshConfig admin set anchored in the root: real agents of a threshold-CA mesh.

Three agents bootstrap a 2-of-3 committee over loopback mTLS. Changing who administers
the mesh goes through ``PUT /v1/policy`` on an admin's agent, which has the committee
endorse the change; each signer checks the request itself. A member pushing a MeshConfig
that changes the admins without an endorsement changes nothing anywhere, and one signer
(t-1) cannot produce an endorsement.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from peermesh.agent import Agent
from peermesh.ca.errors import QuorumError
from peermesh.core.endpoint import Endpoint
from peermesh.net.admin_guard import ADMIN_HEADERS
from peermesh.policy.messages import PUSH, PushRequest
from peermesh.policy.model.mesh_config import INBOUND_DENY
from peermesh.policy.records import VersionRecord
from tests.support.ca import CaMesh, bootstrap_mesh
from tests.support.meshkit import eventually, peermesh_cli
from tests.unit.policy.test_policy_authorship import crdt_update, record_for

NODES = {"node-1": "svc-1", "node-2": "svc-2", "node-3": "svc-3"}
TD = "mesh.test"
SVC1, SVC2 = f"spiffe://{TD}/svc/svc-1", f"spiffe://{TD}/svc/svc-2"
ANY_VERSION = "00" * 32  # a MeshConfig content hash: signers endorse any an admin writes


def mesh_config(*admins: str, policy: str = "ALLOW_AUTHENTICATED") -> dict[str, Any]:
    return {
        "kind": "MeshConfig",
        "name": "default",
        "spec": {"admins": list(admins), "defaultInboundPolicy": policy},
    }


async def put_policy(agent: Agent, *objects: dict[str, Any]) -> tuple[int, Any]:
    host, port = agent.addresses["admin"]
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.put(
            f"http://{host}:{port}/v1/policy",
            json={"objects": list(objects)},
            headers=ADMIN_HEADERS,
        )
    return r.status_code, r.json()


def inbound(mesh: CaMesh, node: str) -> Endpoint:
    host, port = mesh.configs[node].proxy.inbound
    return Endpoint(service="", host=host, port=port)


def admin_view(mesh: CaMesh) -> set[tuple[frozenset[str], int]]:
    return {(a.policy.admins, a.policy.admin_epoch) for a in mesh.agents.values()}


async def test_admins_change_only_with_the_committees_endorsement(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with bootstrap_mesh(tmp_path, NODES) as mesh:
        one, two, three = (mesh.agents[n] for n in NODES)
        assert all(a.policy.anchor is not None for a in (one, two, three))

        # 1. A committee member's node sets the first admins: endorsed, agreed everywhere.
        code, reply = await put_policy(one, mesh_config(SVC1))
        assert code == 200, reply
        await eventually(lambda: admin_view(mesh) == {(frozenset({SVC1}), 1)}, timeout=20)
        winner = three.policy.winner("MeshConfig", "default")
        assert winner is not None and winner.endorsement is not None
        assert winner.endorsement.epoch == 1 and winner.author == SVC1

        # 2. A non-admin asks the committee itself: every signer refuses, for its reason.
        shares_out = sum(a.ca.admin_set_signing.endorsed for a in (one, two, three))
        assert shares_out >= 2
        with pytest.raises(QuorumError) as refused:
            await two.ca.endorse_admin_set(frozenset({SVC1}), 2, frozenset({SVC2}), ANY_VERSION)
        # (the coordinator stops once n-t+1 = 2 refusals leave no quorum possible)
        assert str(refused.value).count("not in this signer's current admin set") >= 2
        assert sum(a.ca.admin_set_signing.refused for a in (one, two, three)) >= 2
        assert sum(a.ca.admin_set_signing.endorsed for a in (one, two, three)) == shares_out
        # Its admin API refuses up front; asking for the wrong epoch fails at signers too.
        code, reply = await put_policy(two, mesh_config(SVC2))
        assert code == 403 and "not a MeshConfig admin" in reply["error"], reply
        with pytest.raises(QuorumError, match="epoch 5, but"):
            await one.ca.endorse_admin_set(frozenset({SVC1}), 5, frozenset({SVC2}), ANY_VERSION)
        assert admin_view(mesh) == {(frozenset({SVC1}), 1)}

        # 3. node-2 pushes, through replication, validly signed MeshConfig versions naming
        # itself: one unendorsed and backdated, one carrying the real endorsement copied.
        signer = two.policy.signer
        assert signer is not None
        backdated = signer.sign(record_for(mesh_config(SVC2, policy="DENY"), node="node-2"))
        copied = signer.sign(
            dataclasses.replace(
                record_for(mesh_config(SVC1, policy="DENY"), node="node-2", lamport=2),
                endorsement=winner.endorsement,
            )
        )
        before = {n: a.policy.unendorsed_admin_changes for n, a in mesh.agents.items()}
        caplog.set_level(logging.WARNING, logger="peermesh.policy.authority")
        for target in ("node-1", "node-3"):
            await two.control_client.call(
                inbound(mesh, target), PUSH, PushRequest(crdt_update(backdated, copied), "node-2")
            )

        def held_everywhere(record: VersionRecord) -> bool:
            return all(a.policy.has_edit(record.key, record.edit_id) for a in mesh.agents.values())

        await eventually(lambda: held_everywhere(backdated) and held_everywhere(copied))
        assert admin_view(mesh) == {(frozenset({SVC1}), 1)}
        for node, agent in mesh.agents.items():
            assert agent.policy.unendorsed_admin_changes > before[node], node
            assert agent.policy.winner("MeshConfig", "default") == winner
            assert agent.policy.compiled().mesh.default_inbound_policy != INBOUND_DENY
        assert "ignoring MeshConfig version" in caplog.text
        host, port = one.addresses["admin"]
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://{host}:{port}/metrics")).text
        exported = [
            float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("peermesh_policy_admin_changes_unendorsed_total ")
        ]
        assert exported and exported[0] > before["node-1"], exported

        # 4. The admin hands the mesh to two admins: epoch 2 everywhere.
        code, reply = await put_policy(one, mesh_config(SVC1, SVC2))
        assert code == 200, reply
        both = frozenset({SVC1, SVC2})
        await eventually(lambda: admin_view(mesh) == {(both, 2)}, timeout=20)


async def test_one_signer_short_of_a_quorum_cannot_change_the_admins(tmp_path: Path) -> None:
    async with bootstrap_mesh(tmp_path, NODES) as mesh:
        one = mesh.agents["node-1"]
        await mesh.stop("node-2")
        await mesh.stop("node-3")
        code, reply = await put_policy(one, mesh_config(SVC1))
        assert code == 503, reply
        assert "did not endorse" in reply["error"] and "quorum" in reply["hint"], reply
        # The CLI says so too, hint included.
        config = tmp_path / "admins.json"
        config.write_text(json.dumps(mesh_config(SVC1)))
        host, port = one.addresses["admin"]
        applied = await trio.to_thread.run_sync(
            lambda: peermesh_cli(
                "policy", "apply", "-f", str(config), "--agent", f"http://{host}:{port}"
            )
        )
        assert applied.returncode == 1, applied.stdout
        assert "agent answered 503" in applied.stderr and "hint:" in applied.stderr
        assert one.policy.get("MeshConfig", "default") is None
        assert (one.policy.admins, one.policy.admin_epoch) == (frozenset(), 0)
        # What needs no endorsement is still written without the committee.
        code, reply = await put_policy(one, mesh_config(policy="DENY"))
        assert code == 200, reply
