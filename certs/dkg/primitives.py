"""Small cryptographic pieces: proofs of knowledge, sealing a scalar to its recipient, points."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from certs.dkg.codec import canonical
from certs.ed25519_group import GroupError, Point, RandomBytes, Scalar

__all__ = [
    "SEALED_SCALAR_LEN",
    "decode_points",
    "open_scalar",
    "pok_problem",
    "prove_knowledge",
    "seal",
    "x25519_keypair",
    "x25519_public_problem",
]

_POK_LABEL: Final[bytes] = b"peermesh-dkg-v1/pok"
_SEAL_LABEL: Final[bytes] = b"peermesh-dkg-v1/seal"
SEALED_SCALAR_LEN: Final[int] = 32 + 32 + 16  # ephemeral key + ciphertext + tag
_ZERO_NONCE: Final[bytes] = bytes(12)
_X25519_PROBE: Final[X25519PrivateKey] = X25519PrivateKey.from_private_bytes(b"\x42" * 32)


def _pok_challenge(session_id: bytes, identifier: int, phi0: Point, r: Point) -> Scalar:
    digest = hashlib.sha512(
        canonical([_POK_LABEL, session_id, identifier, phi0.to_bytes(), r.to_bytes()])
    ).digest()
    return Scalar.reduce(digest)


def prove_knowledge(
    session_id: bytes, identifier: int, secret: Scalar, random_bytes: RandomBytes
) -> bytes:
    """Schnorr proof of knowledge of ``secret`` for ``secret * B`` (KG20, round 1 step 2)."""
    k = Scalar.random_nonzero(random_bytes)
    r = Point.base_mul(k)
    c = _pok_challenge(session_id, identifier, Point.base_mul(secret), r)
    return r.to_bytes() + (k + secret * c).to_bytes()


def pok_problem(session_id: bytes, identifier: int, phi0: Point, proof: bytes) -> str | None:
    if len(proof) != 64:
        return "proof of knowledge has the wrong length"
    try:
        r = Point.from_bytes(proof[:32])
        mu = Scalar.from_bytes(proof[32:])
    except GroupError as exc:
        return f"proof of knowledge is malformed: {exc}"
    c = _pok_challenge(session_id, identifier, phi0, r)
    if Point.base_mul(mu) != r + phi0 * c:
        return "proof of knowledge does not verify"
    return None


def x25519_public_problem(raw: bytes) -> str | None:
    if len(raw) != 32:
        return "encryption key is not 32 bytes"
    try:
        _X25519_PROBE.exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        return "encryption key has small order"
    return None


def _seal_info(purpose: str, session_id: bytes, sender: int, recipient: int, eph: bytes) -> bytes:
    return canonical([_SEAL_LABEL, purpose, session_id, sender, recipient, eph])


def seal(
    purpose: str,
    session_id: bytes,
    sender: int,
    recipient: int,
    recipient_key: bytes,
    plaintext: bytes,
    random_bytes: RandomBytes,
) -> bytes:
    """Ephemeral-static X25519 + HKDF-SHA256 + ChaCha20-Poly1305, bound to the context."""
    eph = X25519PrivateKey.from_private_bytes(random_bytes(32))
    eph_pub = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_key))
    info = _seal_info(purpose, session_id, sender, recipient, eph_pub)
    key = HKDF(hashes.SHA256(), 32, None, info + recipient_key).derive(shared)
    return eph_pub + ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, info)


def _open(
    purpose: str,
    session_id: bytes,
    sender: int,
    recipient: int,
    recipient_secret: bytes,
    sealed: bytes,
) -> bytes | None:
    """Inverse of :func:`seal`; None if it does not decrypt (the sender's fault)."""
    if len(sealed) < 32 + 16:
        return None
    own = X25519PrivateKey.from_private_bytes(recipient_secret)
    eph_pub = sealed[:32]
    try:
        shared = own.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError:
        return None
    info = _seal_info(purpose, session_id, sender, recipient, eph_pub)
    recipient_key = own.public_key().public_bytes_raw()
    key = HKDF(hashes.SHA256(), 32, None, info + recipient_key).derive(shared)
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, sealed[32:], info)
    except InvalidTag:
        return None


def open_scalar(
    purpose: str, session: bytes, sender: int, recipient: int, secret: bytes, sealed: bytes
) -> Scalar | str:
    plain = _open(purpose, session, sender, recipient, secret, sealed)
    if plain is None:
        return f"value sealed for {recipient} does not decrypt"
    try:
        return Scalar.from_bytes(plain)
    except GroupError as exc:
        return f"value sealed for {recipient} is not a scalar: {exc}"


def x25519_keypair(random_bytes: RandomBytes) -> tuple[bytes, bytes]:
    secret = random_bytes(32)
    public = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
    return secret, public


def decode_points(raw: Sequence[bytes], what: str) -> list[Point] | str:
    out = []
    for n, b in enumerate(raw):
        try:
            out.append(Point.from_bytes(b))
        except GroupError as exc:
            return f"{what} {n}: {exc}"
    return out
