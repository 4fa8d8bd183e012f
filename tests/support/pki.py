"""Throwaway mesh PKI for tests: a dev CA, agent data dirs, and deliberately bad identities.

Usage::

    from tests.support.pki import make_mesh_pki, make_foreign_root_dir, raw_client_context

    dirs = make_mesh_pki(tmp_path)                  # {"node-a": Path, "node-b": Path}
    tls = MeshTls(dirs["node-a"], "mesh.test")

Layout under ``tmp_path``: ``ca/`` (the mesh root) and one data dir per node, named
after the node. The bad-identity helpers need ``make_mesh_pki`` to have run first.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.devca import pem_bundle
from peermesh.ca.devca import DevCA, init_dev_ca
from peermesh.core.durable import atomic_write
from peermesh.net.identity_files import BUNDLE_FILE, CERT_FILE, KEY_FILE, install_identity
from peermesh.net.tls import build_contexts

TRUST_DOMAIN = "mesh.test"
DEFAULT_NODES: Mapping[str, str] = {"node-a": "frontend", "node-b": "orders"}
CA_DIR_NAME = "ca"


def ca_dir(tmp_path: Path) -> Path:
    """Where :func:`make_mesh_pki` puts the mesh root."""
    return tmp_path / CA_DIR_NAME


def mesh_ca(tmp_path: Path) -> DevCA:
    """The mesh root made by :func:`make_mesh_pki` (to issue more or rotated certs)."""
    return DevCA.load(ca_dir(tmp_path))


def make_mesh_pki(
    tmp_path: Path,
    trust_domain: str = TRUST_DOMAIN,
    nodes: Mapping[str, str] | None = None,
    *,
    lifetime: dt.timedelta = dt.timedelta(hours=24),
) -> dict[str, Path]:
    """Create a dev CA in ``tmp_path/ca`` and a data dir per node; return node -> data dir.

    ``nodes`` maps node name -> service name (default: node-a=frontend, node-b=orders).
    """
    nodes = DEFAULT_NODES if nodes is None else nodes
    ca = init_dev_ca(ca_dir(tmp_path), trust_domain)
    dirs: dict[str, Path] = {}
    for node, service in nodes.items():
        data_dir = tmp_path / node
        ca.issue(node, service, data_dir, lifetime=lifetime)
        dirs[node] = data_dir
    return dirs


def make_no_cert_dir(tmp_path: Path, name: str = "no-cert") -> Path:
    """A data dir with only the mesh bundle: a client that trusts us but has no cert."""
    data_dir = tmp_path / name
    atomic_write(data_dir / BUNDLE_FILE, pem_bundle([mesh_ca(tmp_path).certificate]))
    return data_dir


def make_foreign_root_dir(
    tmp_path: Path,
    name: str = "foreign",
    service: str = "intruder",
    trust_domain: str = TRUST_DOMAIN,
) -> Path:
    """A valid-looking identity (same trust domain!) signed by a different root.

    Its bundle trusts both roots, so as a client it accepts the mesh server and it is the
    server that must refuse it.
    """
    other = init_dev_ca(tmp_path / f"{name}-ca", trust_domain)
    data_dir = tmp_path / name
    other.issue(name, service, data_dir)
    atomic_write(
        data_dir / BUNDLE_FILE,
        pem_bundle([other.certificate, mesh_ca(tmp_path).certificate]),
    )
    return data_dir


def issue_custom(
    ca: DevCA,
    data_dir: Path,
    sans: Sequence[x509.GeneralName],
    *,
    ca_flag: bool = False,
    lifetime: dt.timedelta = dt.timedelta(hours=1),
) -> x509.Certificate:
    """Issue a leaf with arbitrary SANs (no SPIFFE checks) from ``ca`` into ``data_dir``."""
    key = Ed25519PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    root_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "custom")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca_flag,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = builder.sign(ca.private_key, None)
    install_identity(data_dir, cert, key, [ca.certificate])
    return cert


def make_two_uri_san_dir(
    tmp_path: Path,
    name: str = "two-sans",
    services: tuple[str, str] = ("frontend", "admin"),
    trust_domain: str = TRUST_DOMAIN,
) -> Path:
    """A cert signed by the mesh root but with two URI SANs (not a valid X.509-SVID)."""
    data_dir = tmp_path / name
    issue_custom(
        mesh_ca(tmp_path),
        data_dir,
        [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}/svc/{s}") for s in services],
    )
    return data_dir


def raw_contexts(data_dir: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) mesh contexts from ``data_dir`` without MeshTls's identity checks.

    For driving bad identities at a real server; presents no certificate when the dir
    has no cert.pem.
    """
    bundle = (data_dir / BUNDLE_FILE).read_text()
    if (data_dir / CERT_FILE).exists():
        return build_contexts(data_dir / CERT_FILE, data_dir / KEY_FILE, bundle)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.set_alpn_protocols(["h2"])
        ctx.load_verify_locations(cadata=bundle)
    return server, client


def raw_client_context(data_dir: Path) -> ssl.SSLContext:
    """Client side of :func:`raw_contexts`."""
    return raw_contexts(data_dir)[1]
