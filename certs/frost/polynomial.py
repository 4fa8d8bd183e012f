"""Polynomials, Lagrange interpolation, Shamir sharing and Feldman VSS (RFC 9591 §4.2, App. C)."""

from __future__ import annotations

from collections.abc import Sequence

from certs.ed25519_group import Point, Scalar
from certs.frost.errors import FrostError
from certs.frost.wire import MAX_IDENTIFIER

__all__ = [
    "derive_interpolating_value",
    "evaluate_vss_commitment",
    "lagrange_coefficient",
    "polynomial_evaluate",
    "secret_share_shard",
    "vss_commit",
    "vss_verify",
]


def polynomial_evaluate(x: Scalar, coefficients: Sequence[Scalar]) -> Scalar:
    """Horner evaluation of ``coefficients`` (constant term first) at ``x``."""
    value = Scalar.ZERO
    for coefficient in reversed(coefficients):
        value = value * x + coefficient
    return value


def lagrange_coefficient(identifiers: Sequence[int], identifier: int, x: int = 0) -> Scalar:
    """The Lagrange basis polynomial for ``identifier`` over ``identifiers``, evaluated at ``x``.

    ``x = 0`` gives RFC 9591's ``derive_interpolating_value``; other ``x`` serve share
    repair (interpolating a share at a new index).
    """
    if identifier not in identifiers:
        raise FrostError("invalid parameters: identifier not in the list")
    if len(set(identifiers)) != len(identifiers):
        raise FrostError("invalid parameters: duplicate identifiers")
    x_i = Scalar.from_int(identifier)
    at = Scalar.from_int(x)
    numerator = Scalar.ONE
    denominator = Scalar.ONE
    for other in identifiers:
        if other == identifier:
            continue
        x_j = Scalar.from_int(other)
        numerator = numerator * (at - x_j)
        denominator = denominator * (x_i - x_j)
    return numerator * denominator.inverse()


def derive_interpolating_value(identifiers: Sequence[int], identifier: int) -> Scalar:
    """RFC 9591 §4.2: the Lagrange coefficient of ``identifier`` at 0."""
    return lagrange_coefficient(identifiers, identifier, 0)


def secret_share_shard(
    secret: Scalar, coefficients: Sequence[Scalar], max_participants: int
) -> dict[int, Scalar]:
    """Shamir shares f(1)..f(n) of the polynomial ``[secret, *coefficients]``."""
    if max_participants < 1 or max_participants > MAX_IDENTIFIER:
        raise FrostError(f"invalid number of participants {max_participants}")
    poly = [secret, *coefficients]
    return {
        i: polynomial_evaluate(Scalar.from_int(i), poly) for i in range(1, max_participants + 1)
    }


def vss_commit(coefficients: Sequence[Scalar]) -> tuple[Point, ...]:
    """Feldman commitment: each coefficient times the base point."""
    return tuple(Point.base_mul(c) for c in coefficients)


def evaluate_vss_commitment(identifier: int, commitment: Sequence[Point]) -> Point:
    """``sum_j commitment[j] * identifier^j``: the public image of f(identifier)."""
    x = Scalar.from_int(identifier)
    result = Point.identity()
    power = Scalar.ONE
    for c in commitment:
        result = result + c * power
        power = power * x
    return result


def vss_verify(identifier: int, share: Scalar, commitment: Sequence[Point]) -> bool:
    """True iff ``share`` is f(identifier) for the polynomial committed to."""
    return Point.base_mul(share) == evaluate_vss_commitment(identifier, commitment)
