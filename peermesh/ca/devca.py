"""The single-key development CA kept in a directory: ``ca.pem``, ``ca.key`` (0600), ``ca.json``.

For tests and quick experiments only: the whole root secret sits in ``ca.key``. The
certificates themselves are built by :mod:`certs.devca`; this module keeps the root in
its directory and issues identities into agent data dirs through
:func:`peermesh.net.identity_files.install_identity`, the same way the threshold CA does.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.devca import (
    DEFAULT_LEAF_LIFETIME,
    DEFAULT_ROOT_LIFETIME,
    DevCAError,
    issue_svid,
    key_pem,
    new_root,
)
from certs.spiffe import InvalidSpiffeId, SpiffeId, validate_trust_domain
from peermesh.core.durable import SECRET_MODE, atomic_write
from peermesh.net.identity_files import install_identity

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CA_META_FILE",
    "DevCA",
    "init_dev_ca",
]

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_META_FILE = "ca.json"


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
        cert, leaf_key = issue_svid(
            issuer=self.certificate,
            issuer_key=self.private_key,
            trust_domain=self.trust_domain,
            node=node,
            service=service,
            lifetime=lifetime,
            now=now,
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
    key, cert = new_root(trust_domain, now=now, lifetime=lifetime)
    atomic_write(ca_dir / CA_KEY_FILE, key_pem(key), SECRET_MODE)
    atomic_write(ca_dir / CA_CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))
    atomic_write(
        ca_dir / CA_META_FILE,
        (json.dumps({"trust_domain": trust_domain}, indent=2) + "\n").encode(),
    )
    return DevCA(ca_dir, trust_domain, cert, key)
