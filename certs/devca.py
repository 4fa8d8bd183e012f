"""Single-key development CA: an Ed25519 root and X.509-SVID leaf certificates.

For tests and quick experiments only: the whole root secret sits in ``ca.key``. The
production root is threshold-shared (``certs/frost.py``) but produces the same kind of
certificates and the same agent data-dir layout, so the TLS layer does not care which
CA issued a certificate. :func:`install_identity` is the one place that writes an
agent's data dir; any CA should use it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.spiffe import (
    InvalidSpiffeId,
    SpiffeId,
    validate_node_name,
    validate_service_name,
    validate_trust_domain,
)
from peermesh.core.durable import PUBLIC_MODE, SECRET_MODE, atomic_write

__all__ = [
    "BUNDLE_FILE",
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CA_META_FILE",
    "CERT_FILE",
    "CLOCK_SKEW",
    "DEFAULT_LEAF_LIFETIME",
    "DEFAULT_ROOT_LIFETIME",
    "KEY_FILE",
    "DevCA",
    "DevCAError",
    "build_leaf",
    "build_root",
    "init_dev_ca",
    "install_identity",
    "pem_bundle",
]

# Agent data dir layout (read by peermesh.net.tls).
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
BUNDLE_FILE = "bundle.pem"
# Dev CA dir layout.
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_META_FILE = "ca.json"

DEFAULT_ROOT_LIFETIME = dt.timedelta(days=3650)
DEFAULT_LEAF_LIFETIME = dt.timedelta(hours=24)
# Back-date not_before so a peer whose clock runs a little behind still accepts the cert.
CLOCK_SKEW = dt.timedelta(minutes=5)


class DevCAError(Exception):
    """The dev CA cannot do what was asked; the message says why and what to do."""


def _utcnow(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise DevCAError("'now' must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return now.astimezone(dt.UTC)


def _ski(key: Ed25519PrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def build_root(
    key: Ed25519PrivateKey,
    trust_domain: str,
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = DEFAULT_ROOT_LIFETIME,
) -> x509.Certificate:
    """Self-sign a root CA certificate for ``trust_domain`` that passes ``-x509_strict``."""
    validate_trust_domain(trust_domain)
    now = _utcnow(now)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"peermesh dev root {trust_domain}"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "peermesh"),
        ]
    )
    ski = _ski(key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(ski.digest, None, None),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(str(SpiffeId.for_trust_domain(trust_domain)))]
            ),
            critical=False,
        )
    )
    return builder.sign(key, None)


def build_leaf(
    *,
    issuer: x509.Certificate,
    issuer_key: Ed25519PrivateKey,
    leaf_key: Ed25519PrivateKey,
    spiffe_id: SpiffeId,
    node: str,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME,
) -> x509.Certificate:
    """Sign an X.509-SVID: one URI SAN (the SPIFFE ID), the node as DNS SAN, CA:FALSE.

    The leaf never outlives its issuer: ``not_after`` is clamped to the issuer's.
    """
    validate_node_name(node)
    now = _utcnow(now)
    if lifetime <= dt.timedelta(0):
        raise DevCAError(f"certificate lifetime must be positive, got {lifetime}")
    not_after = min(now + lifetime, issuer.not_valid_after_utc)
    if not_after <= now:
        raise DevCAError(
            f"the root certificate expired at {issuer.not_valid_after_utc.isoformat()}; "
            "create a new dev CA with 'peermesh dev-ca init --force'"
        )
    try:
        issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise DevCAError("the root certificate has no subjectKeyIdentifier") from None
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "peermesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, (spiffe_id.service or node)[:64]),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
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
        .add_extension(_ski(leaf_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(str(spiffe_id)), x509.DNSName(node)]
            ),
            critical=False,
        )
    )
    return builder.sign(issuer_key, None)


def pem_bundle(certs: Sequence[x509.Certificate]) -> bytes:
    """Concatenate certificates as PEM (the trust bundle format)."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def install_identity(
    data_dir: Path,
    cert: x509.Certificate,
    key: Ed25519PrivateKey,
    bundle: Sequence[x509.Certificate],
) -> dict[str, Path]:
    """Write ``bundle.pem``, ``key.pem`` (0600) and ``cert.pem`` into an agent data dir.

    Each file is replaced atomically. A reader can still see a new key with the old cert
    for a moment; peermesh.net.tls detects the mismatch and keeps its old context until the
    next check, so there is no need for a lock. The bundle goes first so a new root is
    trusted before anything signed by it is presented.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "bundle": data_dir / BUNDLE_FILE,
        "key": data_dir / KEY_FILE,
        "cert": data_dir / CERT_FILE,
    }
    atomic_write(paths["bundle"], pem_bundle(bundle), PUBLIC_MODE)
    atomic_write(paths["key"], _key_pem(key), SECRET_MODE)
    atomic_write(paths["cert"], cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    return paths


@dataclass(frozen=True, eq=False)
class DevCA:
    """A loaded dev CA: root certificate + its private key + trust domain."""

    ca_dir: Path
    trust_domain: str
    certificate: x509.Certificate
    private_key: Ed25519PrivateKey

    @property
    def spiffe_id(self) -> SpiffeId:
        return SpiffeId.for_trust_domain(self.trust_domain)

    @classmethod
    def load(cls, ca_dir: Path) -> DevCA:
        """Load a CA dir written by :func:`init_dev_ca`, checking that its files agree."""
        ca_dir = Path(ca_dir)
        paths = [ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE, ca_dir / CA_META_FILE]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise DevCAError(
                f"{ca_dir} is not a dev CA directory (missing {', '.join(missing)}); "
                "create one with 'peermesh dev-ca init'"
            )
        try:
            meta = json.loads((ca_dir / CA_META_FILE).read_text())
            trust_domain = validate_trust_domain(str(meta["trust_domain"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise DevCAError(f"{ca_dir / CA_META_FILE} is unreadable: {exc}") from None
        try:
            cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT_FILE).read_bytes())
        except ValueError as exc:
            raise DevCAError(f"{ca_dir / CA_CERT_FILE} is not a PEM certificate: {exc}") from None
        try:
            key = serialization.load_pem_private_key(
                (ca_dir / CA_KEY_FILE).read_bytes(), password=None
            )
        except (ValueError, TypeError) as exc:
            raise DevCAError(
                f"{ca_dir / CA_KEY_FILE} is not an unencrypted PEM key: {exc}"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise DevCAError(f"{ca_dir / CA_KEY_FILE} is not an Ed25519 key")
        if key.public_key() != cert.public_key():
            raise DevCAError(f"{CA_KEY_FILE} does not match {CA_CERT_FILE} in {ca_dir}")
        return cls(ca_dir, trust_domain, cert, key)

    def issue(
        self,
        node: str,
        service: str,
        data_dir: Path,
        *,
        lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME,
        now: dt.datetime | None = None,
    ) -> x509.Certificate:
        """Issue a fresh key + X.509-SVID for ``service`` on ``node`` into ``data_dir``.

        Writes cert.pem, key.pem (0600) and bundle.pem (this root); a running agent picks
        them up on its next reload check.
        """
        try:
            validate_node_name(node)
        except ValueError as exc:
            raise DevCAError(f"invalid node name: {exc}") from None
        try:
            validate_service_name(service)
        except InvalidSpiffeId as exc:
            raise DevCAError(f"invalid service name: {exc}") from None
        leaf_key = Ed25519PrivateKey.generate()
        cert = build_leaf(
            issuer=self.certificate,
            issuer_key=self.private_key,
            leaf_key=leaf_key,
            spiffe_id=SpiffeId.for_service(self.trust_domain, service),
            node=node,
            now=now,
            lifetime=lifetime,
        )
        install_identity(Path(data_dir), cert, leaf_key, [self.certificate])
        return cert


def init_dev_ca(
    ca_dir: Path,
    trust_domain: str,
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = DEFAULT_ROOT_LIFETIME,
    force: bool = False,
) -> DevCA:
    """Create a new dev root in ``ca_dir`` (ca.pem, ca.key 0600, ca.json).

    Refuses to overwrite an existing CA unless ``force``: replacing the root silently
    would make every certificate issued so far untrusted.
    """
    ca_dir = Path(ca_dir)
    try:
        validate_trust_domain(trust_domain)
    except InvalidSpiffeId as exc:
        raise DevCAError(f"invalid trust domain: {exc}") from None
    existing = [
        name for name in (CA_CERT_FILE, CA_KEY_FILE, CA_META_FILE) if (ca_dir / name).exists()
    ]
    if existing and not force:
        raise DevCAError(
            f"{ca_dir} already holds a dev CA ({', '.join(existing)}); replacing it would "
            "invalidate every certificate it issued. Use --force to replace it anyway"
        )
    key = Ed25519PrivateKey.generate()
    cert = build_root(key, trust_domain, now=now, lifetime=lifetime)
    atomic_write(ca_dir / CA_KEY_FILE, _key_pem(key), SECRET_MODE)
    atomic_write(ca_dir / CA_CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))
    atomic_write(
        ca_dir / CA_META_FILE,
        (json.dumps({"trust_domain": trust_domain}, indent=2) + "\n").encode(),
    )
    return DevCA(ca_dir, trust_domain, cert, key)
