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
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from certs.ed25519_group import GroupError, Point, RandomBytes, Scalar
from peermesh.core.durable import SECRET_MODE, atomic_write

__all__ = [
    "CONTEXT_STRING",
    "MAX_IDENTIFIER",
    "FileNonceStore",
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

CONTEXT_STRING: Final[bytes] = b"FROST-ED25519-SHA512-v1"
#: Identifiers are small positive integers; 16 bits is far more than any committee.
MAX_IDENTIFIER: Final[int] = 0xFFFF


class FrostError(ValueError):
    """A FROST input is invalid or a session cannot complete; the message says why."""


class InvalidSignatureShares(FrostError):
    """One or more signature shares failed verification; ``culprits`` names their senders."""

    def __init__(self, culprits: Sequence[int]) -> None:
        self.culprits: tuple[int, ...] = tuple(sorted(culprits))
        who = ", ".join(str(i) for i in self.culprits)
        super().__init__(f"invalid signature share from participant(s) {who}")


class NonceError(FrostError):
    """A signing nonce cannot be used."""


class NonceReuseError(NonceError):
    """The nonce for these commitments was already consumed: signing again would leak the key."""


class UnknownNonceError(NonceError):
    """No stored nonce matches these commitments (never created here, or long forgotten)."""


def check_identifier(identifier: int) -> int:
    """Validate a participant identifier (a NonZeroScalar that fits our wire format)."""
    if isinstance(identifier, bool) or not isinstance(identifier, int):
        raise FrostError(f"identifier must be an int, got {type(identifier).__name__}")
    if not 1 <= identifier <= MAX_IDENTIFIER:
        raise FrostError(f"identifier {identifier} outside 1..{MAX_IDENTIFIER}")
    return identifier


# ----------------------------------------------------------------------------------------
# Hash functions (RFC 9591 §6.1)
# ----------------------------------------------------------------------------------------


def _sha512(*parts: bytes) -> bytes:
    h = hashlib.sha512()
    for part in parts:
        h.update(part)
    return h.digest()


def h1(m: bytes) -> Scalar:
    """Binding-factor hash ("rho")."""
    return Scalar.reduce(_sha512(CONTEXT_STRING, b"rho", m))


def h2(m: bytes) -> Scalar:
    """Challenge hash: plain SHA-512 without a domain separator, for RFC 8032 compatibility."""
    return Scalar.reduce(_sha512(m))


def h3(m: bytes) -> Scalar:
    """Nonce hash."""
    return Scalar.reduce(_sha512(CONTEXT_STRING, b"nonce", m))


def h4(m: bytes) -> bytes:
    """Message hash."""
    return _sha512(CONTEXT_STRING, b"msg", m)


def h5(m: bytes) -> bytes:
    """Commitment-list hash."""
    return _sha512(CONTEXT_STRING, b"com", m)


# ----------------------------------------------------------------------------------------
# Polynomials, interpolation, VSS (RFC 9591 §4.2, App. C)
# ----------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------
# Key material
# ----------------------------------------------------------------------------------------


def _element(data: Any, what: str) -> Point:
    if not isinstance(data, bytes | bytearray):
        raise FrostError(f"{what}: expected bytes")
    try:
        return Point.from_bytes(bytes(data))
    except GroupError as exc:
        raise FrostError(f"{what}: {exc}") from exc


def _scalar(data: Any, what: str) -> Scalar:
    if not isinstance(data, bytes | bytearray):
        raise FrostError(f"{what}: expected bytes")
    try:
        return Scalar.from_bytes(bytes(data))
    except GroupError as exc:
        raise FrostError(f"{what}: {exc}") from exc


def _wire_int(data: Any, what: str) -> int:
    if isinstance(data, bool) or not isinstance(data, int):
        raise FrostError(f"{what}: expected an int")
    return data


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
            identifier=check_identifier(_wire_int(data.get("id"), "id")),
            secret=_scalar(data.get("secret"), "secret"),
            group_public_key=_element(data.get("group_public_key"), "group_public_key"),
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
            i = check_identifier(_wire_int(pair[0], "verification share id"))
            if i in shares:
                raise FrostError(f"verification_shares: duplicate participant {i}")
            shares[i] = _element(pair[1], f"verification share of {i}")
        return cls(
            threshold=_wire_int(data.get("threshold"), "threshold"),
            group_public_key=_element(data.get("group_public_key"), "group_public_key"),
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
        identifier = check_identifier(_wire_int(data.get("id"), "id"))
        return cls(
            identifier=identifier,
            hiding=_element(data.get("hiding"), f"hiding commitment of {identifier}"),
            binding=_element(data.get("binding"), f"binding commitment of {identifier}"),
        )


@dataclass(frozen=True)
class SigningNonces:
    """A participant's secret round-one nonces; lives only inside a :class:`NonceStore`."""

    identifier: int
    hiding: Scalar
    binding: Scalar
    commitments: SigningCommitments = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "commitments",
            SigningCommitments(
                self.identifier, Point.base_mul(self.hiding), Point.base_mul(self.binding)
            ),
        )


class NonceStore(Protocol):
    """Holds round-one nonces until they are used, and makes each usable exactly once."""

    def add(self, nonces: SigningNonces) -> None:
        """Remember fresh nonces (durably, if the store is durable)."""
        ...

    def consume(self, commitments: SigningCommitments) -> SigningNonces:
        """Return the nonces for ``commitments`` and forget them, durably, before returning.

        Raises :class:`NonceReuseError` if they were already consumed and
        :class:`UnknownNonceError` if they were never stored here.
        """
        ...


class MemoryNonceStore:
    """In-memory :class:`NonceStore`: nonces die with the process, so a crash cannot reuse them."""

    def __init__(self) -> None:
        self._pending: dict[str, SigningNonces] = {}
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def add(self, nonces: SigningNonces) -> None:
        """Remember fresh nonces."""
        nid = nonces.commitments.nonce_id()
        with self._lock:
            if nid in self._used or nid in self._pending:
                raise NonceReuseError(f"nonce {nid[:16]} was already issued")
            self._pending[nid] = nonces

    def consume(self, commitments: SigningCommitments) -> SigningNonces:
        """Hand out the nonces once."""
        nid = commitments.nonce_id()
        with self._lock:
            if nid in self._used:
                raise NonceReuseError(f"nonce {nid[:16]} was already used")
            nonces = self._pending.pop(nid, None)
            if nonces is None:
                raise UnknownNonceError(f"no stored nonce for commitments {nid[:16]}")
            self._used.add(nid)
            return nonces

    def __len__(self) -> int:
        return len(self._pending)


class FileNonceStore:
    """A durable :class:`NonceStore` in one file (mode 0600), for pre-generated commitments.

    Every change rewrites the file with :func:`peermesh.core.durable.atomic_write` (write, fsync,
    rename, fsync dir).  :meth:`consume` records the nonce as used and drops its secret
    *before* returning it, so no crash can bring back a nonce whose share may already be
    out.  A failed write leaves the nonce unusable in memory too (fail closed).  One
    process per file; the last ``remember_used`` used ids are kept for a clear
    "already used" error.

    Round one can be asked for and round two never come (a coordinator that crashed or
    picked other signers), so each :meth:`add` also drops nonces older than ``max_age``
    seconds and the oldest beyond ``max_pending``: forgetting an unused nonce is always
    safe (its commitment just cannot be used any more), and it keeps the file, which is
    rewritten on every change, small.
    """

    _VERSION: Final[int] = 1

    def __init__(
        self,
        path: Path | str,
        *,
        remember_used: int = 4096,
        max_age: float = 600.0,
        max_pending: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = Path(path)
        self._remember = remember_used
        self._max_age = max_age
        self._max_pending = max_pending
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, SigningNonces] = {}  # insertion order = age order
        self._added: dict[str, float] = {}
        self._used: list[str] = []
        self.expired = 0  # unused nonces dropped by age or count
        if self._path.exists():
            self._load()

    @property
    def pending(self) -> int:
        """Nonces issued in round one and not used yet."""
        return len(self._pending)

    def _expire(self, now: float) -> None:
        """Make room for one more: drop nonces past ``max_age``, then the oldest over the cap."""
        horizon = now - self._max_age
        stale = [nid for nid, at in self._added.items() if at < horizon]
        gone = set(stale)
        excess = len(self._pending) - len(stale) - (self._max_pending - 1)
        if excess > 0:
            stale += [nid for nid in self._pending if nid not in gone][:excess]
        for nid in stale:
            del self._pending[nid]
            del self._added[nid]
        self.expired += len(stale)

    def _load(self) -> None:
        try:
            state = json.loads(self._path.read_bytes())
            if state.get("version") != self._VERSION:
                raise ValueError(f"unsupported version {state.get('version')!r}")
            for nid, entry in state["pending"].items():
                nonces = SigningNonces(
                    identifier=check_identifier(int(entry["id"])),
                    hiding=Scalar.from_bytes(bytes.fromhex(entry["hiding"])),
                    binding=Scalar.from_bytes(bytes.fromhex(entry["binding"])),
                )
                if nonces.commitments.nonce_id() != nid:
                    raise ValueError("nonce id does not match its nonces")
                self._pending[nid] = nonces
                self._added[nid] = float(entry.get("added", self._clock()))
            self._used = [str(x) for x in state["used"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise NonceError(f"nonce store {self._path} is corrupt: {exc}") from exc

    def _save(self) -> None:
        state = {
            "version": self._VERSION,
            "pending": {
                nid: {
                    "id": n.identifier,
                    "hiding": n.hiding.to_bytes().hex(),
                    "binding": n.binding.to_bytes().hex(),
                    "added": self._added[nid],
                }
                for nid, n in self._pending.items()
            },
            "used": self._used[-self._remember :],
        }
        atomic_write(self._path, json.dumps(state).encode(), mode=SECRET_MODE)

    def add(self, nonces: SigningNonces) -> None:
        """Persist fresh nonces before their commitments are published."""
        nid = nonces.commitments.nonce_id()
        with self._lock:
            if nid in self._pending or nid in self._used:
                raise NonceReuseError(f"nonce {nid[:16]} was already issued")
            now = self._clock()
            self._expire(now)
            self._pending[nid] = nonces
            self._added[nid] = now
            try:
                self._save()
            except BaseException:
                del self._pending[nid]
                del self._added[nid]
                raise

    def consume(self, commitments: SigningCommitments) -> SigningNonces:
        """Durably mark the nonce used, then hand it out."""
        nid = commitments.nonce_id()
        with self._lock:
            if nid in self._used:
                raise NonceReuseError(f"nonce {nid[:16]} was already used")
            nonces = self._pending.pop(nid, None)
            if nonces is None:
                raise UnknownNonceError(
                    f"no stored nonce for commitments {nid[:16]} (never issued here, or unused"
                    f" for over {self._max_age:.0f} s and dropped)"
                )
            del self._added[nid]
            self._used.append(nid)
            del self._used[: -self._remember]
            self._save()  # if this raises, the nonce stays gone from memory: fail closed
            return nonces

    def __len__(self) -> int:
        return len(self._pending)


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
        identifier = check_identifier(_wire_int(data.get("id"), "id"))
        return cls(identifier, _scalar(data.get("share"), f"signature share of {identifier}"))


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
