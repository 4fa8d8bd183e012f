"""FROST(Ed25519, SHA-512): RFC 9591 vectors, group checks, threshold properties, nonce safety."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import nacl.bindings
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from certs import frost
from certs.ed25519_group import ORDER, GroupError, Point, Scalar
from certs.frost import (
    FrostError,
    InvalidSignatureShares,
    MemoryNonceStore,
    NonceReuseError,
    PublicKeyPackage,
    SignatureShare,
    SigningCommitments,
    SigningKeyShare,
    SigningPackage,
    UnknownNonceError,
)

# --------------------------------------------------------------------------------------
# RFC 9591 Appendix E.1: FROST(Ed25519, SHA-512), MIN_PARTICIPANTS=2, MAX_PARTICIPANTS=3,
# signers 1 and 3 (values from the RFC's test-vector data, cfrg/draft-irtf-cfrg-frost).
# --------------------------------------------------------------------------------------
E1_GROUP_SECRET_KEY = "7b1c33d3f5291d85de664833beb1ad469f7fb6025a0ec78b3a790c6e13a98304"
E1_GROUP_PUBLIC_KEY = "15d21ccd7ee42959562fc8aa63224c8851fb3ec85a3faf66040d380fb9738673"
E1_MESSAGE = "74657374"
E1_COEFFICIENTS = ["178199860edd8c62f5212ee91eff1295d0d670ab4ed4506866bae57e7030b204"]
E1_PARTICIPANT_SHARES: dict[int, str] = {
    1: "929dcc590407aae7d388761cddb0c0db6f5627aea8e217f4a033f2ec83d93509",
    2: "a91e66e012e4364ac9aaa405fcafd370402d9859f7b6685c07eed76bf409e80d",
    3: "d3cb090a075eb154e82fdb4b3cb507f110040905468bb9c46da8bdea643a9a02",
}
E1_ROUND_ONE: dict[int, dict[str, str]] = {
    1: {
        "hiding_randomness": "0fd2e39e111cdc266f6c0f4d0fd45c947761f1f5d3cb583dfcb9bbaf8d4c9fec",
        "binding_randomness": "69cd85f631d5f7f2721ed5e40519b1366f340a87c2f6856363dbdcda348a7501",
        "hiding_nonce": "812d6104142944d5a55924de6d49940956206909f2acaeedecda2b726e630407",
        "binding_nonce": "b1110165fc2334149750b28dd813a39244f315cff14d4e89e6142f262ed83301",
        "hiding_commitment": "b5aa8ab305882a6fc69cbee9327e5a45e54c08af61ae77cb8207be3d2ce13de3",
        "binding_commitment": "67e98ab55aa310c3120418e5050c9cf76cf387cb20ac9e4b6fdb6f82a469f932",
        "binding_factor_input": (
            "15d21ccd7ee42959562fc8aa63224c8851fb3ec85a3faf66040d380fb9738673"
            "504df914fa965023fb75c25ded4bb260f417de6d32e5c442c6ba313791cc9a49"
            "48d6273e8d3511f93348ea7a708a9b862bc73ba2a79cfdfe07729a193751cbc9"
            "73af46d8ac3440e518d4ce440a0e7d4ad5f62ca8940f32de6d8dc00fc12c660b"
            "817d587d82f856d277ce6473cae6d2f5763f7da2e8b4d799a3f3e725d4522ec7"
            "0100000000000000000000000000000000000000000000000000000000000000"
        ),
        "binding_factor": "f2cb9d7dd9beff688da6fcc83fa89046b3479417f47f55600b106760eb3b5603",
    },
    3: {
        "hiding_randomness": "86d64a260059e495d0fb4fcc17ea3da7452391baa494d4b00321098ed2a0062f",
        "binding_randomness": "13e6b25afb2eba51716a9a7d44130c0dbae0004a9ef8d7b5550c8a0e07c61775",
        "hiding_nonce": "c256de65476204095ebdc01bd11dc10e57b36bc96284595b8215222374f99c0e",
        "binding_nonce": "243d71944d929063bc51205714ae3c2218bd3451d0214dfb5aeec2a90c35180d",
        "hiding_commitment": "cfbdb165bd8aad6eb79deb8d287bcc0ab6658ae57fdcc98ed12c0669e90aec91",
        "binding_commitment": "7487bc41a6e712eea2f2af24681b58b1cf1da278ea11fe4e8b78398965f13552",
        "binding_factor_input": (
            "15d21ccd7ee42959562fc8aa63224c8851fb3ec85a3faf66040d380fb9738673"
            "504df914fa965023fb75c25ded4bb260f417de6d32e5c442c6ba313791cc9a49"
            "48d6273e8d3511f93348ea7a708a9b862bc73ba2a79cfdfe07729a193751cbc9"
            "73af46d8ac3440e518d4ce440a0e7d4ad5f62ca8940f32de6d8dc00fc12c660b"
            "817d587d82f856d277ce6473cae6d2f5763f7da2e8b4d799a3f3e725d4522ec7"
            "0300000000000000000000000000000000000000000000000000000000000000"
        ),
        "binding_factor": "b087686bf35a13f3dc78e780a34b0fe8a77fef1b9938c563f5573d71d8d7890f",
    },
}
E1_SIG_SHARES: dict[int, str] = {
    1: "001719ab5a53ee1a12095cd088fd149702c0720ce5fd2f29dbecf24b7281b603",
    3: "bd86125de990acc5e1f13781d8e32c03a9bbd4c53539bbc106058bfd14326007",
}
E1_SIG = (
    "36282629c383bb820a88b71cae937d41f2f2adfcc3d02e55507e2fb9e2dd3cbe"
    "bd9d2b0844e49ae0f3fa935161e1419aab7b47d21a37ebeae1f17d4987b3160b"
)


def _feeder(chunks: list[bytes]) -> Callable[[int], bytes]:
    """A random_bytes stand-in that replays the vector's randomness in order."""

    def random_bytes(n: int) -> bytes:
        chunk = chunks.pop(0)
        assert len(chunk) == n
        return chunk

    return random_bytes


def _scalar(hex_value: str) -> Scalar:
    return Scalar.from_bytes(bytes.fromhex(hex_value))


def test_rfc9591_e1_vectors_byte_for_byte() -> None:
    secret = _scalar(E1_GROUP_SECRET_KEY)
    coefficients = [_scalar(c) for c in E1_COEFFICIENTS]
    message = bytes.fromhex(E1_MESSAGE)

    # Trusted dealer: shares, VSS commitment, group key.
    shares = frost.secret_share_shard(secret, coefficients, 3)
    for i, expected in E1_PARTICIPANT_SHARES.items():
        assert shares[i].to_bytes().hex() == expected
    vss = frost.vss_commit([secret, *coefficients])
    public = frost.derive_group_info(3, 2, vss)
    assert public.group_public_key.to_bytes().hex() == E1_GROUP_PUBLIC_KEY
    for i, share in shares.items():
        assert frost.vss_verify(i, share, vss)
        assert public.verification_share(i) == Point.base_mul(share)

    # Round one from the given randomness.
    store = MemoryNonceStore()
    keys = {i: SigningKeyShare(i, shares[i], public.group_public_key) for i in (1, 3)}
    commitments = []
    for i, r1 in E1_ROUND_ONE.items():
        hiding_r = bytes.fromhex(r1["hiding_randomness"])
        binding_r = bytes.fromhex(r1["binding_randomness"])
        assert frost.nonce_generate(keys[i].secret, hiding_r).to_bytes().hex() == r1["hiding_nonce"]
        assert (
            frost.nonce_generate(keys[i].secret, binding_r).to_bytes().hex() == r1["binding_nonce"]
        )
        c = frost.commit(keys[i], store, random_bytes=_feeder([hiding_r, binding_r]))
        assert c.hiding.to_bytes().hex() == r1["hiding_commitment"]
        assert c.binding.to_bytes().hex() == r1["binding_commitment"]
        commitments.append(c)

    package = SigningPackage(message, tuple(commitments))
    inputs = frost.binding_factor_inputs(public.group_public_key, package.commitments, message)
    factors = frost.compute_binding_factors(public.group_public_key, package.commitments, message)
    for i, r1 in E1_ROUND_ONE.items():
        assert inputs[i].hex() == r1["binding_factor_input"]
        assert factors[i].to_bytes().hex() == r1["binding_factor"]

    # Round two and aggregation.
    sig_shares = [frost.sign(keys[i], package, store) for i in (1, 3)]
    for s in sig_shares:
        assert s.share.to_bytes().hex() == E1_SIG_SHARES[s.identifier]
        assert frost.verify_signature_share(s, package, public)
    signature = frost.aggregate(package, sig_shares, public)
    assert signature.hex() == E1_SIG
    Ed25519PublicKey.from_public_bytes(public.group_public_key.to_bytes()).verify(
        signature, message
    )


# --------------------------------------------------------------------------------------
# Group element and scalar validation (RFC 9591 DeserializeElement / DeserializeScalar)
# --------------------------------------------------------------------------------------

IDENTITY = bytes([1]) + bytes(31)
ORDER_2 = bytes.fromhex("ec" + "ff" * 30 + "7f")  # y = -1
ORDER_4 = bytes(32)  # y = 0
ORDER_8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")


@pytest.mark.parametrize(
    ("encoding", "reason"),
    [
        (IDENTITY, "element is the identity"),
        (bytes.fromhex("ed" + "ff" * 30 + "7f"), "non-canonical element encoding"),  # y = p
        (bytes.fromhex("ee" + "ff" * 30 + "7f"), "non-canonical element encoding"),  # y = p+1
        (bytes([1]) + bytes(30) + b"\x80", "non-canonical element encoding"),  # x=0, sign 1
        (ORDER_2, "element has small order"),
        (ORDER_4, "element has small order"),
        (ORDER_8, "element has small order"),
        (bytes([2]) + bytes(31), "element is not a point on edwards25519"),
        (b"\x01" * 31, "element must be 32 bytes, got 31"),
    ],
)
def test_deserialize_element_rejects(encoding: bytes, reason: str) -> None:
    with pytest.raises(GroupError) as err:
        Point.from_bytes(encoding)
    assert str(err.value) == reason


def test_deserialize_element_rejects_point_outside_prime_order_subgroup() -> None:
    p = Point.base_mul(Scalar.from_int(7)).to_bytes()
    mixed = nacl.bindings.crypto_core_ed25519_add(p, ORDER_8)
    with pytest.raises(GroupError, match=r"^element is not in the prime-order subgroup$"):
        Point.from_bytes(mixed)


def test_serialize_identity_is_refused() -> None:
    with pytest.raises(GroupError, match="identity"):
        Point.identity().to_bytes()
    g = Point.base_mul(Scalar.ONE)
    assert (g - g).is_identity()


@pytest.mark.parametrize(
    ("encoding", "reason"),
    [
        (ORDER.to_bytes(32, "little"), "non-canonical scalar encoding"),
        (b"\xff" * 32, "non-canonical scalar encoding"),
        (bytes(31), "scalar must be 32 bytes, got 31"),
    ],
)
def test_deserialize_scalar_rejects(encoding: bytes, reason: str) -> None:
    with pytest.raises(GroupError, match=reason):
        Scalar.from_bytes(encoding)


def test_scalar_arithmetic_and_redacted_repr() -> None:
    a, b = Scalar.from_int(12345), Scalar.from_int(678)
    assert int(a * b) == 12345 * 678
    assert int(a - b) == 12345 - 678
    assert int(b - a) == ORDER - (12345 - 678)
    assert a * a.inverse() == Scalar.ONE
    assert -a + a == Scalar.ZERO
    assert Scalar.from_bytes((ORDER - 1).to_bytes(32, "little")) == -Scalar.ONE
    assert "12345" not in repr(a) and repr(a) == "Scalar(<redacted>)"


def test_received_commitment_with_bad_element_is_rejected_on_the_wire() -> None:
    keys, _ = frost.trusted_dealer_keygen(3, 2)
    good = frost.commit(keys[1], MemoryNonceStore()).to_wire()
    for bad, why in ((IDENTITY, "identity"), (ORDER_8, "small order")):
        with pytest.raises(FrostError, match=f"hiding commitment of 1: element .*{why}"):
            SigningCommitments.from_wire({**good, "hiding": bad})
    with pytest.raises(FrostError, match="signature share of 2: non-canonical scalar"):
        SignatureShare.from_wire({"id": 2, "share": b"\xff" * 32})


# --------------------------------------------------------------------------------------
# Threshold properties
# --------------------------------------------------------------------------------------


def _sign_session(
    keys: dict[int, SigningKeyShare], signers: list[int], message: bytes
) -> tuple[SigningPackage, list[SignatureShare]]:
    store = MemoryNonceStore()
    package = SigningPackage(message, tuple(frost.commit(keys[i], store) for i in signers))
    return package, [frost.sign(keys[i], package, store) for i in signers]


@st.composite
def _committee(draw: st.DrawFn, min_t: int = 1) -> tuple[int, int, list[int], bytes]:
    n = draw(st.integers(max(min_t, 1), 7))
    t = draw(st.integers(min_t, n))
    size = draw(st.integers(t, n))
    signers = draw(st.permutations(range(1, n + 1)))[:size]
    message = draw(st.binary(max_size=64))
    return n, t, sorted(signers), message


@settings(max_examples=25, deadline=None)
@given(_committee())
def test_any_t_of_n_signs_a_valid_ed25519_signature(
    case: tuple[int, int, list[int], bytes],
) -> None:
    n, t, signers, message = case
    keys, public = frost.trusted_dealer_keygen(n, t)
    package, shares = _sign_session(keys, signers, message)
    signature = frost.aggregate(package, shares, public)
    Ed25519PublicKey.from_public_bytes(public.group_public_key.to_bytes()).verify(
        signature, message
    )


@settings(max_examples=20, deadline=None)
@given(_committee(min_t=2))
def test_fewer_than_t_cannot_sign(case: tuple[int, int, list[int], bytes]) -> None:
    n, t, signers, message = case
    keys, public = frost.trusted_dealer_keygen(n, t)
    too_few = signers[: t - 1]
    package, shares = _sign_session(keys, too_few, message)
    signature = frost.aggregate_unverified(package, shares, public.group_public_key)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(public.group_public_key.to_bytes()).verify(
            signature, message
        )
    with pytest.raises(FrostError, match="fewer than the threshold"):
        frost.aggregate(package, shares, public)


@pytest.mark.parametrize("culprits", [(2,), (1, 4)])
def test_corrupted_signature_share_is_detected_and_named(culprits: tuple[int, ...]) -> None:
    keys, public = frost.trusted_dealer_keygen(5, 3)
    package, shares = _sign_session(keys, [1, 2, 4], b"tbs")
    bad = [
        SignatureShare(s.identifier, s.share + Scalar.ONE) if s.identifier in culprits else s
        for s in shares
    ]
    for s in bad:
        assert frost.verify_signature_share(s, package, public) == (s.identifier not in culprits)
    with pytest.raises(InvalidSignatureShares) as err:
        frost.aggregate(package, bad, public)
    assert err.value.culprits == culprits
    assert str(err.value) == "invalid signature share from participant(s) " + ", ".join(
        map(str, culprits)
    )


def test_aggregate_refuses_missing_or_foreign_shares() -> None:
    keys, public = frost.trusted_dealer_keygen(3, 2)
    package, shares = _sign_session(keys, [1, 2], b"m")
    with pytest.raises(FrostError, match=r"missing signature share from participant\(s\) \[2\]"):
        frost.aggregate(package, shares[:1], public)
    with pytest.raises(FrostError, match="two signature shares from participant 1"):
        frost.aggregate(package, [*shares, shares[0]], public)


def test_signer_not_in_package_is_refused_without_burning_its_nonce() -> None:
    keys, _ = frost.trusted_dealer_keygen(3, 2)
    store = MemoryNonceStore()
    mine = frost.commit(keys[3], store)
    package = SigningPackage(b"m", (frost.commit(keys[1], store), frost.commit(keys[2], store)))
    with pytest.raises(FrostError, match="participant 3 is not in the signing package"):
        frost.sign(keys[3], package, store)
    assert store.consume(mine).identifier == 3


# --------------------------------------------------------------------------------------
# Nonce safety
# --------------------------------------------------------------------------------------


def test_nonce_used_twice_raises() -> None:
    keys, _ = frost.trusted_dealer_keygen(3, 2)
    store = MemoryNonceStore()
    package = SigningPackage(b"one", (frost.commit(keys[1], store), frost.commit(keys[2], store)))
    frost.sign(keys[1], package, store)
    with pytest.raises(NonceReuseError, match="already used"):
        frost.sign(keys[1], package, store)
    # Same commitments, different message: exactly the reuse that would leak the share.
    with pytest.raises(NonceReuseError):
        frost.sign(keys[1], SigningPackage(b"two", package.commitments), store)


def test_unknown_commitments_are_refused() -> None:
    keys, _ = frost.trusted_dealer_keygen(3, 2)
    foreign = frost.commit(keys[1], MemoryNonceStore())
    store = MemoryNonceStore()
    package = SigningPackage(b"m", (foreign, frost.commit(keys[2], store)))
    with pytest.raises(UnknownNonceError, match="no stored nonce"):
        frost.sign(keys[1], package, store)


def test_nonce_generate_needs_32_random_bytes() -> None:
    with pytest.raises(FrostError, match="32 random bytes"):
        frost.nonce_generate(Scalar.ONE, b"short")


# --------------------------------------------------------------------------------------
# Wire forms
# --------------------------------------------------------------------------------------


def test_wire_round_trips_through_msgpack() -> None:
    keys, public = frost.trusted_dealer_keygen(4, 3)
    package, shares = _sign_session(keys, [1, 2, 4], b"payload")

    def through(obj: dict[str, object]) -> dict[str, object]:
        result: dict[str, object] = msgpack.unpackb(msgpack.packb(obj))
        return result

    assert SigningPackage.from_wire(through(package.to_wire())) == package
    assert [SignatureShare.from_wire(through(s.to_wire())) for s in shares] == shares
    assert PublicKeyPackage.from_wire(through(public.to_wire())) == public
    assert SigningKeyShare.from_wire(through(keys[2].to_wire())) == keys[2]


def test_public_package_interpolates_new_participants() -> None:
    keys, public = frost.trusted_dealer_keygen(5, 3)
    partial = public.without_participants([4, 5])
    assert partial.with_participant(5).verification_share(5) == keys[5].public_key
