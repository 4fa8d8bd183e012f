"""The five hash functions of FROST(Ed25519, SHA-512) (RFC 9591 §6.1)."""

from __future__ import annotations

import hashlib
from typing import Final

from certs.ed25519_group import Scalar

__all__ = ["CONTEXT_STRING", "h1", "h2", "h3", "h4", "h5"]

CONTEXT_STRING: Final[bytes] = b"FROST-ED25519-SHA512-v1"


def _sha512(*parts: bytes) -> bytes:
    h = hashlib.sha512()
    for part in parts:
        h.update(part)
    return h.digest()


def h1(m: bytes) -> Scalar:
    """Binding-factor hash ("rho")."""
    return Scalar.reduce(_sha512(CONTEXT_STRING, b"rho", m))


def h2(m: bytes) -> Scalar:
    """Challenge hash: plain SHA-512 without a domain separator, for RFC 8032 compatibility."""
    return Scalar.reduce(_sha512(m))


def h3(m: bytes) -> Scalar:
    """Nonce hash."""
    return Scalar.reduce(_sha512(CONTEXT_STRING, b"nonce", m))


def h4(m: bytes) -> bytes:
    """Message hash."""
    return _sha512(CONTEXT_STRING, b"msg", m)


def h5(m: bytes) -> bytes:
    """Commitment-list hash."""
    return _sha512(CONTEXT_STRING, b"com", m)
