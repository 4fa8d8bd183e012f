"""Dev CA: certificate contents, openssl -x509_strict, file modes, CLI."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import TypeVar

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.devca import DevCAError
from certs.spiffe import IdentityError, SpiffeId, spiffe_id_from_certificate
from peermesh.ca.devca import CA_CERT_FILE, CA_KEY_FILE, CA_META_FILE, DevCA, init_dev_ca
from peermesh.cli.devca import dev_ca
from peermesh.net.identity_files import BUNDLE_FILE, CERT_FILE, KEY_FILE
from tests.support.pki import TRUST_DOMAIN, issue_custom, make_mesh_pki, mesh_ca

T = TypeVar("T", bound=x509.ExtensionType)

NOW = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _ext(cert: x509.Certificate, kind: type[T]) -> x509.Extension[T]:
    return cert.extensions.get_extension_for_class(kind)


def test_root_certificate_profile(tmp_path: Path) -> None:
    ca = init_dev_ca(tmp_path / "ca", TRUST_DOMAIN, now=NOW)
    root = ca.certificate
    assert isinstance(root.public_key(), Ed25519PublicKey)
    assert root.subject == root.issuer
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "peermesh dev root mesh.test"
    )
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "peermesh"
    bc = _ext(root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = _ext(root, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = _ext(root, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.private_key.public_key())
    san = _ext(root, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://mesh.test"]
    assert root.not_valid_before_utc == NOW - dt.timedelta(minutes=5)
    assert root.not_valid_after_utc == NOW + dt.timedelta(days=3650)
    root.verify_directly_issued_by(root)


def test_leaf_is_an_x509_svid(tmp_path: Path) -> None:
    ca = init_dev_ca(tmp_path / "ca", TRUST_DOMAIN, now=NOW)
    leaf = ca.issue("node-a", "frontend", tmp_path / "a", lifetime=dt.timedelta(hours=2), now=NOW)
    assert spiffe_id_from_certificate(leaf) == SpiffeId.for_service(TRUST_DOMAIN, "frontend")
    san = _ext(leaf, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://mesh.test/svc/frontend"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["node-a"]
    bc = _ext(leaf, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = _ext(leaf, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert not (ku.value.key_cert_sign or ku.value.crl_sign)
    assert list(_ext(leaf, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    root_ski = _ext(ca.certificate, x509.SubjectKeyIdentifier).value
    assert _ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == root_ski.digest
    assert _ext(leaf, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        leaf.public_key()
    )
    assert leaf.issuer == ca.certificate.subject
    assert leaf.not_valid_before_utc == NOW - dt.timedelta(minutes=5)
    assert leaf.not_valid_after_utc == NOW + dt.timedelta(hours=2)
    leaf.verify_directly_issued_by(ca.certificate)
    other = ca.issue("node-a", "frontend", tmp_path / "a2", now=NOW)
    assert other.serial_number != leaf.serial_number
    assert other.not_valid_after_utc == NOW + dt.timedelta(hours=24)
    # Written files: the leaf, and a bundle holding exactly the root.
    assert (tmp_path / "a" / CERT_FILE).read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    bundle = x509.load_pem_x509_certificates((tmp_path / "a" / BUNDLE_FILE).read_bytes())
    assert bundle == [ca.certificate]


def test_leaf_never_outlives_root(tmp_path: Path) -> None:
    ca = init_dev_ca(tmp_path / "ca", TRUST_DOMAIN, now=NOW, lifetime=dt.timedelta(hours=1))
    leaf = ca.issue("n", "s", tmp_path / "d", lifetime=dt.timedelta(days=7), now=NOW)
    assert leaf.not_valid_after_utc == ca.certificate.not_valid_after_utc
    with pytest.raises(DevCAError, match="root certificate expired"):
        ca.issue("n", "s", tmp_path / "d", now=NOW + dt.timedelta(hours=2))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
def test_openssl_x509_strict_accepts_root_and_leaf(tmp_path: Path) -> None:
    dirs = make_mesh_pki(tmp_path)
    ca_pem = tmp_path / "ca" / CA_CERT_FILE
    for data_dir in dirs.values():
        result = subprocess.run(
            [
                "openssl",
                "verify",
                "-x509_strict",
                "-CAfile",
                str(ca_pem),
                str(data_dir / CERT_FILE),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith(": OK")
    # And openssl agrees the key matches the certificate.
    key_pub = subprocess.run(
        ["openssl", "pkey", "-in", str(dirs["node-a"] / KEY_FILE), "-pubout"],
        capture_output=True,
        check=True,
    ).stdout
    cert_pub = subprocess.run(
        ["openssl", "x509", "-in", str(dirs["node-a"] / CERT_FILE), "-noout", "-pubkey"],
        capture_output=True,
        check=True,
    ).stdout
    assert key_pub == cert_pub


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_files_are_0600_and_public_files_0644(tmp_path: Path) -> None:
    dirs = make_mesh_pki(tmp_path)
    assert _mode(tmp_path / "ca" / CA_KEY_FILE) == 0o600
    assert _mode(tmp_path / "ca" / CA_CERT_FILE) == 0o644
    assert _mode(dirs["node-a"] / KEY_FILE) == 0o600
    assert _mode(dirs["node-a"] / CERT_FILE) == 0o644
    assert _mode(dirs["node-a"] / BUNDLE_FILE) == 0o644


def test_init_refuses_existing_ca_unless_forced(tmp_path: Path) -> None:
    first = init_dev_ca(tmp_path / "ca", TRUST_DOMAIN)
    with pytest.raises(DevCAError, match=r"already holds a dev CA.*--force"):
        init_dev_ca(tmp_path / "ca", TRUST_DOMAIN)
    second = init_dev_ca(tmp_path / "ca", "other.test", force=True)
    assert second.certificate != first.certificate
    loaded = DevCA.load(tmp_path / "ca")
    assert loaded.trust_domain == "other.test"
    assert loaded.certificate == second.certificate
    assert json.loads((tmp_path / "ca" / CA_META_FILE).read_text()) == {
        "trust_domain": "other.test"
    }


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DevCAError, match=r"invalid trust domain.*uppercase"):
        init_dev_ca(tmp_path / "x", "Mesh")
    with pytest.raises(DevCAError, match=r"not a dev CA directory.*dev-ca init"):
        DevCA.load(tmp_path / "nothing")
    with pytest.raises(DevCAError, match="timezone-aware"):
        init_dev_ca(tmp_path / "naive", TRUST_DOMAIN, now=dt.datetime(2030, 1, 1))
    ca = init_dev_ca(tmp_path / "ca", TRUST_DOMAIN)
    with pytest.raises(DevCAError, match="invalid service name"):
        ca.issue("node-a", "Bad Service", tmp_path / "d")
    with pytest.raises(DevCAError, match="invalid node name"):
        ca.issue("node_a", "svc", tmp_path / "d")
    with pytest.raises(DevCAError, match="lifetime must be positive"):
        ca.issue("node-a", "svc", tmp_path / "d", lifetime=dt.timedelta(0))
    assert not (tmp_path / "d").exists()
    # A key that does not belong to the certificate is caught at load time.
    other = init_dev_ca(tmp_path / "other", TRUST_DOMAIN)
    (tmp_path / "ca" / CA_KEY_FILE).write_bytes((tmp_path / "other" / CA_KEY_FILE).read_bytes())
    del other
    with pytest.raises(DevCAError, match="does not match"):
        DevCA.load(tmp_path / "ca")


def test_spiffe_id_from_certificate_requires_exactly_one_uri_san(tmp_path: Path) -> None:
    make_mesh_pki(tmp_path)
    ca = mesh_ca(tmp_path)
    two = issue_custom(
        ca,
        tmp_path / "two",
        [
            x509.UniformResourceIdentifier("spiffe://mesh.test/svc/a"),
            x509.UniformResourceIdentifier("spiffe://mesh.test/svc/b"),
        ],
    )
    with pytest.raises(
        IdentityError,
        match=re.escape("certificate has 2 URI SANs; an X.509-SVID carries exactly one"),
    ):
        spiffe_id_from_certificate(two)
    with pytest.raises(IdentityError, match="no subjectAltName"):
        spiffe_id_from_certificate(issue_custom(ca, tmp_path / "none", []))
    bad = issue_custom(ca, tmp_path / "bad", [x509.UniformResourceIdentifier("spiffe://MESH/x")])
    with pytest.raises(IdentityError, match=r"not a valid SPIFFE ID.*uppercase"):
        spiffe_id_from_certificate(bad)


# -- CLI ----------------------------------------------------------------------------------


def test_cli_init_and_issue(tmp_path: Path) -> None:
    runner = CliRunner()
    ca_dir, data_dir = tmp_path / "ca", tmp_path / "node-a"
    result = runner.invoke(dev_ca, ["init", "--dir", str(ca_dir), "--trust-domain", "mesh.test"])
    assert result.exit_code == 0, result.output
    assert "ca.key" in result.output and "0600" in result.output
    result = runner.invoke(
        dev_ca,
        [
            "issue",
            "--ca-dir",
            str(ca_dir),
            "--node",
            "node-a",
            "--service",
            "frontend",
            "--data-dir",
            str(data_dir),
            "--hours",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "spiffe://mesh.test/svc/frontend" in result.output
    cert = x509.load_pem_x509_certificate((data_dir / CERT_FILE).read_bytes())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == dt.timedelta(hours=2, minutes=5)


def test_cli_errors_are_click_exceptions(tmp_path: Path) -> None:
    runner = CliRunner()
    ca_dir = tmp_path / "ca"
    assert (
        runner.invoke(dev_ca, ["init", "--dir", str(ca_dir), "--trust-domain", "t"]).exit_code == 0
    )
    again = runner.invoke(dev_ca, ["init", "--dir", str(ca_dir), "--trust-domain", "t"])
    assert again.exit_code == 1
    assert "Error: " in again.output and "--force" in again.output
    bad = runner.invoke(
        dev_ca,
        ["issue", "--ca-dir", str(ca_dir), "--node", "n", "--service", "NO",
         "--data-dir", str(tmp_path / "d")],
    )  # fmt: skip
    assert bad.exit_code == 1
    assert "invalid service name" in bad.output
    missing = runner.invoke(
        dev_ca,
        ["issue", "--ca-dir", str(tmp_path / "none"), "--node", "n", "--service", "s",
         "--data-dir", str(tmp_path / "d")],
    )  # fmt: skip
    assert missing.exit_code == 1
    assert "not a dev CA directory" in missing.output
