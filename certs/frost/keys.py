"""Key material: one participant's secret share and the group's public key package."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from certs.ed25519_group import Point, RandomBytes, Scalar
from certs.frost.errors import FrostError
from certs.frost.polynomial import (
    evaluate_vss_commitment,
    lagrange_coefficient,
    secret_share_shard,
    vss_commit,
)
from certs.frost.wire import check_identifier, decode_element, decode_int, decode_scalar

__all__ = ["PublicKeyPackage", "SigningKeyShare", "derive_group_info", "trusted_dealer_keygen"]


@dataclass(frozen=True)
class SigningKeyShare:
    """One participant's secret share of the group key (never the whole key)."""

    identifier: int
    secret: Scalar
    group_public_key: Point

    def __post_init__(self) -> None:
        check_identifier(self.identifier)

    @property
    def public_key(self) -> Point:
        """This participant's verification share ``secret * B``."""
        return Point.base_mul(self.secret)

    def to_wire(self) -> dict[str, Any]:
        """Storage form (the share is secret: store it with mode 0600)."""
        return {
            "id": self.identifier,
            "secret": self.secret.to_bytes(),
            "group_public_key": self.group_public_key.to_bytes(),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> SigningKeyShare:
        """Parse and validate :meth:`to_wire` output."""
        return cls(
            identifier=check_identifier(decode_int(data.get("id"), "id")),
            secret=decode_scalar(data.get("secret"), "secret"),
            group_public_key=decode_element(data.get("group_public_key"), "group_public_key"),
        )


@dataclass(frozen=True)
class PublicKeyPackage:
    """The public "group info": threshold, group key, and every participant's verification share."""

    threshold: int
    group_public_key: Point
    verification_shares: Mapping[int, Point] = field(hash=False)

    def __post_init__(self) -> None:
        shares = {check_identifier(i): p for i, p in sorted(self.verification_shares.items())}
        if not 1 <= self.threshold <= max(len(shares), 1):
            raise FrostError(f"threshold {self.threshold} impossible with {len(shares)} shares")
        object.__setattr__(self, "verification_shares", MappingProxyType(shares))

    @property
    def identifiers(self) -> tuple[int, ...]:
        """Participants, ascending."""
        return tuple(self.verification_shares)

    def verification_share(self, identifier: int) -> Point:
        """The public key of ``identifier``'s share."""
        try:
            return self.verification_shares[identifier]
        except KeyError:
            raise FrostError(f"participant {identifier} is not in the group") from None

    def interpolate_verification_share(self, identifier: int) -> Point:
        """The verification share at any index, interpolated in the exponent from t known ones."""
        check_identifier(identifier)
        if identifier in self.verification_shares:
            return self.verification_shares[identifier]
        basis = self.identifiers[: self.threshold]
        result = Point.identity()
        for j in basis:
            result = result + self.verification_shares[j] * lagrange_coefficient(
                basis, j, identifier
            )
        return result

    def with_participant(self, identifier: int) -> PublicKeyPackage:
        """This package extended by ``identifier`` (after enrolment by repair)."""
        shares = dict(self.verification_shares)
        shares[identifier] = self.interpolate_verification_share(identifier)
        return PublicKeyPackage(self.threshold, self.group_public_key, shares)

    def without_participants(self, identifiers: Iterable[int]) -> PublicKeyPackage:
        """This package with some participants dropped (they keep nothing useful after refresh)."""
        gone = set(identifiers)
        shares = {i: p for i, p in self.verification_shares.items() if i not in gone}
        return PublicKeyPackage(self.threshold, self.group_public_key, shares)

    def to_wire(self) -> dict[str, Any]:
        """msgpack/JSON-friendly form (lists of ``[id, bytes]`` pairs, no int map keys)."""
        return {
            "threshold": self.threshold,
            "group_public_key": self.group_public_key.to_bytes(),
            "verification_shares": [[i, p.to_bytes()] for i, p in self.verification_shares.items()],
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> PublicKeyPackage:
        """Parse and validate :meth:`to_wire` output."""
        pairs = data.get("verification_shares")
        if not isinstance(pairs, list | tuple):
            raise FrostError("verification_shares: expected a list")
        shares: dict[int, Point] = {}
        for pair in pairs:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise FrostError("verification_shares: expected [id, element] pairs")
            i = check_identifier(decode_int(pair[0], "verification share id"))
            if i in shares:
                raise FrostError(f"verification_shares: duplicate participant {i}")
            shares[i] = decode_element(pair[1], f"verification share of {i}")
        return cls(
            threshold=decode_int(data.get("threshold"), "threshold"),
            group_public_key=decode_element(data.get("group_public_key"), "group_public_key"),
            verification_shares=shares,
        )


def derive_group_info(
    max_participants: int, min_participants: int, vss_commitment: Sequence[Point]
) -> PublicKeyPackage:
    """RFC 9591 App. C.2: group key and verification shares from a VSS commitment."""
    if len(vss_commitment) != min_participants:
        raise FrostError("VSS commitment length must equal the threshold")
    shares = {i: evaluate_vss_commitment(i, vss_commitment) for i in range(1, max_participants + 1)}
    return PublicKeyPackage(min_participants, vss_commitment[0], shares)


def trusted_dealer_keygen(
    max_participants: int,
    min_participants: int,
    *,
    random_bytes: RandomBytes = secrets.token_bytes,
) -> tuple[dict[int, SigningKeyShare], PublicKeyPackage]:
    """RFC 9591 App. C: a dealer shares a fresh random key (tests and vectors only).

    The dealer necessarily holds the whole key for a moment, which is exactly what
    peermesh avoids in production (use :mod:`certs.dkg` there).
    """
    if not 1 <= min_participants <= max_participants:
        raise FrostError(f"invalid threshold {min_participants} of {max_participants}")
    secret = Scalar.random_nonzero(random_bytes)
    coefficients = [Scalar.random_nonzero(random_bytes) for _ in range(min_participants - 1)]
    shares = secret_share_shard(secret, coefficients, max_participants)
    public = derive_group_info(
        max_participants, min_participants, vss_commit([secret, *coefficients])
    )
    del secret, coefficients
    keys = {i: SigningKeyShare(i, s, public.group_public_key) for i, s in sorted(shares.items())}
    return keys, public
