"""Single-key development CA: an Ed25519 root and X.509-SVID leaf certificates, in memory.

For tests and quick experiments only: whoever holds the root key is the whole CA. The
production root is threshold-shared (``certs/frost``) but produces the same kind of
certificates, so the TLS layer does not care which CA issued one. This module builds
keys, certificates and their PEM bytes; keeping a dev CA in a directory and writing
identities into an agent's data dir are the caller's business (peermesh does both in
``peermesh/ca/devca.py`` and ``peermesh/net/identity_files.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.errors import CertsError, ErrorCode
from certs.spiffe import (
    InvalidSpiffeId,
    SpiffeId,
    validate_node_name,
    validate_service_name,
    validate_trust_domain,
)
from certs.x509 import certificate_builder, key_usage

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_LEAF_LIFETIME",
    "DEFAULT_ROOT_LIFETIME",
    "DevCAError",
    "build_leaf",
    "build_root",
    "issue_svid",
    "key_pem",
    "new_root",
    "pem_bundle",
]

DEFAULT_ROOT_LIFETIME = dt.timedelta(days=3650)
DEFAULT_LEAF_LIFETIME = dt.timedelta(hours=24)
# Back-date not_before so a peer whose clock runs a little behind still accepts the cert.
CLOCK_SKEW = dt.timedelta(minutes=5)


class DevCAError(CertsError):
    """The dev CA cannot do what was asked; the message says why and what to do."""

    default_code = ErrorCode.DEV_CA


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
        certificate_builder(
            name,
            name,
            key.public_key(),
            x509.random_serial_number(),
            now - CLOCK_SKEW,
            now + lifetime,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            key_usage(digital_signature=False, cert_sign=True),
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
        certificate_builder(
            subject,
            issuer.subject,
            leaf_key.public_key(),
            x509.random_serial_number(),
            now - CLOCK_SKEW,
            not_after,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage(digital_signature=True, cert_sign=False),
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


def key_pem(key: Ed25519PrivateKey) -> bytes:
    """An Ed25519 private key as unencrypted PKCS#8 PEM (how ``key.pem`` holds it)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_root(
    trust_domain: str,
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = DEFAULT_ROOT_LIFETIME,
) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    """A fresh root key and its self-signed certificate for ``trust_domain``."""
    try:
        validate_trust_domain(trust_domain)
    except InvalidSpiffeId as exc:
        raise DevCAError(f"invalid trust domain: {exc}") from None
    key = Ed25519PrivateKey.generate()
    return key, build_root(key, trust_domain, now=now, lifetime=lifetime)


def issue_svid(
    *,
    issuer: x509.Certificate,
    issuer_key: Ed25519PrivateKey,
    trust_domain: str,
    node: str,
    service: str,
    lifetime: dt.timedelta = DEFAULT_LEAF_LIFETIME,
    now: dt.datetime | None = None,
) -> tuple[x509.Certificate, Ed25519PrivateKey]:
    """A fresh key and an X.509-SVID for ``service`` on ``node``, signed by ``issuer_key``."""
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
        issuer=issuer,
        issuer_key=issuer_key,
        leaf_key=leaf_key,
        spiffe_id=SpiffeId.for_service(trust_domain, service),
        node=node,
        now=now,
        lifetime=lifetime,
    )
    return cert, leaf_key
