"""The two signing rounds and aggregation (RFC 9591 §4.1, §4.3 to §5.4), sans-IO."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from certs.ed25519_group import Point, RandomBytes, Scalar
from certs.frost.errors import FrostError, InvalidSignatureShares, NonceError
from certs.frost.hashes import h1, h2, h3, h4, h5
from certs.frost.keys import PublicKeyPackage, SigningKeyShare
from certs.frost.messages import SignatureShare, SigningCommitments, SigningPackage
from certs.frost.nonces import NonceStore, SigningNonces
from certs.frost.polynomial import derive_interpolating_value

__all__ = [
    "aggregate",
    "aggregate_unverified",
    "binding_factor_inputs",
    "commit",
    "compute_binding_factors",
    "compute_challenge",
    "compute_group_commitment",
    "encode_group_commitment_list",
    "nonce_generate",
    "sign",
    "verify_signature",
    "verify_signature_share",
]


# ----------------------------------------------------------------------------------------
# Round one: nonces and commitments
# ----------------------------------------------------------------------------------------


def nonce_generate(secret: Scalar, random_bytes: bytes | None = None) -> Scalar:
    """RFC 9591 §4.1: H3(random_bytes || secret), hedging a weak RNG with the key share."""
    if random_bytes is None:
        random_bytes = secrets.token_bytes(32)
    if len(random_bytes) != 32:
        raise FrostError("nonce_generate needs exactly 32 random bytes")
    return h3(random_bytes + secret.to_bytes())


def commit(
    key: SigningKeyShare,
    store: NonceStore,
    *,
    random_bytes: RandomBytes = secrets.token_bytes,
) -> SigningCommitments:
    """RFC 9591 §5.1 round one: fresh nonces into ``store``, commitments out."""
    hiding = nonce_generate(key.secret, random_bytes(32))
    binding = nonce_generate(key.secret, random_bytes(32))
    nonces = SigningNonces(key.identifier, hiding, binding)
    store.add(nonces)
    return nonces.commitments


# ----------------------------------------------------------------------------------------
# Round two: binding factors, group commitment, challenge, shares
# ----------------------------------------------------------------------------------------


def encode_group_commitment_list(commitments: Sequence[SigningCommitments]) -> bytes:
    """RFC 9591 §4.3: identifier || hiding || binding for each participant, in order."""
    return b"".join(
        Scalar.from_int(c.identifier).to_bytes() + c.hiding.to_bytes() + c.binding.to_bytes()
        for c in commitments
    )


def binding_factor_inputs(
    group_public_key: Point, commitments: Sequence[SigningCommitments], message: bytes
) -> dict[int, bytes]:
    """The per-participant H1 input ``rho_input`` of RFC 9591 §4.4 (exposed for vectors)."""
    prefix = (
        group_public_key.to_bytes() + h4(message) + h5(encode_group_commitment_list(commitments))
    )
    return {c.identifier: prefix + Scalar.from_int(c.identifier).to_bytes() for c in commitments}


def compute_binding_factors(
    group_public_key: Point, commitments: Sequence[SigningCommitments], message: bytes
) -> dict[int, Scalar]:
    """RFC 9591 §4.4."""
    return {
        i: h1(rho_input)
        for i, rho_input in binding_factor_inputs(group_public_key, commitments, message).items()
    }


def compute_group_commitment(
    commitments: Sequence[SigningCommitments], binding_factors: Mapping[int, Scalar]
) -> Point:
    """RFC 9591 §4.5: R = sum(D_i + rho_i * E_i)."""
    result = Point.identity()
    for c in commitments:
        result = result + c.hiding + c.binding * binding_factors[c.identifier]
    return result


def compute_challenge(group_commitment: Point, group_public_key: Point, message: bytes) -> Scalar:
    """RFC 9591 §4.6: the RFC 8032 challenge H2(R || PK || msg)."""
    return h2(group_commitment.to_bytes() + group_public_key.to_bytes() + message)


@dataclass(frozen=True)
class _Session:
    """Everything derived from (package, group key) that signers and coordinator share."""

    binding_factors: Mapping[int, Scalar]
    group_commitment: Point
    challenge: Scalar

    @classmethod
    def derive(cls, package: SigningPackage, group_public_key: Point) -> _Session:
        factors = compute_binding_factors(group_public_key, package.commitments, package.message)
        group_commitment = compute_group_commitment(package.commitments, factors)
        if group_commitment.is_identity():
            raise FrostError("group commitment is the identity")
        challenge = compute_challenge(group_commitment, group_public_key, package.message)
        return cls(factors, group_commitment, challenge)


def sign(key: SigningKeyShare, package: SigningPackage, store: NonceStore) -> SignatureShare:
    """RFC 9591 §5.2 round two, with the nonce consumed (durably) before the share exists.

    Run your application checks on ``package.message`` first: once this returns, the
    nonce is gone whether or not the share is ever sent.
    """
    mine = package.commitment_for(key.identifier)
    session = _Session.derive(package, key.group_public_key)
    lam = derive_interpolating_value(package.identifiers, key.identifier)
    nonces = store.consume(mine)
    if nonces.commitments != mine:  # defensive: a store must return what was asked for
        raise NonceError("nonce store returned nonces for other commitments")
    rho = session.binding_factors[key.identifier]
    z = nonces.hiding + nonces.binding * rho + lam * key.secret * session.challenge
    del nonces
    return SignatureShare(key.identifier, z)


def verify_signature_share(
    share: SignatureShare, package: SigningPackage, public: PublicKeyPackage
) -> bool:
    """RFC 9591 §5.4: does this share match its sender's commitments and verification share?"""
    return _verify_share(share, package, public, _Session.derive(package, public.group_public_key))


def _verify_share(
    share: SignatureShare, package: SigningPackage, public: PublicKeyPackage, session: _Session
) -> bool:
    comm = package.commitment_for(share.identifier)
    public_key_i = public.verification_share(share.identifier)
    comm_share = comm.hiding + comm.binding * session.binding_factors[share.identifier]
    lam = derive_interpolating_value(package.identifiers, share.identifier)
    left = Point.base_mul(share.share)
    right = comm_share + public_key_i * (session.challenge * lam)
    return left == right


def _collect_shares(
    package: SigningPackage, shares: Iterable[SignatureShare]
) -> dict[int, SignatureShare]:
    by_id: dict[int, SignatureShare] = {}
    for s in shares:
        if s.identifier in by_id:
            raise FrostError(f"two signature shares from participant {s.identifier}")
        by_id[s.identifier] = s
    expected = set(package.identifiers)
    missing = sorted(expected - set(by_id))
    extra = sorted(set(by_id) - expected)
    if missing:
        raise FrostError(f"missing signature share from participant(s) {missing}")
    if extra:
        raise FrostError(f"signature share from participant(s) {extra} not in the package")
    return by_id


def aggregate_unverified(
    package: SigningPackage, shares: Iterable[SignatureShare], group_public_key: Point
) -> bytes:
    """RFC 9591 §5.3 as written: R || z with no verification (tests, benchmarks)."""
    by_id = _collect_shares(package, shares)
    session = _Session.derive(package, group_public_key)
    z = Scalar.ZERO
    for s in by_id.values():
        z = z + s.share
    return session.group_commitment.to_bytes() + z.to_bytes()


def aggregate(
    package: SigningPackage, shares: Iterable[SignatureShare], public: PublicKeyPackage
) -> bytes:
    """Aggregate, verify the Ed25519 signature, and name the cheaters if it is invalid."""
    by_id = _collect_shares(package, shares)
    if len(by_id) < public.threshold:
        raise FrostError(
            f"{len(by_id)} signature share(s) is fewer than the threshold {public.threshold}"
        )
    for i in by_id:
        public.verification_share(i)
    signature = aggregate_unverified(package, by_id.values(), public.group_public_key)
    if verify_signature(public.group_public_key, package.message, signature):
        return signature
    session = _Session.derive(package, public.group_public_key)
    culprits = [i for i, s in by_id.items() if not _verify_share(s, package, public, session)]
    if culprits:
        raise InvalidSignatureShares(culprits)
    raise FrostError("aggregate signature does not verify although every share does")


def verify_signature(group_public_key: Point | bytes, message: bytes, signature: bytes) -> bool:
    """Plain Ed25519 verification (OpenSSL via ``cryptography``): what relying parties run."""
    key = group_public_key.to_bytes() if isinstance(group_public_key, Point) else group_public_key
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
