"""FROST(Ed25519, SHA-512) threshold signing exactly as RFC 9591, sans-IO.

The output of :func:`aggregate` is a plain 64-byte Ed25519 signature (RFC 8032) under
the group public key, so OpenSSL and ``cryptography`` verify it like any other.

Flow (one signing session):

1. each chosen signer calls :func:`commit` -> :class:`SigningCommitments` (its secret
   nonces stay in a :class:`NonceStore`);
2. the coordinator builds a :class:`SigningPackage` (message + sorted commitments);
3. each signer checks the message (application policy) and calls :func:`sign`, which
   durably marks its nonce as used *before* computing the share;
4. the coordinator calls :func:`aggregate`, which verifies the result and, if it is
   invalid, names the participants whose shares are wrong.

Nothing here ever reconstructs the group secret; the trusted dealer is for tests and
test vectors only.

Modules: :mod:`~certs.frost.hashes` (H1..H5), :mod:`~certs.frost.polynomial`
(interpolation, Shamir, VSS), :mod:`~certs.frost.keys` (shares and the public key
package), :mod:`~certs.frost.messages` (what crosses the wire),
:mod:`~certs.frost.nonces` (round-one secrets and their store),
:mod:`~certs.frost.signing` (the rounds and aggregation), :mod:`~certs.frost.wire`
(identifiers, checked decoding) and :mod:`~certs.frost.errors`.
Everything is importable from ``certs.frost`` itself.
"""

from __future__ import annotations

from certs.frost.errors import (
    FrostError,
    InvalidSignatureShares,
    NonceError,
    NonceReuseError,
    UnknownNonceError,
)
from certs.frost.hashes import CONTEXT_STRING, h1, h2, h3, h4, h5
from certs.frost.keys import (
    PublicKeyPackage,
    SigningKeyShare,
    derive_group_info,
    trusted_dealer_keygen,
)
from certs.frost.messages import SignatureShare, SigningCommitments, SigningPackage
from certs.frost.nonces import MemoryNonceStore, NonceStore, SigningNonces
from certs.frost.polynomial import (
    derive_interpolating_value,
    evaluate_vss_commitment,
    lagrange_coefficient,
    polynomial_evaluate,
    secret_share_shard,
    vss_commit,
    vss_verify,
)
from certs.frost.signing import (
    aggregate,
    aggregate_unverified,
    binding_factor_inputs,
    commit,
    compute_binding_factors,
    compute_challenge,
    compute_group_commitment,
    encode_group_commitment_list,
    nonce_generate,
    sign,
    verify_signature,
    verify_signature_share,
)
from certs.frost.wire import MAX_IDENTIFIER, check_identifier

__all__ = [
    "CONTEXT_STRING",
    "MAX_IDENTIFIER",
    "FrostError",
    "InvalidSignatureShares",
    "MemoryNonceStore",
    "NonceError",
    "NonceReuseError",
    "NonceStore",
    "PublicKeyPackage",
    "SignatureShare",
    "SigningCommitments",
    "SigningKeyShare",
    "SigningNonces",
    "SigningPackage",
    "UnknownNonceError",
    "aggregate",
    "aggregate_unverified",
    "binding_factor_inputs",
    "check_identifier",
    "commit",
    "compute_binding_factors",
    "compute_challenge",
    "compute_group_commitment",
    "derive_group_info",
    "derive_interpolating_value",
    "encode_group_commitment_list",
    "evaluate_vss_commitment",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "lagrange_coefficient",
    "nonce_generate",
    "polynomial_evaluate",
    "secret_share_shard",
    "sign",
    "trusted_dealer_keygen",
    "verify_signature",
    "verify_signature_share",
    "vss_commit",
    "vss_verify",
]
