"""What one compromised member cannot do to the CA, on real agents over real mTLS.

Each test is a row of the table in docs/security.md: signers sign only leaves they
built themselves, a committee update without proof never costs a signer its share,
and a revoked identity loses its open connections, its control calls and renewal.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import frost
from certs.x509 import build_leaf_tbs, leaf_serial
from peermesh.agent import Agent
from peermesh.ca import messages as m
from peermesh.ca.errors import QuorumError
from peermesh.ca.signer import SKEW_ALLOWANCE, issue_minute, leaf_template
from peermesh.ca.state import CaState, Committee
from peermesh.ca.succession import endorsement_valid
from peermesh.core.endpoint import Endpoint
from peermesh.net.admin_guard import ADMIN_HEADERS
from peermesh.net.rpc import Empty, Opaque, RpcError
from tests.support.ca import CaMesh, bootstrap_mesh, raw_method
from tests.support.meshkit import eventually

NODES = {"node-1": "frontend", "node-2": "orders", "node-3": "payments"}
TD = "mesh.test"
FRONTEND = f"spiffe://{TD}/svc/frontend"


async def ready(mesh: CaMesh) -> None:
    """node-1 reaches the others over mTLS (a dial tried before its certificate existed
    is in the pool's backoff for a moment)."""
    one = mesh.agents["node-1"]
    with trio.fail_after(30):
        for node in ("node-2", "node-3"):
            while True:
                try:
                    await one.control_client.call(endpoint(mesh.agents[node]), m.INFO, Empty())
                    break
                except RpcError:
                    await trio.sleep(0.2)


def endpoint(agent: Agent) -> Endpoint:
    host, port = agent.addresses["inbound"]
    return Endpoint(service="", host=host, port=port)


def extra_san_tbs(root: x509.Certificate, extra: list[x509.GeneralName]) -> bytes:
    """The template leaf for node-1 but with more SANs (serial derived, times on the grid)."""
    key = Ed25519PrivateKey.generate().public_key()
    not_before = issue_minute(dt.datetime.now(dt.UTC)) - SKEW_ALLOWANCE
    not_after = not_before + dt.timedelta(hours=1)
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "peermesh"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "node-1"),
                ]
            )
        )
        .issuer_name(root.subject)
        .public_key(key)
        .serial_number(
            leaf_serial(key.public_bytes_raw(), FRONTEND, "node-1", not_before, not_after)
        )
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(ski, None, None), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(FRONTEND), x509.DNSName("node-1"), *extra]
            ),
            critical=False,
        )
    )
    return builder.sign(Ed25519PrivateKey.generate(), None).tbs_certificate_bytes


async def ask_for_shares(mesh: CaMesh, tbs: bytes) -> list[str]:
    """node-1 (authenticated as svc/frontend) asks node-2 and node-3 to sign ``tbs``."""
    evil = mesh.agents["node-1"]
    signers = [mesh.agents["node-2"], mesh.agents["node-3"]]
    commitments = []
    for agent in signers:
        reply = (
            await evil.control_client.call(endpoint(agent), raw_method("ca/commit"), Opaque({}))
        ).value
        commitments.append(frost.SigningCommitments.from_wire(reply["commitments"]))
    package = frost.SigningPackage(tbs, tuple(commitments))
    reasons = []
    for agent in signers:
        with pytest.raises(RpcError) as refused:
            await evil.control_client.call(
                endpoint(agent),
                raw_method("ca/sign"),
                Opaque({"package": package.to_wire(), "auth": {"kind": "renew"}}),
            )
        assert "(403)" in str(refused.value)
        reasons.append(str(refused.value))
    return reasons


async def test_signers_sign_only_the_leaf_they_build(tmp_path: Path) -> None:
    async with bootstrap_mesh(tmp_path, NODES) as mesh:
        await ready(mesh)
        committee = mesh.agents["node-1"].ca.committee
        assert committee is not None
        root = committee.root
        released = {n: mesh.agents[n].ca.signer.shares_released for n in ("node-2", "node-3")}  # type: ignore[union-attr]
        key = Ed25519PrivateKey.generate().public_key()
        now = dt.datetime.now(dt.UTC)

        def template(**changes: object) -> bytes:
            args: dict[str, object] = {
                "identity": FRONTEND,
                "node_name": "node-1",
                "root": root,
                "issued_at": now,
                "lifetime": dt.timedelta(hours=1),
            }
            args.update(changes)
            return leaf_template(key, **args)  # type: ignore[arg-type]

        cases = {
            # Extra names the requester would like to be trusted for.
            "extra DNS SAN": (
                extra_san_tbs(root, [x509.DNSName("payments.example.com")]),
                "extension subjectAltName",
            ),
            "IP SAN": (
                extra_san_tbs(root, [x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]),
                "extension subjectAltName",
            ),
            # Another node's name: node identity is bound to the caller's certificate.
            "foreign node": (template(node_name="node-2"), "subject"),
            # Backdated by years: wins nothing, names both clocks.
            "backdated": (template(issued_at=now - dt.timedelta(days=3 * 365)), "clock skew"),
            # A coordinator whose clock runs ahead.
            "ahead": (template(issued_at=now + dt.timedelta(minutes=4)), "clock skew"),
            # Same fields, a serial the coordinator picked.
            "chosen serial": (
                build_leaf_tbs(
                    key, FRONTEND, "node-1", root,
                    issue_minute(now) - SKEW_ALLOWANCE,
                    issue_minute(now) - SKEW_ALLOWANCE + dt.timedelta(hours=1),
                    serial=12345,
                ),
                "serial number",
            ),
        }  # fmt: skip
        for case, (tbs, reason) in cases.items():
            for why in await ask_for_shares(mesh, tbs):
                assert reason in why, (case, why)
                if reason == "clock skew":
                    assert "this signer's clock says" in why and "the coordinator's" in why
        for node in ("node-2", "node-3"):
            signer = mesh.agents[node].ca.signer
            assert signer is not None and signer.shares_released == released[node]
        # The honest template is signed (the agent's own renewal builds exactly it).
        await mesh.agents["node-1"].ca.renew()
        cert = mesh.agents["node-1"].tls.certificate
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["node-1"]
        assert cert.not_valid_before_utc.second == 0


async def test_committee_update_without_proof_keeps_every_share(tmp_path: Path) -> None:
    async with bootstrap_mesh(tmp_path, NODES) as mesh:
        await ready(mesh)
        one = mesh.agents["node-1"]
        committee = one.ca.committee
        assert committee is not None
        # node-1 is a committee member's node (authorized to coordinate changes): it
        # pushes a committee that leaves the others out, bare and with a forged proof.
        alone = Committee(
            committee.epoch + 1,
            committee.trust_domain,
            committee.public,
            tuple(x for x in committee.members if x.node == "node-1"),
            committee.root_der,
        )
        forged = replace(alone, endorsement=bytes(64))
        for bogus in (alone, forged):
            for node in ("node-2", "node-3"):
                with pytest.raises(RpcError) as refused:
                    await one.control_client.call(
                        endpoint(mesh.agents[node]), m.COMMITTEE_UPDATE, m.CommitteeMessage(bogus)
                    )
                assert "(403)" in str(refused.value)
        for node in ("node-2", "node-3"):
            agent = mesh.agents[node]
            assert agent.ca.committee is not None and agent.ca.committee.epoch == committee.epoch
            assert CaState(tmp_path / node).load_share() is not None
            assert agent.ca.signer is not None
            assert agent.ca.node.refused_updates == 2
        # A real refresh is endorsed by the new shares, and every member accepts it.
        host, port = one.addresses["admin"]
        async with httpx.AsyncClient() as c:
            r = await c.post(
                f"http://{host}:{port}/v1/ca/refresh", json={}, timeout=60, headers=ADMIN_HEADERS
            )
        assert r.status_code == 200, r.text

        def endorsed() -> bool:
            return all(
                (c := a.ca.committee) is not None
                and c.epoch == committee.epoch + 1
                and endorsement_valid(c)
                for a in mesh.agents.values()
            )

        await eventually(endorsed)
        await mesh.agents["node-3"].ca.renew()


async def test_revoked_identity_loses_connections_control_calls_and_renewal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with bootstrap_mesh(tmp_path, NODES) as mesh:
        await ready(mesh)
        one, two = mesh.agents["node-1"], mesh.agents["node-2"]
        # An open mTLS connection from node-1 (svc/frontend) to node-2.
        await one.control_client.call(endpoint(two), m.INFO, Empty())
        before = [s for s in one.pool.sessions() if not s.is_closed]
        assert before
        # node-3 does not close connections on arrival, so its per-call check is what
        # stands (the race of a handshake that finished just before the revocation).
        three = mesh.agents["node-3"]
        await one.control_client.call(endpoint(three), m.INFO, Empty())
        monkeypatch.setattr(three, "_close_revoked", lambda: None)
        host, port = two.addresses["admin"]
        revoke = {
            "kind": "MeshConfig",
            "name": "default",
            "spec": {"revokedIdentities": [{"identity": FRONTEND, "reason": "stolen laptop"}]},
        }
        async with httpx.AsyncClient() as c:
            r = await c.put(
                f"http://{host}:{port}/v1/policy", json={"objects": [revoke]}, headers=ADMIN_HEADERS
            )
        assert r.status_code == 200, r.text
        await eventually(
            lambda: all(a.policy.compiled().is_revoked(FRONTEND) for a in mesh.agents.values())
        )
        # node-2 closed the open connection when the revocation arrived.
        await eventually(lambda: all(str(x.peer) != FRONTEND for x in two.inbound_tracker.h2))
        # A control call on node-1's connection to node-3 that is still open is refused.
        with pytest.raises(RpcError) as refused:
            await one.control_client.call(endpoint(three), m.INFO, Empty())
        assert "revoked" in str(refused.value)
        # And no renewal: both other signers refuse (one's own share is not enough).
        with pytest.raises(QuorumError) as no_renewal:
            await one.ca.renew()
        assert "revoked" in str(no_renewal.value)
