"""Participant identifiers and the checked decoding of FROST values from the wire.

Every element and scalar that arrives is decoded here, so a bad encoding is a
:class:`FrostError` naming the field rather than an error from the group arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from certs.ed25519_group import GroupError, Point, Scalar
from certs.frost.errors import FrostError

__all__ = ["MAX_IDENTIFIER", "check_identifier", "decode_element", "decode_int", "decode_scalar"]

#: Identifiers are small positive integers; 16 bits is far more than any committee.
MAX_IDENTIFIER: Final[int] = 0xFFFF

_V = TypeVar("_V")


def check_identifier(identifier: int) -> int:
    """Validate a participant identifier (a NonZeroScalar that fits our wire format)."""
    if isinstance(identifier, bool) or not isinstance(identifier, int):
        raise FrostError(f"identifier must be an int, got {type(identifier).__name__}")
    if not 1 <= identifier <= MAX_IDENTIFIER:
        raise FrostError(f"identifier {identifier} outside 1..{MAX_IDENTIFIER}")
    return identifier


def decode_element(data: Any, what: str) -> Point:
    """A group element (DeserializeElement); ``what`` names the field in the error."""
    return _decode(data, what, Point.from_bytes)


def decode_scalar(data: Any, what: str) -> Scalar:
    """A canonical scalar (DeserializeScalar); ``what`` names the field in the error."""
    return _decode(data, what, Scalar.from_bytes)


def _decode(data: Any, what: str, parse: Callable[[bytes], _V]) -> _V:
    if not isinstance(data, bytes | bytearray):
        raise FrostError(f"{what}: expected bytes")
    try:
        return parse(bytes(data))
    except GroupError as exc:
        raise FrostError(f"{what}: {exc}") from exc


def decode_int(data: Any, what: str) -> int:
    """An int that is not a bool; ``what`` names the field in the error."""
    if isinstance(data, bool) or not isinstance(data, int):
        raise FrostError(f"{what}: expected an int")
    return data
