"""Committee changes: enrol a member by repair, refresh without a stopped signer, status CLI;
each authority change (token, enrolment, refresh, admin set) in policy history with its
author, seen from another agent."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.ed25519_group import Point, Scalar
from certs.x509 import assemble_certificate, certificate_signature_valid
from peermesh.ca.issuance import threshold_sign
from peermesh.ca.signer import leaf_template
from peermesh.ca.state import CaState
from peermesh.net.admin_guard import ADMIN_HEADERS
from tests.support.ca import bootstrap_mesh, reconstruct_root_secret

NODES = {"node-1": "frontend", "node-2": "orders", "node-3": "payments"}
#: node-1 coordinates every change below, so every record names its identity.
AUTHOR = "spiffe://mesh.test/svc/frontend"


async def _post(agent: object, path: str, body: dict[str, object]) -> dict[str, object]:
    host, port = agent.addresses["admin"]  # type: ignore[attr-defined]
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(f"http://{host}:{port}{path}", json=body, headers=ADMIN_HEADERS)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _history(agent: object, key: str) -> list[dict[str, Any]]:
    """``GET /v1/policy/KEY/history`` on ``agent`` once it has the object (replication)."""
    host, port = agent.addresses["admin"]  # type: ignore[attr-defined]
    async with httpx.AsyncClient(timeout=10) as client:
        with trio.fail_after(30):
            while True:
                r = await client.get(f"http://{host}:{port}/v1/policy/{key}/history")
                if r.status_code == 200:
                    return list(r.json()["history"])
                assert r.status_code == 404, r.text
                await trio.sleep(0.05)


async def test_enroll_refresh_and_status(tmp_path: Path) -> None:
    async with bootstrap_mesh(tmp_path, NODES) as mesh:
        one = mesh.agents["node-1"]
        minted = await _post(one, "/v1/ca/token", {"service": "audit", "uses": 1})
        token = minted["token"]
        two = mesh.agents["node-2"]
        [entry] = await _history(two, f"JoinToken/{minted['id']}")
        assert entry["author"] == AUTHOR and entry["node"] == "node-1" and entry["won"]
        four = await mesh.join("node-4", "audit", "node-1", str(token))
        with trio.fail_after(30):
            await four.ca.identity_ready.wait()
        assert four.ca.signer is None
        with trio.fail_after(20):
            while one.membership.swim.member("node-4") is None:  # type: ignore[union-attr]  # noqa: ASYNC110
                await trio.sleep(0.05)
        before = one.ca.committee
        assert before is not None
        secret = reconstruct_root_secret([tmp_path / "node-1", tmp_path / "node-2"])

        # Enrol node-4: it gets share 4 by repair; nobody learns it; the group key stays.
        enrolled = await _post(one, "/v1/ca/enroll", {"node": "node-4"})
        assert enrolled["identifier"] == 4 and enrolled["epoch"] == 2
        assert enrolled["record"] == "CommitteeChange/epoch-2"
        [entry] = await _history(two, "CommitteeChange/epoch-2")
        assert entry["author"] == AUTHOR and entry["node"] == "node-1" and entry["time"] > 0
        record = two.policy.get("CommitteeChange", "epoch-2")
        assert record is not None and record.spec.added == ("node-4",)
        assert record.spec.members == ("node-1", "node-2", "node-3", "node-4")
        assert four.ca.signer is not None and four.ca.signer.identifier == 4
        for agent in mesh.agents.values():
            c = agent.ca.committee
            assert c is not None and c.epoch == 2 and len(c.members) == 4
            assert c.public.group_public_key == before.public.group_public_key
        assert secret == reconstruct_root_secret([tmp_path / "node-4", tmp_path / "node-3"])
        committee = four.ca.committee
        assert committee is not None
        key = Ed25519PrivateKey.generate()
        tbs = leaf_template(
            key.public_key(), identity="spiffe://mesh.test/svc/audit", node_name="node-4",
            root=committee.root, issued_at=dt.datetime.now(dt.UTC),
            lifetime=dt.timedelta(hours=1),
        )  # fmt: skip
        result = await threshold_sign(
            tbs, committee, four.ca.mtls_signer_call, {"kind": "renew"}, prefer=["node-4"]
        )
        assert "node-4" in result.signers
        assert certificate_signature_valid(
            assemble_certificate(tbs, result.signature),
            committee.public.group_public_key.to_bytes(),
        )

        # Refresh while node-3 is down: it is removed, old shares stop combining.
        old_three = CaState(tmp_path / "node-3").load_share()
        assert old_three is not None
        await mesh.stop("node-3")
        refreshed = await _post(one, "/v1/ca/refresh", {})
        assert refreshed["removed"] == ["node-3"] and refreshed["epoch"] == 3
        assert sorted(refreshed["members"]) == ["node-1", "node-2", "node-4"]  # type: ignore[arg-type]
        [entry] = await _history(four, "CommitteeChange/epoch-3")
        assert entry["author"] == AUTHOR and entry["node"] == "node-1"
        record = four.policy.get("CommitteeChange", "epoch-3")
        assert record is not None and record.spec.change == "Refresh"
        assert record.spec.removed == ("node-3",) and record.spec.threshold == 2
        assert secret == reconstruct_root_secret([tmp_path / "node-1", tmp_path / "node-4"])
        new_one = CaState(tmp_path / "node-1").load_share()
        assert new_one is not None
        from certs.frost import lagrange_coefficient

        mixed = (
            lagrange_coefficient([1, 3], 1) * new_one[1].secret
            + lagrange_coefficient([1, 3], 3) * old_three[1].secret
        )
        assert mixed.to_bytes() != secret
        assert Point.base_mul(Scalar.from_bytes(secret)) == before.public.group_public_key
        # Renewal still works with the refreshed committee, from a non-refresher.
        await mesh.agents["node-2"].ca.renew()

        # The CLI shows committee, threshold, reachable signers, root and our expiry.
        host, port = one.addresses["admin"]
        proc = await trio.run_process(
            [sys.executable, "-m", "peermesh", "ca", "status", "--agent",
             f"http://{host}:{port}", "-o", "json"],
            capture_stdout=True,
        )  # fmt: skip
        status = json.loads(proc.stdout)
        assert status["threshold"] == 2 and status["epoch"] == 3
        assert status["reachable_signers"] == 3
        assert {m["node"] for m in status["committee"]} == {"node-1", "node-2", "node-4"}
        assert len(status["root_fingerprint"]) == 64 and status["root_not_after"]
        assert status["certificate_not_after"]
        table = await trio.run_process(
            [sys.executable, "-m", "peermesh", "ca", "status", "--agent", f"http://{host}:{port}"],
            capture_stdout=True,
        )
        assert b"node-4" in table.stdout and b"root_fingerprint" in table.stdout

        # An admin set is a MeshConfig version: its history names who set it.
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.put(
                f"http://{host}:{port}/v1/policy",
                json={"objects": [{"kind": "MeshConfig", "name": "default",
                                   "spec": {"admins": [AUTHOR]}}]},
                headers=ADMIN_HEADERS,
            )  # fmt: skip
            assert r.status_code == 200, r.text
            # The records are the CA's alone: an admin cannot forge or erase one.
            forged = {
                "kind": "CommitteeChange",
                "name": "epoch-9",
                "spec": {
                    "change": "Enroll",
                    "epoch": 9,
                    "threshold": 2,
                    "members": ["node-1", "node-2"],
                },
            }
            r = await client.put(f"http://{host}:{port}/v1/policy", json={"objects": [forged]},
                                 headers=ADMIN_HEADERS)  # fmt: skip
            assert r.status_code == 400 and "written only by the CA" in r.text, r.text
            r = await client.delete(f"http://{host}:{port}/v1/policy/CommitteeChange/epoch-2",
                                    headers=ADMIN_HEADERS)  # fmt: skip
            assert r.status_code == 400 and "written only by the CA" in r.text, r.text
        [entry] = await _history(four, "MeshConfig/default")
        assert entry["author"] == AUTHOR and entry["node"] == "node-1"
        four_host, four_port = four.addresses["admin"]
        shown = await trio.run_process(
            [sys.executable, "-m", "peermesh", "policy", "history", "CommitteeChange/epoch-3",
             "--agent", f"http://{four_host}:{four_port}"],
            capture_stdout=True, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert AUTHOR.encode() in shown.stdout and b"node-1" in shown.stdout
