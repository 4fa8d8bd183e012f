"""The agent's identity files: ``cert.pem``, ``key.pem`` and ``bundle.pem`` in its data dir.

:mod:`peermesh.net.tls` reads them; :func:`install_identity` is the one place that
writes them, whichever CA issued the certificate (the dev CA or the threshold CA).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peermesh.core.durable import PUBLIC_MODE, SECRET_MODE, atomic_write

__all__ = ["BUNDLE_FILE", "CERT_FILE", "KEY_FILE", "install_identity"]

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
BUNDLE_FILE = "bundle.pem"


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
    bundle_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in bundle)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(paths["bundle"], bundle_pem, PUBLIC_MODE)
    atomic_write(paths["key"], key_pem, SECRET_MODE)
    atomic_write(paths["cert"], cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    return paths
