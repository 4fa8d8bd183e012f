"""Typed prime-order-group arithmetic on edwards25519, over libsodium (``nacl.bindings``).

FROST and the DKG only ever need the prime-order subgroup of edwards25519.  Every
element that comes from outside (the network, a file) goes through
:meth:`Point.from_bytes`, which applies RFC 9591's DeserializeElement rules for
FROST(Ed25519, SHA-512): canonical RFC 8032 encoding, not the identity, in the
prime-order subgroup.  Scalars go through :meth:`Scalar.from_bytes`
(DeserializeScalar: canonical little-endian value below the group order).

Scalars are often secrets, so their ``repr`` never shows the value and equality is
compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import ClassVar, Final

from nacl import bindings as _na

from certs.errors import CertsError, ErrorCode

__all__ = [
    "ELEMENT_BYTES",
    "ORDER",
    "SCALAR_BYTES",
    "GroupError",
    "Point",
    "RandomBytes",
    "Scalar",
]

#: The order L of the prime-order subgroup (RFC 7748 / RFC 8032).
ORDER: Final[int] = 2**252 + 27742317777372353535851937790883648493
_FIELD_P: Final[int] = 2**255 - 19
ELEMENT_BYTES: Final[int] = 32
SCALAR_BYTES: Final[int] = 32
_IDENTITY_ENCODING: Final[bytes] = b"\x01" + bytes(31)

#: A source of randomness: ``random_bytes(n)`` returns ``n`` fresh bytes.
RandomBytes = Callable[[int], bytes]


class GroupError(CertsError, ValueError):
    """A byte string is not an acceptable group element or scalar; the message says why."""

    default_code = ErrorCode.GROUP


class Scalar:
    """An integer modulo :data:`ORDER`, held as its canonical 32-byte little-endian encoding."""

    __slots__ = ("_enc",)
    _enc: bytes
    ZERO: ClassVar[Scalar]
    ONE: ClassVar[Scalar]

    def __init__(self, encoding: bytes) -> None:
        """Wrap an already canonical encoding; use :meth:`from_bytes` for untrusted input."""
        object.__setattr__(self, "_enc", bytes(encoding))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Scalar is immutable")

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes) -> Scalar:
        """DeserializeScalar: exactly 32 bytes encoding a value below the group order."""
        if len(data) != SCALAR_BYTES:
            raise GroupError(f"scalar must be {SCALAR_BYTES} bytes, got {len(data)}")
        if int.from_bytes(data, "little") >= ORDER:
            raise GroupError("non-canonical scalar encoding (value is not below the group order)")
        return cls(data)

    @classmethod
    def from_int(cls, value: int) -> Scalar:
        """The scalar ``value mod ORDER`` (identifiers, small constants)."""
        return cls((value % ORDER).to_bytes(SCALAR_BYTES, "little"))

    @classmethod
    def reduce(cls, data: bytes) -> Scalar:
        """Reduce a 64-byte little-endian integer (a SHA-512 digest) modulo the order."""
        if len(data) != 64:
            raise GroupError(f"wide reduction needs 64 bytes, got {len(data)}")
        return cls(_na.crypto_core_ed25519_scalar_reduce(data))

    @classmethod
    def random(cls, random_bytes: RandomBytes = secrets.token_bytes) -> Scalar:
        """A uniformly random scalar by wide reduction of 64 random bytes (RFC 9591 App. D)."""
        return cls.reduce(random_bytes(64))

    @classmethod
    def random_nonzero(cls, random_bytes: RandomBytes = secrets.token_bytes) -> Scalar:
        """A uniformly random non-zero scalar (the zero draw is retried, not patched)."""
        while True:
            s = cls.random(random_bytes)
            if not s.is_zero():
                return s

    # -- encoding ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """SerializeScalar: the canonical 32-byte little-endian encoding."""
        return self._enc

    def __int__(self) -> int:
        return int.from_bytes(self._enc, "little")

    def is_zero(self) -> bool:
        """True for the scalar 0 (constant time in the encoding)."""
        return hmac.compare_digest(self._enc, bytes(SCALAR_BYTES))

    # -- arithmetic --------------------------------------------------------------------
    def __add__(self, other: Scalar) -> Scalar:
        return Scalar(_na.crypto_core_ed25519_scalar_add(self._enc, other._enc))

    def __sub__(self, other: Scalar) -> Scalar:
        return Scalar(_na.crypto_core_ed25519_scalar_sub(self._enc, other._enc))

    def __mul__(self, other: Scalar) -> Scalar:
        return Scalar(_na.crypto_core_ed25519_scalar_mul(self._enc, other._enc))

    def __neg__(self) -> Scalar:
        return Scalar(_na.crypto_core_ed25519_scalar_negate(self._enc))

    def inverse(self) -> Scalar:
        """The multiplicative inverse; zero has none."""
        if self.is_zero():
            raise GroupError("zero has no inverse")
        return Scalar(_na.crypto_core_ed25519_scalar_invert(self._enc))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scalar):
            return NotImplemented
        return hmac.compare_digest(self._enc, other._enc)

    def __hash__(self) -> int:
        return hash(("Scalar", self._enc))

    def __repr__(self) -> str:
        # Scalars are usually secrets (shares, nonces): never print the value.
        return "Scalar(<redacted>)"

    def __reduce__(self) -> tuple[type[Scalar], tuple[bytes]]:
        return (Scalar, (self._enc,))


Scalar.ZERO = Scalar(bytes(SCALAR_BYTES))
Scalar.ONE = Scalar.from_int(1)


class Point:
    """An element of the prime-order subgroup of edwards25519 (possibly the identity).

    The identity can arise inside computations (a sum of points) but is never
    accepted from, or written to, the outside: :meth:`from_bytes` and
    :meth:`to_bytes` refuse it, as RFC 9591 requires.
    """

    __slots__ = ("_enc",)
    _enc: bytes

    def __init__(self, encoding: bytes) -> None:
        """Wrap a trusted canonical encoding; use :meth:`from_bytes` for untrusted input."""
        object.__setattr__(self, "_enc", bytes(encoding))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Point is immutable")

    # -- construction ------------------------------------------------------------------
    @classmethod
    def identity(cls) -> Point:
        """The neutral element (only for accumulating sums)."""
        return cls(_IDENTITY_ENCODING)

    @classmethod
    def base_mul(cls, scalar: Scalar) -> Point:
        """ScalarBaseMult: ``scalar * B`` for the standard Ed25519 base point."""
        if scalar.is_zero():
            return cls.identity()
        return cls(_na.crypto_scalarmult_ed25519_base_noclamp(scalar.to_bytes()))

    @classmethod
    def from_bytes(cls, data: bytes) -> Point:
        """DeserializeElement: reject wrong length, non-canonical, identity, off-subgroup."""
        data = bytes(data)
        if len(data) != ELEMENT_BYTES:
            raise GroupError(f"element must be {ELEMENT_BYTES} bytes, got {len(data)}")
        # libsodium's check covers canonical y, on-curve, not small order, in subgroup.
        if _na.crypto_core_ed25519_is_valid_point(data) and _has_canonical_sign(data):
            return cls(data)
        raise GroupError(_why_invalid(data))

    # -- encoding ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """SerializeElement: the 32-byte RFC 8032 encoding; the identity is refused."""
        if self.is_identity():
            raise GroupError("cannot serialize the identity element")
        return self._enc

    def is_identity(self) -> bool:
        """True for the neutral element."""
        return self._enc == _IDENTITY_ENCODING

    # -- arithmetic --------------------------------------------------------------------
    def __add__(self, other: Point) -> Point:
        return Point(_na.crypto_core_ed25519_add(self._enc, other._enc))

    def __sub__(self, other: Point) -> Point:
        return Point(_na.crypto_core_ed25519_sub(self._enc, other._enc))

    def __neg__(self) -> Point:
        return Point(_na.crypto_core_ed25519_sub(_IDENTITY_ENCODING, self._enc))

    def __mul__(self, scalar: Scalar) -> Point:
        """ScalarMult(self, scalar)."""
        if scalar.is_zero() or self.is_identity():
            return Point.identity()
        return Point(_na.crypto_scalarmult_ed25519_noclamp(scalar.to_bytes(), self._enc))

    def __rmul__(self, scalar: Scalar) -> Point:
        return self.__mul__(scalar)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Point):
            return NotImplemented
        return self._enc == other._enc

    def __hash__(self) -> int:
        return hash(("Point", self._enc))

    def __repr__(self) -> str:
        return "Point(identity)" if self.is_identity() else f"Point({self._enc.hex()})"

    def __reduce__(self) -> tuple[type[Point], tuple[bytes]]:
        return (Point, (self._enc,))


def _has_canonical_sign(data: bytes) -> bool:
    """RFC 8032 §5.1.3: x = 0 (y = ±1) with the sign bit set is not a valid encoding."""
    if not data[31] & 0x80:
        return True
    y = int.from_bytes(data, "little") & ((1 << 255) - 1)
    return y not in (1, _FIELD_P - 1)


def _why_invalid(data: bytes) -> str:
    """Name the first DeserializeElement rule that ``data`` breaks (error path only)."""
    y = int.from_bytes(data, "little") & ((1 << 255) - 1)
    if y >= _FIELD_P or not _has_canonical_sign(data):
        return "non-canonical element encoding"
    if data == _IDENTITY_ENCODING:
        return "element is the identity"
    try:
        # crypto_core_ed25519_add accepts any curve point, in or out of the subgroup.
        p2 = _na.crypto_core_ed25519_add(data, data)
    except Exception:
        return "element is not a point on edwards25519"
    p4 = _na.crypto_core_ed25519_add(p2, p2)
    p8 = _na.crypto_core_ed25519_add(p4, p4)
    if p8 == _IDENTITY_ENCODING:
        return "element has small order"
    return "element is not in the prime-order subgroup"
