"""What signers and the coordinator exchange: commitments, the signing package, shares.

Frozen dataclasses with ``to_wire``/``from_wire``; decoding validates every element and
scalar (RFC 9591 §5.2 input validation), so a parsed message is always well formed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from certs.ed25519_group import Point, Scalar
from certs.frost.errors import FrostError
from certs.frost.wire import check_identifier, decode_element, decode_int, decode_scalar

__all__ = ["SignatureShare", "SigningCommitments", "SigningPackage"]


@dataclass(frozen=True)
class SigningCommitments:
    """A participant's public round-one output (hiding and binding nonce commitments)."""

    identifier: int
    hiding: Point
    binding: Point

    def __post_init__(self) -> None:
        check_identifier(self.identifier)
        if self.hiding.is_identity() or self.binding.is_identity():
            raise FrostError("nonce commitment is the identity")

    def nonce_id(self) -> str:
        """A stable name for the nonce behind these commitments (hex, safe to log)."""
        digest = hashlib.sha256(
            b"peermesh-frost-nonce-id\x00"
            + self.identifier.to_bytes(2, "big")
            + self.hiding.to_bytes()
            + self.binding.to_bytes()
        )
        return digest.hexdigest()

    def to_wire(self) -> dict[str, Any]:
        """msgpack/JSON-friendly form."""
        return {
            "id": self.identifier,
            "hiding": self.hiding.to_bytes(),
            "binding": self.binding.to_bytes(),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SigningCommitments:
        """Parse and validate (DeserializeElement on both commitments)."""
        identifier = check_identifier(decode_int(data.get("id"), "id"))
        return cls(
            identifier=identifier,
            hiding=decode_element(data.get("hiding"), f"hiding commitment of {identifier}"),
            binding=decode_element(data.get("binding"), f"binding commitment of {identifier}"),
        )


@dataclass(frozen=True)
class SigningPackage:
    """What the coordinator sends to every signer: the message and the sorted commitment list."""

    message: bytes
    commitments: tuple[SigningCommitments, ...]

    def __post_init__(self) -> None:
        commitments = tuple(sorted(self.commitments, key=lambda c: c.identifier))
        if not commitments:
            raise FrostError("signing package has no commitments")
        ids = [c.identifier for c in commitments]
        if len(set(ids)) != len(ids):
            raise FrostError("signing package lists a participant twice")
        object.__setattr__(self, "commitments", commitments)
        object.__setattr__(self, "message", bytes(self.message))

    @property
    def identifiers(self) -> tuple[int, ...]:
        """Participants in this session, ascending."""
        return tuple(c.identifier for c in self.commitments)

    def commitment_for(self, identifier: int) -> SigningCommitments:
        """The commitments of ``identifier`` in this package."""
        for c in self.commitments:
            if c.identifier == identifier:
                return c
        raise FrostError(f"participant {identifier} is not in the signing package")

    def to_wire(self) -> dict[str, Any]:
        """msgpack/JSON-friendly form."""
        return {"message": self.message, "commitments": [c.to_wire() for c in self.commitments]}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SigningPackage:
        """Parse and validate every element (RFC 9591 §5.2 input validation)."""
        message = data.get("message")
        commitments = data.get("commitments")
        if not isinstance(message, bytes | bytearray):
            raise FrostError("message: expected bytes")
        if not isinstance(commitments, list | tuple):
            raise FrostError("commitments: expected a list")
        parsed = []
        for c in commitments:
            if not isinstance(c, Mapping):
                raise FrostError("commitments: expected a list of maps")
            parsed.append(SigningCommitments.from_wire(c))
        ids = [c.identifier for c in parsed]
        if ids != sorted(ids):
            raise FrostError("commitments must be sorted by identifier")
        return cls(bytes(message), tuple(parsed))


@dataclass(frozen=True)
class SignatureShare:
    """A participant's round-two output."""

    identifier: int
    share: Scalar

    def __post_init__(self) -> None:
        check_identifier(self.identifier)

    def to_wire(self) -> dict[str, Any]:
        """msgpack/JSON-friendly form."""
        return {"id": self.identifier, "share": self.share.to_bytes()}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SignatureShare:
        """Parse and validate (DeserializeScalar)."""
        identifier = check_identifier(decode_int(data.get("id"), "id"))
        return cls(identifier, decode_scalar(data.get("share"), f"signature share of {identifier}"))
