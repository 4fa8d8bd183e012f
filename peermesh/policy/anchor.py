"""The admin set anchored in the root key: the statement the signer committee endorses.

Who administers the mesh (MeshConfig ``spec.admins``) changes from a set S at epoch n to
S' only with a FROST signature of the root group key over :func:`admin_set_statement`.
Only the committee holds that key, in shares, and each signer releases its share only
after checking the request itself (:mod:`peermesh.ca.admin_set`), so no single member and
no t-1 members can produce one. The epoch makes an old endorsement worthless once the
set has moved on (A→B replayed after B→A names epoch n+1 it no longer is), and the
content hash of the MeshConfig version it endorses ties it to that version: copied into
another version (one with other settings, ranked lower so it is walked first) it does
not verify. This module is
sans-IO: it builds and parses statements and defines the verifier handle the policy store
is given; :mod:`~peermesh.policy.authority` walks the MeshConfig versions with it.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, Self

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DOMAIN: Final = b"peermesh admin-set v1\0"
#: FROST(Ed25519) signatures are plain Ed25519 signatures: R and z, 32 bytes each.
SIGNATURE_BYTES: Final = 64
MAX_EPOCH: Final = 2**53 - 1
#: An admin set in a statement: far more identities than any mesh lists as admins.
MAX_ADMINS: Final = 1024
_MAX_ID: Final = 2048
_MAX_TRUST_DOMAIN: Final = 255


class StatementError(ValueError):
    """Bytes that are not a well-formed admin-set statement."""


def canonical_admins(admins: Collection[str]) -> bytes:
    """The sorted SPIFFE IDs joined by newlines (empty for no admins)."""
    return "\n".join(sorted(set(admins))).encode()


def admin_set_statement(
    trust_domain: str,
    epoch: int,
    previous: Collection[str],
    admins: Collection[str],
    *,
    version: str,
) -> bytes:
    """What the committee signs to move the admin set from ``previous`` to ``admins``.

    ``epoch`` is the epoch the change creates (the current one plus one); ``version`` is
    the content hash (hex SHA-256 of the canonical object) of the MeshConfig version that
    makes the change.
    """
    if not 1 <= epoch <= MAX_EPOCH:
        raise ValueError(f"admin-set epoch {epoch} is out of range")
    digest = bytes.fromhex(version)
    if len(digest) != 32:
        raise ValueError("a MeshConfig version's content hash is 32 bytes")
    return (
        DOMAIN
        + trust_domain.encode()
        + b"\0"
        + struct.pack(">Q", epoch)
        + hashlib.sha256(canonical_admins(previous)).digest()
        + digest
        + canonical_admins(admins)
    )


@dataclass(frozen=True)
class Statement:
    """An admin-set statement read back: what a signer checks against its own view."""

    trust_domain: str
    epoch: int
    previous_digest: bytes
    version: str  # the endorsed MeshConfig version's content hash, hex
    admins: frozenset[str]

    @classmethod
    def parse(cls, message: bytes) -> Self:
        """Read a statement; raises :class:`StatementError` for anything else."""
        if not message.startswith(DOMAIN):
            raise StatementError("the message is not an admin-set statement")
        rest = message[len(DOMAIN) :]
        domain, sep, rest = rest.partition(b"\0")
        if not sep or not domain or len(domain) > _MAX_TRUST_DOMAIN or len(rest) < 72:
            raise StatementError("the admin-set statement is truncated or malformed")
        (epoch,) = struct.unpack(">Q", rest[:8])
        digest, version, tail = rest[8:40], rest[40:72], rest[72:]
        try:
            names = tail.decode().split("\n") if tail else []
            trust_domain = domain.decode()
        except UnicodeDecodeError:
            raise StatementError("the admin-set statement is not UTF-8") from None
        if len(names) > MAX_ADMINS or any(not 0 < len(n) <= _MAX_ID for n in names):
            raise StatementError(f"the admin set must list at most {MAX_ADMINS} identities")
        if names != sorted(set(names)):
            raise StatementError("the admin set in the statement is not canonical")
        if not 1 <= epoch <= MAX_EPOCH:
            raise StatementError(f"admin-set epoch {epoch} is out of range")
        return cls(trust_domain, epoch, digest, version.hex(), frozenset(names))


@dataclass(frozen=True)
class AdminEndorsement:
    """The committee's signature over one admin-set change, carried by a MeshConfig record."""

    epoch: int
    signature: bytes

    def __post_init__(self) -> None:
        if isinstance(self.epoch, bool) or not 1 <= self.epoch <= MAX_EPOCH:
            raise ValueError(f"the admin-set endorsement's epoch {self.epoch!r} is out of range")
        if len(self.signature) != SIGNATURE_BYTES:
            raise ValueError(f"an admin-set endorsement is {SIGNATURE_BYTES} bytes")

    def to_wire(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "sig": self.signature.hex()}

    @classmethod
    def from_wire(cls, raw: object) -> Self:
        """Checked decode; raises ``ValueError`` saying what is wrong."""
        if not isinstance(raw, dict) or set(raw) != {"epoch", "sig"}:
            raise ValueError("an admin-set endorsement is {epoch, sig}")
        epoch, sig = raw["epoch"], raw["sig"]
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise ValueError("the admin-set endorsement's epoch is not an integer")
        if not isinstance(sig, str) or len(sig) != 2 * SIGNATURE_BYTES:
            raise ValueError(f"the admin-set endorsement's sig is not {SIGNATURE_BYTES} bytes hex")
        try:
            signature = bytes.fromhex(sig)
        except ValueError:
            raise ValueError("the admin-set endorsement's sig is not hex") from None
        if signature.hex() != sig:
            raise ValueError("the admin-set endorsement's sig is not canonical (lower-case) hex")
        return cls(epoch, signature)


class AdminSetAnchor(Protocol):
    """Checks committee endorsements: the root group key, for one trust domain."""

    @property
    def trust_domain(self) -> str: ...

    def verify(self, statement: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is the root key's over ``statement``."""


@functools.lru_cache(maxsize=4096)
def _verifies(key: bytes, statement: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, statement)
    except (InvalidSignature, ValueError):
        return False
    return True


def ed25519_verifies(key: bytes, statement: bytes, signature: bytes) -> bool:
    """Plain Ed25519 verification (memoised: the walk re-checks every endorsement)."""
    return _verifies(bytes(key), bytes(statement), bytes(signature))


class RootKeyAnchor:
    """An :class:`AdminSetAnchor` over the root certificates a getter returns.

    In threshold-CA mode the trust bundle holds exactly the committee's root, whose key
    is the FROST group key. Before there is a bundle nothing verifies (and nothing can be
    stored either: records need the bundle to be checked at all).
    """

    def __init__(self, trust_domain: str, roots: Callable[[], Sequence[x509.Certificate]]) -> None:
        self._trust_domain = trust_domain
        self._roots = roots

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    def verify(self, statement: bytes, signature: bytes) -> bool:
        try:
            roots = self._roots()
        except (OSError, ValueError):
            return False
        for root in roots:
            key = root.public_key()
            if isinstance(key, Ed25519PublicKey) and ed25519_verifies(
                key.public_bytes_raw(), statement, signature
            ):
                return True
        return False


class KeyAnchor:
    """An :class:`AdminSetAnchor` over one raw Ed25519 key (tests, tools)."""

    def __init__(self, trust_domain: str, key: bytes) -> None:
        self._trust_domain = trust_domain
        self._key = bytes(key)

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    def verify(self, statement: bytes, signature: bytes) -> bool:
        return ed25519_verifies(self._key, statement, signature)
