"""Signers never trust the coordinator, and a cheating signer is caught, named and replaced."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs import frost
from certs.x509 import assemble_certificate, certificate_signature_valid
from peermesh.ca.issuance import threshold_sign
from peermesh.ca.signer import leaf_template
from peermesh.core.endpoint import Endpoint
from peermesh.net.rpc import Opaque, RpcError
from tests.support.ca import bootstrap_mesh, raw_method

NODES = {"node-1": "frontend", "node-2": "orders", "node-3": "payments"}
TD = "mesh.test"


def _crafted_tbs(root: x509.Certificate, *, ca: bool, spiffe: str, lifetime: dt.timedelta) -> bytes:
    """A TBS as a malicious coordinator would build it (any extensions it likes)."""
    key = Ed25519PrivateKey.generate()
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "evil")]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier(ski, None, None), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), critical=False
        )
        .sign(Ed25519PrivateKey.generate(), None)
    )
    return cert.tbs_certificate_bytes


@pytest.mark.parametrize(
    ("case", "ca", "spiffe", "lifetime", "reason"),
    [
        ("ca-true", True, f"spiffe://{TD}/svc/frontend", dt.timedelta(hours=1), "CA:TRUE"),
        ("foreign-id", False, f"spiffe://{TD}/svc/orders", dt.timedelta(hours=1),
         "is not the authenticated identity"),
        ("too-long", False, f"spiffe://{TD}/svc/frontend", dt.timedelta(days=30),
         "exceeds the maximum"),
    ],
)  # fmt: skip
async def test_malicious_coordinator_gets_no_share(
    tmp_path: Path, case: str, ca: bool, spiffe: str, lifetime: dt.timedelta, reason: str
) -> None:
    async with bootstrap_mesh(tmp_path, NODES) as mesh:
        evil = mesh.agents["node-1"]  # authenticated as svc/frontend over mTLS
        committee = evil.ca.committee
        assert committee is not None
        tbs = _crafted_tbs(committee.root, ca=ca, spiffe=spiffe, lifetime=lifetime)
        signers = ["node-2", "node-3"]
        endpoints = {
            n: Endpoint(service="", host=mesh.agents[n].addresses["inbound"][0],
                        port=mesh.agents[n].addresses["inbound"][1])
            for n in signers
        }  # fmt: skip
        released = {n: mesh.agents[n].ca.signer.shares_released for n in signers}  # type: ignore[union-attr]
        commitments = []
        for node in signers:
            reply = (
                await evil.control_client.call(endpoints[node], raw_method("ca/commit"), Opaque({}))
            ).value
            commitments.append(frost.SigningCommitments.from_wire(reply["commitments"]))
        package = frost.SigningPackage(tbs, tuple(commitments))
        for kind in ("renew", "bootstrap", "root"):
            for node in signers:
                with pytest.raises(RpcError) as refused:
                    await evil.control_client.call(
                        endpoints[node],
                        raw_method("ca/sign"),
                        Opaque(
                            {"package": package.to_wire(), "auth": {"kind": kind, "node": "node-2"}}
                        ),
                    )
                assert "(403)" in str(refused.value) and "refuses to sign" in str(refused.value)
                if kind == "renew":
                    assert reason in str(refused.value), str(refused.value)
        for node in signers:
            signer = mesh.agents[node].ca.signer
            assert signer is not None and signer.shares_released == released[node], case
            assert signer.refusals >= 1


async def test_corrupted_share_is_named_and_replaced(tmp_path: Path, caplog) -> None:
    async with bootstrap_mesh(tmp_path, NODES) as mesh:
        cheat = mesh.agents["node-2"].ca.signer
        assert cheat is not None
        honest_sign = cheat.sign_leaf

        def corrupt(*args: object, **kwargs: object) -> frost.SignatureShare:
            share = honest_sign(*args, **kwargs)  # type: ignore[arg-type]
            return frost.SignatureShare(share.identifier, share.share + share.share)

        cheat.sign_leaf = corrupt  # type: ignore[method-assign]
        coordinator = mesh.agents["node-1"]
        committee = coordinator.ca.committee
        assert committee is not None
        key = Ed25519PrivateKey.generate()
        tbs = leaf_template(
            key.public_key(), identity=f"spiffe://{TD}/svc/frontend", node_name="node-1",
            root=committee.root, issued_at=dt.datetime.now(dt.UTC),
            lifetime=dt.timedelta(hours=1),
        )  # fmt: skip
        result = await threshold_sign(
            tbs, committee, coordinator.ca.mtls_signer_call, {"kind": "renew"},
            prefer=["node-2", "node-1"],
        )  # fmt: skip
        assert result.excluded == {"node-2": "returned an invalid signature share"}
        assert result.signers == ["node-1", "node-3"]
        assert result.attempts == 2
        cert = assemble_certificate(tbs, result.signature)
        assert certificate_signature_valid(cert, committee.public.group_public_key.to_bytes())
        assert any(
            "node-2 returned an invalid signature share" in r.message for r in caplog.records
        )
        # The agent's own renewal path also gets through while the cheat stays in the committee.
        for _ in range(3):
            await coordinator.ca.renew()
        assert coordinator.ca.renewals == 3
