"""Threshold-signed X.509: root and leaf from a 3-of-5 DKG committee; the signers' TBS policy."""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import frost
from certs.dkg import DkgParticipant, Roster
from certs.frost import MemoryNonceStore, PublicKeyPackage, SigningKeyShare, SigningPackage
from certs.x509 import (
    TbsRefused,
    assemble_certificate,
    build_leaf_tbs,
    build_root_tbs,
    certificate_signature_valid,
    check_leaf_tbs,
)

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
TRUST_DOMAIN = "mesh.test"
SPIFFE_ID = "spiffe://mesh.test/svc/orders"
DAY = dt.timedelta(hours=24)

openssl = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(openssl is None, reason="the openssl binary is not installed")


@dataclass
class Committee:
    keys: dict[int, SigningKeyShare]
    public: PublicKeyPackage

    def sign(self, message: bytes, signers: Sequence[int]) -> bytes:
        """One FROST pass, as the agents will run it: commit, check, sign, aggregate."""
        stores = {i: MemoryNonceStore() for i in signers}
        package = SigningPackage(
            message, tuple(frost.commit(self.keys[i], stores[i]) for i in signers)
        )
        shares = [frost.sign(self.keys[i], package, stores[i]) for i in signers]
        return frost.aggregate(package, shares, self.public)


@dataclass
class Pki:
    committee: Committee
    root: cx509.Certificate
    root_tbs: bytes
    leaf: cx509.Certificate
    leaf_tbs: bytes
    leaf_key: Ed25519PrivateKey


@pytest.fixture(scope="module")
def pki() -> Pki:
    idk = {i: Ed25519PrivateKey.generate() for i in range(1, 6)}
    roster = Roster.for_dkg(
        secrets.token_bytes(32), 3, {i: k.public_key().public_bytes_raw() for i, k in idk.items()}
    )
    machines = {i: DkgParticipant(roster, i, k) for i, k in idk.items()}
    queue = [m for p in machines.values() for m in p.start()]
    while queue:
        message = queue.pop(0)
        for i, p in machines.items():
            if i != message.sender:
                queue.extend(p.receive(message))
    outputs = {i: p.result() for i, p in machines.items()}
    committee = Committee({i: o.key_share for i, o in outputs.items()}, outputs[1].public)
    group_key = committee.public.group_public_key.to_bytes()

    root_tbs = build_root_tbs(group_key, TRUST_DOMAIN, NOW - DAY, NOW + 3650 * DAY)
    root = assemble_certificate(root_tbs, committee.sign(root_tbs, [1, 2, 4]))

    leaf_key = Ed25519PrivateKey.generate()
    leaf_tbs = build_leaf_tbs(
        leaf_key.public_key(), SPIFFE_ID, "node-a", root, NOW - dt.timedelta(minutes=5), NOW + DAY
    )
    check_leaf_tbs(leaf_tbs, root=root, expected_spiffe_id=SPIFFE_ID, max_lifetime=2 * DAY, now=NOW)
    leaf = assemble_certificate(leaf_tbs, committee.sign(leaf_tbs, [2, 3, 5]))
    return Pki(committee, root, root_tbs, leaf, leaf_tbs, leaf_key)


def _openssl_verify(
    tmp_path: Path, root: cx509.Certificate, *args: str
) -> subprocess.CompletedProcess[str]:
    assert openssl is not None
    (tmp_path / "root.pem").write_bytes(root.public_bytes(Encoding.PEM))
    return subprocess.run(
        [
            openssl,
            "verify",
            "-x509_strict",
            "-attime",
            str(int(NOW.timestamp())),
            "-CAfile",
            "root.pem",
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


# --------------------------------------------------------------------------------------
# Certificates produced by a FROST signing pass
# --------------------------------------------------------------------------------------


@needs_openssl
def test_root_and_leaf_pass_openssl_x509_strict(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "leaf.pem").write_bytes(pki.leaf.public_bytes(Encoding.PEM))
    root_result = _openssl_verify(tmp_path, pki.root, "-check_ss_sig", "root.pem")
    assert root_result.returncode == 0, root_result.stdout + root_result.stderr
    leaf_result = _openssl_verify(tmp_path, pki.root, "leaf.pem")
    assert leaf_result.returncode == 0, leaf_result.stdout + leaf_result.stderr
    assert "leaf.pem: OK" in leaf_result.stdout


@needs_openssl
def test_openssl_rejects_a_spliced_in_bad_signature(pki: Pki, tmp_path: Path) -> None:
    bad = bytearray(pki.leaf.signature)
    bad[0] ^= 1
    forged = assemble_certificate(pki.leaf_tbs, bytes(bad))
    (tmp_path / "forged.pem").write_bytes(forged.public_bytes(Encoding.PEM))
    result = _openssl_verify(tmp_path, pki.root, "forged.pem")
    assert result.returncode != 0
    assert "signature failure" in result.stdout + result.stderr


def test_signatures_verify_under_the_group_key(pki: Pki) -> None:
    group = pki.committee.public.group_public_key.to_bytes()
    Ed25519PublicKey.from_public_bytes(group).verify(pki.root.signature, pki.root_tbs)
    Ed25519PublicKey.from_public_bytes(group).verify(pki.leaf.signature, pki.leaf_tbs)
    assert pki.root.tbs_certificate_bytes == pki.root_tbs
    assert certificate_signature_valid(pki.leaf, group)
    assert not certificate_signature_valid(pki.leaf, pki.leaf_key.public_key().public_bytes_raw())


def test_root_profile(pki: Pki) -> None:
    root = pki.root
    assert root.subject == root.issuer
    cn = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "peermesh root mesh.test"
    assert root.public_key().public_bytes_raw() == pki.committee.public.group_public_key.to_bytes()  # type: ignore[union-attr]
    bc = root.extensions.get_extension_for_class(cx509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = root.extensions.get_extension_for_class(cx509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    root.extensions.get_extension_for_class(cx509.SubjectKeyIdentifier)


def test_leaf_profile(pki: Pki) -> None:
    leaf = pki.leaf
    assert leaf.issuer == pki.root.subject
    ku = leaf.extensions.get_extension_for_class(cx509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(cx509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    san = leaf.extensions.get_extension_for_class(cx509.SubjectAlternativeName).value
    assert san.get_values_for_type(cx509.UniformResourceIdentifier) == [SPIFFE_ID]
    assert san.get_values_for_type(cx509.DNSName) == ["node-a"]
    aki = leaf.extensions.get_extension_for_class(cx509.AuthorityKeyIdentifier).value
    root_ski = pki.root.extensions.get_extension_for_class(cx509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest


def test_assemble_refuses_bad_inputs(pki: Pki) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        assemble_certificate(pki.leaf_tbs, b"\x00" * 63)
    with pytest.raises(ValueError):
        assemble_certificate(pki.leaf_tbs[:-3], bytes(64))


# --------------------------------------------------------------------------------------
# check_leaf_tbs: the checks every signer runs before releasing its share
# --------------------------------------------------------------------------------------


def _ku(*, cert_sign: bool = False, crl_sign: bool = False) -> cx509.KeyUsage:
    return cx509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _custom_tbs(
    root: cx509.Certificate,
    *,
    ca: bool | None = False,
    key_usage: cx509.KeyUsage | None = None,
    uris: Sequence[str] = (SPIFFE_ID,),
    not_before: dt.datetime = NOW,
    lifetime: dt.timedelta = DAY,
    issuer: cx509.Name | None = None,
    aki: bytes | None = None,
    subject_key: Callable[[], object] = Ed25519PrivateKey.generate,
) -> bytes:
    """A TBS a (malicious) coordinator might submit, built directly with ``cryptography``."""
    root_ski = root.extensions.get_extension_for_class(cx509.SubjectKeyIdentifier).value.digest
    key = subject_key()
    builder = (
        cx509.CertificateBuilder()
        .subject_name(cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(issuer if issuer is not None else root.subject)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(cx509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(key_usage or _ku(), critical=True)
        .add_extension(
            cx509.AuthorityKeyIdentifier(aki if aki is not None else root_ski, None, None),
            critical=False,
        )
        .add_extension(
            cx509.SubjectAlternativeName(
                [*(cx509.UniformResourceIdentifier(u) for u in uris), cx509.DNSName("node-a")]
            ),
            critical=False,
        )
    )
    if ca is not None:
        builder = builder.add_extension(
            cx509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
    return builder.sign(Ed25519PrivateKey.generate(), None).tbs_certificate_bytes


def _check(pki: Pki, tbs: bytes) -> None:
    check_leaf_tbs(tbs, root=pki.root, expected_spiffe_id=SPIFFE_ID, max_lifetime=2 * DAY, now=NOW)


def test_check_accepts_a_proper_leaf(pki: Pki) -> None:
    _check(pki, pki.leaf_tbs)
    _check(pki, _custom_tbs(pki.root))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"ca": True}, "BasicConstraints asks for CA:TRUE"),
        ({"ca": None}, "BasicConstraints extension is missing"),
        ({"key_usage": _ku(cert_sign=True)}, "KeyUsage includes keyCertSign"),
        ({"key_usage": _ku(crl_sign=True)}, "KeyUsage includes cRLSign"),
        (
            {"uris": ["spiffe://mesh.test/svc/payments"]},
            "URI SAN 'spiffe://mesh.test/svc/payments' is not the authenticated identity "
            "'spiffe://mesh.test/svc/orders'",
        ),
        (
            {"uris": [SPIFFE_ID, "spiffe://mesh.test/svc/payments"]},
            "expected exactly one URI SAN, found 2",
        ),
        ({"uris": []}, "expected exactly one URI SAN, found 0"),
        ({"lifetime": 3 * DAY}, "lifetime 3 days, 0:00:00 exceeds the maximum 2 days, 0:00:00"),
        (
            {"not_before": NOW + dt.timedelta(hours=1)},
            "not_before 2030-01-01T13:00:00+00:00 is more than 0:05:00 in the future",
        ),
        (
            {"issuer": cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "evil root")])},
            "issuer 'CN=evil root' is not the root subject 'O=peermesh,CN=peermesh root mesh.test'",
        ),
        (
            {"aki": b"\x01" * 20},
            "AuthorityKeyIdentifier does not match the root's SubjectKeyIdentifier",
        ),
        (
            {"subject_key": lambda: ec.generate_private_key(ec.SECP256R1())},
            "subject public key is not Ed25519",
        ),
    ],
)
def test_check_refuses_with_the_exact_reason(
    pki: Pki, overrides: dict[str, object], reason: str
) -> None:
    tbs = _custom_tbs(pki.root, **overrides)  # type: ignore[arg-type]
    with pytest.raises(TbsRefused) as err:
        _check(pki, tbs)
    assert str(err.value) == reason


def test_check_refuses_garbage_and_foreign_signature_algorithms(pki: Pki) -> None:
    with pytest.raises(TbsRefused, match=r"^not a TBSCertificate: "):
        _check(pki, b"\x30\x03\x02\x01\x01")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    from cryptography.hazmat.primitives import hashes

    ecdsa_tbs = (
        cx509.CertificateBuilder()
        .subject_name(cx509.Name([]))
        .issuer_name(pki.root.subject)
        .public_key(Ed25519PrivateKey.generate().public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + DAY)
        .sign(ec_key, hashes.SHA256())
        .tbs_certificate_bytes
    )
    with pytest.raises(TbsRefused) as err:
        _check(pki, ecdsa_tbs)
    assert str(err.value) == "signature algorithm is not Ed25519"
    with pytest.raises(ValueError, match="Ed25519 signature algorithm"):
        assemble_certificate(ecdsa_tbs, bytes(64))
