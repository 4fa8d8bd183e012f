"""Distributed key generation, proactive refresh and share repair for FROST(Ed25519), sans-IO.

* **DKG** — Pedersen DKG with proofs of knowledge (Komlo & Goldberg 2020, FROST
  KeyGen): every participant deals a random polynomial, broadcasts Feldman
  commitments and a Schnorr proof of knowledge of its constant term (bound to the
  session id and its identifier), then sends each other participant its share,
  encrypted.  The group secret is the sum of the constant terms and never exists.
* **Refresh** — the same two rounds, but every polynomial has constant term zero:
  shares change, the group key does not, and old shares no longer combine with new.
* **Repair / enrolment** — the repairable threshold scheme of Laing & Stinson: t
  helpers give participant ``i`` its share f(i) without learning it.  Helper j splits
  ``lambda_j(i) * s_j`` into random summands, one per helper; each helper adds what it
  received and forwards the sum to ``i``.  Every summand is committed (``delta * B``),
  so a wrong value is caught and attributed.

Authentication and evidence.  Every message is signed with its sender's long-term
Ed25519 identity key (``Roster.identity_keys``), so a message is evidence anyone can
check.  Round two echoes the round-one messages its sender saw: two different signed
versions of one message prove equivocation, which keeps every honest participant on
the same group key or aborts the run naming the culprit.

Encryption (documented choice).  Each recipient publishes in its first message a
fresh X25519 key *per sender* (per session).  A sender encrypts with an ephemeral
X25519 key to that recipient key (ephemeral-static ECDH), derives a one-time key
with HKDF-SHA256 and seals with ChaCha20-Poly1305 (zero nonce, as the key is used
once), binding protocol, purpose, session, sender and recipient in the HKDF info and
the AAD.  A recipient that gets a bad share complains by revealing only the X25519
secret it published for that one sender: anyone can then decrypt that single
ciphertext and check it against the sender's commitments.  The revealed key opens
nothing but a value the accused itself chose, so complaining leaks nothing.

Every machine has ``start() -> list[message]`` and ``receive(message) -> list[message]``;
all messages are broadcasts (deliver them to every member of the roster), frozen
dataclasses with ``to_wire()`` / :func:`message_from_wire` for msgpack.  A machine that
sees misbehaviour returns a :class:`Complaint`, aborts, and :meth:`result` raises
:class:`DkgAborted` naming the culprit; :func:`verify_complaint` lets anyone judge a
complaint from its evidence alone.  Any authentic complaint aborts the run on every
machine that receives it: the verdict names the accused, or the complainer if the
evidence does not hold up, and the protocol layer reruns without the culprit.  Silent
participants are not detected here (a timeout in the protocol layer is).
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final, Self, TypeAlias, TypeVar

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from certs.ed25519_group import GroupError, Point, RandomBytes, Scalar
from certs.frost import (
    FrostError,
    PublicKeyPackage,
    SigningKeyShare,
    check_identifier,
    evaluate_vss_commitment,
    lagrange_coefficient,
    polynomial_evaluate,
    vss_verify,
)

__all__ = [
    "Complaint",
    "DkgAborted",
    "DkgError",
    "DkgMessage",
    "DkgMessageRejected",
    "DkgOutput",
    "DkgParticipant",
    "DkgRound1",
    "DkgRound2",
    "RepairCommit",
    "RepairDeltas",
    "RepairHelper",
    "RepairOutput",
    "RepairRequest",
    "RepairSigma",
    "RepairTarget",
    "Roster",
    "Verdict",
    "message_from_wire",
    "verify_complaint",
]

PROTOCOL_LABEL: Final[bytes] = b"peermesh-dkg-v1"
_POK_LABEL: Final[bytes] = b"peermesh-dkg-v1/pok"
_SEAL_LABEL: Final[bytes] = b"peermesh-dkg-v1/seal"
_SEALED_SCALAR_LEN: Final[int] = 32 + 32 + 16  # ephemeral key + ciphertext + tag
_ZERO_NONCE: Final[bytes] = bytes(12)
_X25519_PROBE: Final[X25519PrivateKey] = X25519PrivateKey.from_private_bytes(b"\x42" * 32)

PURPOSES: Final[tuple[str, ...]] = ("dkg", "refresh", "repair")
KIND_INVALID: Final[str] = "invalid-message"
KIND_EQUIVOCATION: Final[str] = "equivocation"
KIND_BAD_SHARE: Final[str] = "bad-share"


class DkgError(ValueError):
    """A DKG, refresh or repair run cannot proceed; the message says why."""


class DkgMessageRejected(DkgError):
    """A message is not authentic or not for this run: dropped, nobody can be blamed."""


@dataclass(frozen=True)
class Verdict:
    """Who is at fault, and why, as anyone can determine from a complaint's evidence."""

    culprit: int
    reason: str

    def __str__(self) -> str:
        return f"participant {self.culprit} is at fault: {self.reason}"


class DkgAborted(DkgError):
    """The run was aborted; ``culprits`` names every participant proven at fault."""

    def __init__(self, verdicts: Sequence[Verdict]) -> None:
        self.verdicts: tuple[Verdict, ...] = tuple(verdicts)
        self.culprits: tuple[int, ...] = tuple(sorted({v.culprit for v in verdicts}))
        super().__init__("run aborted: " + "; ".join(str(v) for v in self.verdicts))


# ----------------------------------------------------------------------------------------
# Canonical encoding (what signatures cover) and wire helpers
# ----------------------------------------------------------------------------------------


def _canon(obj: Any) -> bytes:
    """Deterministic, injective encoding of wire values (ints, bytes, str, lists, dicts)."""
    if isinstance(obj, bool):
        raise TypeError("booleans are not part of the wire format")
    if isinstance(obj, int):
        return b"i" + obj.to_bytes(16, "big", signed=True)
    if isinstance(obj, bytes | bytearray):
        return b"b" + len(obj).to_bytes(4, "big") + bytes(obj)
    if isinstance(obj, str):
        raw = obj.encode()
        return b"s" + len(raw).to_bytes(4, "big") + raw
    if isinstance(obj, list | tuple):
        return b"l" + len(obj).to_bytes(4, "big") + b"".join(_canon(x) for x in obj)
    if isinstance(obj, Mapping):
        keys = sorted(obj)
        return (
            b"d" + len(keys).to_bytes(4, "big") + b"".join(_canon(k) + _canon(obj[k]) for k in keys)
        )
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _w_bytes(data: Mapping[str, Any], key: str) -> bytes:
    value = data.get(key)
    if not isinstance(value, bytes | bytearray):
        raise DkgMessageRejected(f"field {key!r}: expected bytes")
    return bytes(value)


def _w_int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DkgMessageRejected(f"field {key!r}: expected an int")
    return value


def _w_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise DkgMessageRejected(f"field {key!r}: expected a string")
    return value


def _w_list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list | tuple):
        raise DkgMessageRejected(f"field {key!r}: expected a list")
    return list(value)


def _w_bytes_list(data: Mapping[str, Any], key: str) -> tuple[bytes, ...]:
    items = _w_list(data, key)
    if not all(isinstance(x, bytes | bytearray) for x in items):
        raise DkgMessageRejected(f"field {key!r}: expected a list of bytes")
    return tuple(bytes(x) for x in items)


Pairs: TypeAlias = tuple[tuple[int, bytes], ...]


def _w_pairs(data: Mapping[str, Any], key: str) -> Pairs:
    out = []
    for pair in _w_list(data, key):
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or isinstance(pair[0], bool)
            or not isinstance(pair[0], int)
            or not isinstance(pair[1], bytes | bytearray)
        ):
            raise DkgMessageRejected(f"field {key!r}: expected [int, bytes] pairs")
        out.append((pair[0], bytes(pair[1])))
    return tuple(out)


def _pairs_wire(pairs: Pairs) -> list[list[Any]]:
    return [[i, b] for i, b in pairs]


def _pair_map(pairs: Pairs, expected: set[int], what: str) -> dict[int, bytes] | str:
    """The pairs as a dict if they name exactly ``expected``, else a reason string."""
    got = [i for i, _ in pairs]
    if len(set(got)) != len(got):
        return f"{what} names a participant twice"
    if set(got) != expected:
        return f"{what} covers participants {sorted(got)}, expected {sorted(expected)}"
    return dict(pairs)


# ----------------------------------------------------------------------------------------
# Roster
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Roster:
    """Everything the members of one run agree on beforehand (from the protocol layer).

    ``identity_keys`` maps each member's identifier to its raw Ed25519 public identity
    key, which authenticates its messages.  Build with :meth:`for_dkg`,
    :meth:`for_refresh` or :meth:`for_repair`.
    """

    purpose: str
    session_id: bytes
    threshold: int
    identity_keys: Mapping[int, bytes] = field(hash=False)
    public: PublicKeyPackage | None = None
    target: int | None = None
    _verifiers: Mapping[int, Ed25519PublicKey] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES:
            raise DkgError(f"unknown purpose {self.purpose!r}")
        if not 16 <= len(self.session_id) <= 64:
            raise DkgError("session id must be 16 to 64 bytes (use 32 random bytes)")
        keys = {}
        verifiers = {}
        for i, key in sorted(self.identity_keys.items()):
            try:
                check_identifier(i)
                verifiers[i] = Ed25519PublicKey.from_public_bytes(bytes(key))
            except (FrostError, ValueError) as exc:
                raise DkgError(f"identity key of {i}: {exc}") from exc
            keys[i] = bytes(key)
        object.__setattr__(self, "identity_keys", MappingProxyType(keys))
        object.__setattr__(self, "_verifiers", MappingProxyType(verifiers))
        n = len(self.members)
        if self.threshold < 2 or self.threshold > n:
            raise DkgError(
                f"threshold {self.threshold} impossible with {n} participants (need 2 <= t <= n)"
            )
        if self.purpose in ("refresh", "repair"):
            if self.public is None:
                raise DkgError(f"{self.purpose} needs the current public key package")
            if self.public.threshold != self.threshold:
                raise DkgError("threshold differs from the current group's threshold")
            unknown = set(self.members) - set(self.public.identifiers)
            if unknown:
                raise DkgError(f"participants {sorted(unknown)} hold no share of this group")
        if self.purpose == "repair":
            if self.target is None or self.target not in keys:
                raise DkgError("repair needs a target that is in identity_keys")
        elif self.target is not None:
            raise DkgError("only repair has a target")

    @classmethod
    def for_dkg(
        cls, session_id: bytes, threshold: int, identity_keys: Mapping[int, bytes]
    ) -> Roster:
        """A fresh key generation among ``identity_keys``' members with threshold t."""
        return cls("dkg", session_id, threshold, identity_keys)

    @classmethod
    def for_refresh(
        cls, session_id: bytes, public: PublicKeyPackage, identity_keys: Mapping[int, bytes]
    ) -> Roster:
        """A refresh among the (remaining) members; anyone left out loses its share's use."""
        return cls("refresh", session_id, public.threshold, identity_keys, public)

    @classmethod
    def for_repair(
        cls,
        session_id: bytes,
        public: PublicKeyPackage,
        target: int,
        identity_keys: Mapping[int, bytes],
    ) -> Roster:
        """Helpers (every key but the target's) rebuild ``target``'s share."""
        return cls("repair", session_id, public.threshold, identity_keys, public, target)

    @property
    def members(self) -> tuple[int, ...]:
        """Participants that deal (DKG/refresh) or help (repair), ascending."""
        return tuple(i for i in self.identity_keys if i != self.target)

    def authentic(self, message: DkgMessage, sender: int | None = None) -> bool:
        """Is ``message`` for this run and signed by its (expected) sender's identity key?"""
        if message.session_id != self.session_id:
            return False
        if sender is not None and message.sender != sender:
            return False
        verifier = self._verifiers.get(message.sender)
        if verifier is None:
            return False
        try:
            verifier.verify(message.signature, message.signing_payload(self.purpose))
        except InvalidSignature:
            return False
        return True


# ----------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------


class _Signed:
    """Shared behaviour of signed messages: payload, signing, wire form."""

    TYPE: ClassVar[str]
    session_id: bytes
    sender: int
    signature: bytes

    def _fields_wire(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_wire(self) -> dict[str, Any]:
        """msgpack-friendly dict: str keys; bytes, ints, lists and nested dicts only."""
        return {
            "type": self.TYPE,
            "session": self.session_id,
            "sender": self.sender,
            **self._fields_wire(),
            "signature": self.signature,
        }

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        """Parse a ``to_wire()`` dict of this message type (types only, no signature check)."""
        message = message_from_wire(data)
        if not isinstance(message, cls):
            raise DkgMessageRejected(f"expected a {cls.TYPE} message, got {message.TYPE}")
        return message

    def signing_payload(self, purpose: str) -> bytes:
        """The bytes the sender's identity key signs (everything but the signature)."""
        wire = self.to_wire()
        del wire["signature"]
        return _canon([PROTOCOL_LABEL, purpose, wire])

    def signed(self, purpose: str, key: Ed25519PrivateKey) -> Self:
        """A copy signed with ``key`` for a run of ``purpose``."""
        return dataclasses.replace(self, signature=key.sign(self.signing_payload(purpose)))  # type: ignore[type-var]


@dataclass(frozen=True)
class DkgRound1(_Signed):
    """Round one (broadcast): commitments, proof of knowledge, per-sender encryption keys.

    ``commitments`` are the Feldman commitments to the dealer's coefficients (all t for
    a DKG; for a refresh the constant term is zero and only the t-1 others are sent).
    ``proof`` is ``R || mu`` (empty for a refresh).  ``enc_keys`` holds the X25519 key
    each other member must encrypt its round-two share to.
    """

    TYPE: ClassVar[str] = "dkg-round1"
    session_id: bytes
    sender: int
    commitments: tuple[bytes, ...]
    proof: bytes
    enc_keys: Pairs
    signature: bytes = b""

    def _fields_wire(self) -> dict[str, Any]:
        return {
            "commitments": list(self.commitments),
            "proof": self.proof,
            "enc_keys": _pairs_wire(self.enc_keys),
        }

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], session: bytes, sender: int) -> DkgRound1:
        return cls(
            session,
            sender,
            _w_bytes_list(data, "commitments"),
            _w_bytes(data, "proof"),
            _w_pairs(data, "enc_keys"),
            _w_bytes(data, "signature"),
        )


@dataclass(frozen=True)
class DkgRound2(_Signed):
    """Round two (broadcast): each other member's share, sealed to it; echo of round one."""

    TYPE: ClassVar[str] = "dkg-round2"
    session_id: bytes
    sender: int
    shares: Pairs
    echo: tuple[DkgRound1, ...]
    signature: bytes = b""

    def _fields_wire(self) -> dict[str, Any]:
        return {"shares": _pairs_wire(self.shares), "echo": [m.to_wire() for m in self.echo]}

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], session: bytes, sender: int) -> DkgRound2:
        echo = []
        for item in _w_list(data, "echo"):
            m = message_from_wire(item)
            if not isinstance(m, DkgRound1):
                raise DkgMessageRejected("echo must contain round-one messages only")
            echo.append(m)
        return cls(
            session, sender, _w_pairs(data, "shares"), tuple(echo), _w_bytes(data, "signature")
        )


@dataclass(frozen=True)
class RepairRequest(_Signed):
    """The repair target asks for its share; ``enc_keys`` has one X25519 key per helper."""

    TYPE: ClassVar[str] = "repair-request"
    session_id: bytes
    sender: int
    enc_keys: Pairs
    signature: bytes = b""

    def _fields_wire(self) -> dict[str, Any]:
        return {"enc_keys": _pairs_wire(self.enc_keys)}

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], session: bytes, sender: int) -> RepairRequest:
        return cls(session, sender, _w_pairs(data, "enc_keys"), _w_bytes(data, "signature"))


@dataclass(frozen=True)
class RepairCommit(_Signed):
    """A helper commits to its summands (``delta_k * B`` for each helper k) and its keys."""

    TYPE: ClassVar[str] = "repair-commit"
    session_id: bytes
    sender: int
    delta_commitments: Pairs
    enc_keys: Pairs
    signature: bytes = b""

    def _fields_wire(self) -> dict[str, Any]:
        return {
            "delta_commitments": _pairs_wire(self.delta_commitments),
            "enc_keys": _pairs_wire(self.enc_keys),
        }

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], session: bytes, sender: int) -> RepairCommit:
        return cls(
            session,
            sender,
            _w_pairs(data, "delta_commitments"),
            _w_pairs(data, "enc_keys"),
            _w_bytes(data, "signature"),
        )


@dataclass(frozen=True)
class RepairDeltas(_Signed):
    """A helper's summands for the other helpers, each sealed to its recipient."""

    TYPE: ClassVar[str] = "repair-deltas"
    session_id: bytes
    sender: int
    deltas: Pairs
    signature: bytes = b""

    def _fields_wire(self) -> dict[str, Any]:
        return {"deltas": _pairs_wire(self.deltas)}

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], session: bytes, sender: int) -> RepairDeltas:
        return cls(session, sender, _w_pairs(data, "deltas"), _w_bytes(data, "signature"))


@dataclass(frozen=True)
class RepairSigma(_Signed):
    """A helper's sum of received summands, sealed to the target."""

    TYPE: ClassVar[str] = "repair-sigma"
    session_id: bytes
    sender: int
    sigma: bytes
    signature: bytes = b""

    def _fields_wire(self) -> dict[str, Any]:
        return {"sigma": self.sigma}

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], session: bytes, sender: int) -> RepairSigma:
        return cls(session, sender, _w_bytes(data, "sigma"), _w_bytes(data, "signature"))


@dataclass(frozen=True)
class Complaint(_Signed):
    """An accusation with the evidence to judge it (see :func:`verify_complaint`).

    ``kind`` is ``invalid-message`` (one signed message that breaks the rules),
    ``equivocation`` (two different signed messages of one kind from the accused) or
    ``bad-share`` (a sealed value that does not decrypt or does not match its
    commitments; ``revealed_key`` is the X25519 secret the complainer published for the
    accused, which opens that one ciphertext).
    """

    TYPE: ClassVar[str] = "complaint"
    session_id: bytes
    sender: int
    accused: int
    kind: str
    evidence: tuple[DkgMessage, ...]
    revealed_key: bytes = b""
    signature: bytes = b""

    def _fields_wire(self) -> dict[str, Any]:
        return {
            "accused": self.accused,
            "kind": self.kind,
            "evidence": [m.to_wire() for m in self.evidence],
            "revealed_key": self.revealed_key,
        }

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], session: bytes, sender: int) -> Complaint:
        evidence = tuple(message_from_wire(m) for m in _w_list(data, "evidence"))
        if any(isinstance(m, Complaint) for m in evidence):
            raise DkgMessageRejected("complaints cannot be evidence")
        return cls(
            session,
            sender,
            _w_int(data, "accused"),
            _w_str(data, "kind"),
            evidence,
            _w_bytes(data, "revealed_key"),
            _w_bytes(data, "signature"),
        )


DkgMessage: TypeAlias = (
    DkgRound1 | DkgRound2 | RepairRequest | RepairCommit | RepairDeltas | RepairSigma | Complaint
)
_TYPES: Final[dict[str, Any]] = {
    t.TYPE: t
    for t in (
        DkgRound1,
        DkgRound2,
        RepairRequest,
        RepairCommit,
        RepairDeltas,
        RepairSigma,
        Complaint,
    )
}


def message_from_wire(data: Any) -> DkgMessage:
    """Parse any message's ``to_wire()`` dict; checks types only, not signatures or content."""
    if not isinstance(data, Mapping):
        raise DkgMessageRejected("message must be a map")
    kind = _w_str(data, "type")
    cls = _TYPES.get(kind)
    if cls is None:
        raise DkgMessageRejected(f"unknown message type {kind!r}")
    message: DkgMessage = cls._from_fields(data, _w_bytes(data, "session"), _w_int(data, "sender"))
    return message


# ----------------------------------------------------------------------------------------
# Small primitives: PoK, sealing, parsing
# ----------------------------------------------------------------------------------------


def _pok_challenge(session_id: bytes, identifier: int, phi0: Point, r: Point) -> Scalar:
    digest = hashlib.sha512(
        _canon([_POK_LABEL, session_id, identifier, phi0.to_bytes(), r.to_bytes()])
    ).digest()
    return Scalar.reduce(digest)


def _prove_knowledge(
    session_id: bytes, identifier: int, secret: Scalar, random_bytes: RandomBytes
) -> bytes:
    """Schnorr proof of knowledge of ``secret`` for ``secret * B`` (KG20, round 1 step 2)."""
    k = Scalar.random_nonzero(random_bytes)
    r = Point.base_mul(k)
    c = _pok_challenge(session_id, identifier, Point.base_mul(secret), r)
    return r.to_bytes() + (k + secret * c).to_bytes()


def _pok_problem(session_id: bytes, identifier: int, phi0: Point, proof: bytes) -> str | None:
    if len(proof) != 64:
        return "proof of knowledge has the wrong length"
    try:
        r = Point.from_bytes(proof[:32])
        mu = Scalar.from_bytes(proof[32:])
    except GroupError as exc:
        return f"proof of knowledge is malformed: {exc}"
    c = _pok_challenge(session_id, identifier, phi0, r)
    if Point.base_mul(mu) != r + phi0 * c:
        return "proof of knowledge does not verify"
    return None


def _x25519_public_problem(raw: bytes) -> str | None:
    if len(raw) != 32:
        return "encryption key is not 32 bytes"
    try:
        _X25519_PROBE.exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        return "encryption key has small order"
    return None


def _seal_info(purpose: str, session_id: bytes, sender: int, recipient: int, eph: bytes) -> bytes:
    return _canon([_SEAL_LABEL, purpose, session_id, sender, recipient, eph])


def _seal(
    purpose: str,
    session_id: bytes,
    sender: int,
    recipient: int,
    recipient_key: bytes,
    plaintext: bytes,
    random_bytes: RandomBytes,
) -> bytes:
    """Ephemeral-static X25519 + HKDF-SHA256 + ChaCha20-Poly1305, bound to the context."""
    eph = X25519PrivateKey.from_private_bytes(random_bytes(32))
    eph_pub = eph.public_key().public_bytes_raw()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_key))
    info = _seal_info(purpose, session_id, sender, recipient, eph_pub)
    key = HKDF(hashes.SHA256(), 32, None, info + recipient_key).derive(shared)
    return eph_pub + ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, info)


def _open(
    purpose: str,
    session_id: bytes,
    sender: int,
    recipient: int,
    recipient_secret: bytes,
    sealed: bytes,
) -> bytes | None:
    """Inverse of :func:`_seal`; None if it does not decrypt (the sender's fault)."""
    if len(sealed) < 32 + 16:
        return None
    own = X25519PrivateKey.from_private_bytes(recipient_secret)
    eph_pub = sealed[:32]
    try:
        shared = own.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError:
        return None
    info = _seal_info(purpose, session_id, sender, recipient, eph_pub)
    recipient_key = own.public_key().public_bytes_raw()
    key = HKDF(hashes.SHA256(), 32, None, info + recipient_key).derive(shared)
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, sealed[32:], info)
    except InvalidTag:
        return None


def _open_scalar(
    purpose: str, session: bytes, sender: int, recipient: int, secret: bytes, sealed: bytes
) -> Scalar | str:
    plain = _open(purpose, session, sender, recipient, secret, sealed)
    if plain is None:
        return f"value sealed for {recipient} does not decrypt"
    try:
        return Scalar.from_bytes(plain)
    except GroupError as exc:
        return f"value sealed for {recipient} is not a scalar: {exc}"


def _x25519_keypair(random_bytes: RandomBytes) -> tuple[bytes, bytes]:
    secret = random_bytes(32)
    public = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
    return secret, public


def _points(raw: Sequence[bytes], what: str) -> list[Point] | str:
    out = []
    for n, b in enumerate(raw):
        try:
            out.append(Point.from_bytes(b))
        except GroupError as exc:
            return f"{what} {n}: {exc}"
    return out


# ----------------------------------------------------------------------------------------
# Validation rules (shared by participants and complaint judges)
# ----------------------------------------------------------------------------------------


def _dealer_commitment(roster: Roster, m: DkgRound1) -> list[Point] | str:
    """The dealer's full commitment vector (refresh: identity constant term prepended)."""
    expected = roster.threshold if roster.purpose == "dkg" else roster.threshold - 1
    if len(m.commitments) != expected:
        return f"{len(m.commitments)} commitments, expected {expected}"
    points = _points(m.commitments, "commitment")
    if isinstance(points, str):
        return points
    return points if roster.purpose == "dkg" else [Point.identity(), *points]


def _round1_problem(roster: Roster, m: DkgRound1) -> str | None:
    commitment = _dealer_commitment(roster, m)
    if isinstance(commitment, str):
        return commitment
    if roster.purpose == "dkg":
        problem = _pok_problem(roster.session_id, m.sender, commitment[0], m.proof)
        if problem:
            return problem
    elif m.proof:
        return "a refresh round-one message carries no proof"
    keys = _pair_map(m.enc_keys, set(roster.members) - {m.sender}, "enc_keys")
    if isinstance(keys, str):
        return keys
    for i, raw in keys.items():
        problem = _x25519_public_problem(raw)
        if problem:
            return f"{problem} (for {i})"
    return None


def _round2_problem(
    roster: Roster, m: DkgRound2, known: Mapping[int, DkgRound1] | None = None
) -> str | None:
    shares = _pair_map(m.shares, set(roster.members) - {m.sender}, "shares")
    if isinstance(shares, str):
        return shares
    if any(len(s) != _SEALED_SCALAR_LEN for s in shares.values()):
        return "a sealed share has the wrong length"
    senders = [e.sender for e in m.echo]
    if senders != list(roster.members):
        return "echo does not hold exactly one round-one message per member, in order"
    for e in m.echo:
        if known is not None and known.get(e.sender) == e:
            continue
        if not roster.authentic(e, e.sender):
            return f"echoed round-one message of {e.sender} is not authentic"
    return None


def _repair_commit_problem(roster: Roster, m: RepairCommit) -> str | None:
    assert roster.public is not None and roster.target is not None
    if m.sender not in roster.members:
        return "repair commitments from a non-helper"
    helpers = set(roster.members)
    deltas = _pair_map(m.delta_commitments, helpers, "delta_commitments")
    if isinstance(deltas, str):
        return deltas
    points = _points([deltas[k] for k in sorted(deltas)], "delta commitment")
    if isinstance(points, str):
        return points
    total = Point.identity()
    for p in points:
        total = total + p
    lam = lagrange_coefficient(roster.members, m.sender, roster.target)
    if total != roster.public.verification_share(m.sender) * lam:
        return "delta commitments do not add up to lambda * verification share"
    keys = _pair_map(m.enc_keys, helpers - {m.sender}, "enc_keys")
    if isinstance(keys, str):
        return keys
    for i, raw in keys.items():
        problem = _x25519_public_problem(raw)
        if problem:
            return f"{problem} (for {i})"
    return None


def _repair_request_problem(roster: Roster, m: RepairRequest) -> str | None:
    if m.sender != roster.target:
        return "repair request from someone other than the target"
    keys = _pair_map(m.enc_keys, set(roster.members), "enc_keys")
    if isinstance(keys, str):
        return keys
    for i, raw in keys.items():
        problem = _x25519_public_problem(raw)
        if problem:
            return f"{problem} (for {i})"
    return None


def _repair_deltas_problem(roster: Roster, m: RepairDeltas) -> str | None:
    if m.sender not in roster.members:
        return "repair summands from a non-helper"
    deltas = _pair_map(m.deltas, set(roster.members) - {m.sender}, "deltas")
    if isinstance(deltas, str):
        return deltas
    if any(len(d) != _SEALED_SCALAR_LEN for d in deltas.values()):
        return "a sealed summand has the wrong length"
    return None


def _repair_sigma_problem(roster: Roster, m: RepairSigma) -> str | None:
    if m.sender not in roster.members:
        return "repair sum from a non-helper"
    if len(m.sigma) != _SEALED_SCALAR_LEN:
        return "sealed sum has the wrong length"
    return None


def _message_problem(roster: Roster, m: DkgMessage) -> str | None:
    """The first rule ``m`` breaks for this run's purpose, or None."""
    ok_types: dict[str, tuple[type, ...]] = {
        "dkg": (DkgRound1, DkgRound2),
        "refresh": (DkgRound1, DkgRound2),
        "repair": (RepairRequest, RepairCommit, RepairDeltas, RepairSigma),
    }
    if not isinstance(m, ok_types[roster.purpose]):
        return f"{m.TYPE} message in a {roster.purpose} run"
    if isinstance(m, RepairRequest):
        return _repair_request_problem(roster, m)
    if m.sender not in roster.members:
        return f"{m.TYPE} from a non-member"
    if isinstance(m, DkgRound1):
        return _round1_problem(roster, m)
    if isinstance(m, DkgRound2):
        return _round2_problem(roster, m)
    if isinstance(m, RepairCommit):
        return _repair_commit_problem(roster, m)
    if isinstance(m, RepairDeltas):
        return _repair_deltas_problem(roster, m)
    if isinstance(m, RepairSigma):
        return _repair_sigma_problem(roster, m)
    return "complaints cannot be evidence"


# ----------------------------------------------------------------------------------------
# Complaint judgement
# ----------------------------------------------------------------------------------------


def verify_complaint(complaint: Complaint, roster: Roster) -> Verdict:
    """Judge a complaint from its evidence alone: who is at fault, the accused or the complainer.

    Raises :class:`DkgMessageRejected` if the complaint itself is not authentic (then
    nobody can be blamed for it).
    """
    if not roster.authentic(complaint):
        raise DkgMessageRejected("complaint is not authentic")
    complainer, accused = complaint.sender, complaint.accused
    if accused == complainer or accused not in roster.identity_keys:
        return Verdict(complainer, "complaint names no other participant of this run")
    try:
        reason = _judge(complaint, roster)
    except (DkgError, FrostError, GroupError, ValueError, KeyError) as exc:
        return Verdict(complainer, f"complaint evidence is malformed: {exc}")
    if reason is None:
        return Verdict(complainer, f"unfounded {complaint.kind} complaint against {accused}")
    return Verdict(accused, reason)


def _authentic_all(roster: Roster, evidence: Sequence[DkgMessage], sender: int) -> bool:
    return all(roster.authentic(m, sender) for m in evidence)


def _judge(c: Complaint, roster: Roster) -> str | None:
    """Reason the accused is at fault, or None if the complaint is unfounded."""
    ev = c.evidence
    if c.kind == KIND_INVALID:
        if len(ev) != 1 or not roster.authentic(ev[0], c.accused):
            return None
        return _message_problem(roster, ev[0])
    if c.kind == KIND_EQUIVOCATION:
        if len(ev) != 2 or not _authentic_all(roster, ev, c.accused):
            return None
        if type(ev[0]) is type(ev[1]) and ev[0] != ev[1]:
            return f"signed two different {ev[0].TYPE} messages"
        return None
    if c.kind == KIND_BAD_SHARE:
        if roster.purpose == "repair":
            if ev and isinstance(ev[0], RepairSigma):
                return _judge_bad_sigma(c, roster)
            return _judge_bad_delta(c, roster)
        return _judge_bad_dkg_share(c, roster)
    return None


def _revealed_matches(c: Complaint, published: Pairs) -> bool:
    keys = dict(published)
    if len(c.revealed_key) != 32 or c.accused not in keys:
        return False
    derived = X25519PrivateKey.from_private_bytes(c.revealed_key).public_key().public_bytes_raw()
    return derived == keys[c.accused]


def _judge_bad_dkg_share(c: Complaint, roster: Roster) -> str | None:
    if len(c.evidence) != 3:
        return None
    r1, r2, own = c.evidence
    if not (
        isinstance(r1, DkgRound1)
        and isinstance(r2, DkgRound2)
        and isinstance(own, DkgRound1)
        and _authentic_all(roster, (r1, r2), c.accused)
        and roster.authentic(own, c.sender)
        and _revealed_matches(c, own.enc_keys)
    ):
        return None
    problem = _round1_problem(roster, r1) or _round2_problem(roster, r2)
    if problem:
        return problem
    sealed = dict(r2.shares)[c.sender]
    share = _open_scalar(
        roster.purpose, roster.session_id, c.accused, c.sender, c.revealed_key, sealed
    )
    if isinstance(share, str):
        return share
    commitment = _dealer_commitment(roster, r1)
    assert not isinstance(commitment, str)
    if not vss_verify(c.sender, share, commitment):
        return f"share for {c.sender} does not match the dealer's commitments"
    return None


def _judge_bad_delta(c: Complaint, roster: Roster) -> str | None:
    if len(c.evidence) != 3:
        return None
    commit, deltas, own = c.evidence
    if not (
        isinstance(commit, RepairCommit)
        and isinstance(deltas, RepairDeltas)
        and isinstance(own, RepairCommit)
        and _authentic_all(roster, (commit, deltas), c.accused)
        and roster.authentic(own, c.sender)
        and _revealed_matches(c, own.enc_keys)
    ):
        return None
    problem = _repair_commit_problem(roster, commit) or _repair_deltas_problem(roster, deltas)
    if problem:
        return problem
    delta = _open_scalar(
        "repair",
        roster.session_id,
        c.accused,
        c.sender,
        c.revealed_key,
        dict(deltas.deltas)[c.sender],
    )
    if isinstance(delta, str):
        return delta
    expected = Point.from_bytes(dict(commit.delta_commitments)[c.sender])
    if Point.base_mul(delta) != expected:
        return f"summand for {c.sender} does not match its commitment"
    return None


def _judge_bad_sigma(c: Complaint, roster: Roster) -> str | None:
    sigma_msg, request, *commits = c.evidence
    if not (
        isinstance(sigma_msg, RepairSigma)
        and isinstance(request, RepairRequest)
        and roster.authentic(sigma_msg, c.accused)
        and roster.authentic(request, c.sender)
        and c.sender == roster.target
        and _revealed_matches(c, request.enc_keys)
        and sorted(m.sender for m in commits) == list(roster.members)
        and all(isinstance(m, RepairCommit) and roster.authentic(m) for m in commits)
    ):
        return None
    expected = Point.identity()
    for m in commits:
        assert isinstance(m, RepairCommit)
        if _repair_commit_problem(roster, m):
            return None  # a bad commitment is its author's fault, not the accused's
        expected = expected + Point.from_bytes(dict(m.delta_commitments)[c.accused])
    if _repair_sigma_problem(roster, sigma_msg):
        return _repair_sigma_problem(roster, sigma_msg)
    sigma = _open_scalar(
        "repair", roster.session_id, c.accused, c.sender, c.revealed_key, sigma_msg.sigma
    )
    if isinstance(sigma, str):
        return sigma
    if Point.base_mul(sigma) != expected:
        return "sum sent to the target does not match the committed summands"
    return None


# ----------------------------------------------------------------------------------------
# State machines
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DkgOutput:
    """What a successful DKG or refresh leaves a participant with."""

    key_share: SigningKeyShare
    public: PublicKeyPackage
    transcript_hash: bytes


@dataclass(frozen=True)
class RepairOutput:
    """What a successful repair gives its target."""

    key_share: SigningKeyShare
    public: PublicKeyPackage


_M = TypeVar("_M", DkgRound1, DkgRound2, RepairRequest, RepairCommit, RepairDeltas, RepairSigma)


class _Machine:
    """Shared plumbing: identity, authentication, complaints, abort state."""

    def __init__(
        self,
        roster: Roster,
        identifier: int,
        identity_key: Ed25519PrivateKey,
        random_bytes: RandomBytes,
    ) -> None:
        if identifier not in roster.identity_keys:
            raise DkgError(f"participant {identifier} is not in the roster")
        if identity_key.public_key().public_bytes_raw() != roster.identity_keys[identifier]:
            raise DkgError("identity key does not match the roster")
        self.roster = roster
        self.identifier = identifier
        self._identity_key = identity_key
        self._random = random_bytes
        self._verdicts: list[Verdict] = []
        self._started = False

    @property
    def aborted(self) -> bool:
        """True once any participant has been proven at fault."""
        return bool(self._verdicts)

    def _sign(self, message: Any) -> Any:
        return message.signed(self.roster.purpose, self._identity_key)

    def _complain(
        self, kind: str, accused: int, evidence: Sequence[DkgMessage], revealed: bytes = b""
    ) -> list[DkgMessage]:
        complaint = self._sign(
            Complaint(
                self.roster.session_id, self.identifier, accused, kind, tuple(evidence), revealed
            )
        )
        self._verdicts.append(verify_complaint(complaint, self.roster))
        self._forget_secrets()
        return [complaint]

    def _forget_secrets(self) -> None:
        """Drop polynomials, summands and received shares (Python cannot wipe memory)."""

    def receive(self, message: DkgMessage) -> list[DkgMessage]:
        """Process one incoming broadcast; returns the messages to broadcast in reply."""
        if message.sender == self.identifier:
            return []  # our own broadcast looped back
        if not self.roster.authentic(message):
            raise DkgMessageRejected(
                f"{message.TYPE} claiming to be from {message.sender} is not authentic"
            )
        if isinstance(message, Complaint):
            if not self.aborted:
                self._forget_secrets()
            verdict = verify_complaint(message, self.roster)
            if verdict not in self._verdicts:
                self._verdicts.append(verdict)
            return []
        if self.aborted:
            return []
        return self._dispatch(message)

    def _dispatch(self, message: DkgMessage) -> list[DkgMessage]:
        raise NotImplementedError

    def _check_result(self, done: bool) -> None:
        if self._verdicts:
            raise DkgAborted(self._verdicts)
        if not done:
            raise DkgError("run not finished yet")

    @staticmethod
    def _record(store: dict[int, _M], message: _M) -> tuple[bool, _M | None]:
        """(is_new, previous): detect duplicates and equivocation of one message kind."""
        previous = store.get(message.sender)
        if previous is None:
            store[message.sender] = message
            return True, None
        return False, (None if previous == message else previous)


class DkgParticipant(_Machine):
    """One participant of a DKG (``Roster.for_dkg``) or refresh (``Roster.for_refresh``).

    For a refresh pass the participant's current ``key_share``.
    """

    def __init__(
        self,
        roster: Roster,
        identifier: int,
        identity_key: Ed25519PrivateKey,
        *,
        key_share: SigningKeyShare | None = None,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        if roster.purpose not in ("dkg", "refresh"):
            raise DkgError("DkgParticipant runs DKG or refresh rosters only")
        super().__init__(roster, identifier, identity_key, random_bytes)
        if roster.purpose == "refresh":
            assert roster.public is not None
            if key_share is None or key_share.identifier != identifier:
                raise DkgError("refresh needs this participant's current key share")
            if key_share.public_key != roster.public.verification_share(identifier):
                raise DkgError("key share does not match the group's verification share")
        self._old_share = key_share
        self._coefficients: list[Scalar] = []
        self._enc_secrets: dict[int, bytes] = {}
        self._round1: dict[int, DkgRound1] = {}
        self._round2: dict[int, DkgRound2] = {}
        self._pending2: list[DkgRound2] = []
        self._shares: dict[int, Scalar] = {}
        self._sent_round2 = False
        self._output: DkgOutput | None = None

    def start(self) -> list[DkgMessage]:
        """Deal: sample the polynomial and broadcast round one (and round two if ready)."""
        if self._started:
            raise DkgError("already started")
        self._started = True
        t = self.roster.threshold
        if self.roster.purpose == "dkg":
            coefficients = [Scalar.random_nonzero(self._random) for _ in range(t)]
            published = coefficients
            proof = _prove_knowledge(
                self.roster.session_id, self.identifier, coefficients[0], self._random
            )
        else:
            coefficients = [Scalar.ZERO] + [
                Scalar.random_nonzero(self._random) for _ in range(t - 1)
            ]
            published = coefficients[1:]
            proof = b""
        self._coefficients = coefficients
        enc_keys = []
        for j in self.roster.members:
            if j != self.identifier:
                secret, public = _x25519_keypair(self._random)
                self._enc_secrets[j] = secret
                enc_keys.append((j, public))
        message: DkgRound1 = self._sign(
            DkgRound1(
                self.roster.session_id,
                self.identifier,
                tuple(Point.base_mul(c).to_bytes() for c in published),
                proof,
                tuple(enc_keys),
            )
        )
        self._round1[self.identifier] = message
        return [message, *self._progress()]

    def _dispatch(self, message: DkgMessage) -> list[DkgMessage]:
        if isinstance(message, DkgRound1):
            return self._on_round1(message)
        if isinstance(message, DkgRound2):
            return self._on_round2(message)
        raise DkgMessageRejected(f"unexpected {message.TYPE} in a {self.roster.purpose} run")

    def _on_round1(self, m: DkgRound1) -> list[DkgMessage]:
        is_new, conflicting = self._record(self._round1, m)
        if conflicting is not None:
            return self._complain(KIND_EQUIVOCATION, m.sender, [conflicting, m])
        if not is_new:
            return []
        problem = _round1_problem(self.roster, m)
        if problem:
            return self._complain(KIND_INVALID, m.sender, [m])
        return self._progress()

    def _on_round2(self, m: DkgRound2) -> list[DkgMessage]:
        is_new, conflicting = self._record(self._round2, m)
        if conflicting is not None:
            return self._complain(KIND_EQUIVOCATION, m.sender, [conflicting, m])
        if not is_new:
            return []
        self._pending2.append(m)
        return self._progress()

    def _progress(self) -> list[DkgMessage]:
        out: list[DkgMessage] = []
        if not self._started or len(self._round1) < len(self.roster.members):
            return out
        if not self._sent_round2:
            self._sent_round2 = True
            out.append(self._make_round2())
        while self._pending2 and not self.aborted:
            out.extend(self._check_round2(self._pending2.pop(0)))
        if (
            not self.aborted
            and self._output is None
            and len(self._shares) == len(self.roster.members)
        ):
            self._finish()
        return out

    def _make_round2(self) -> DkgRound2:
        purpose, session = self.roster.purpose, self.roster.session_id
        shares = []
        for j in self.roster.members:
            value = polynomial_evaluate(Scalar.from_int(j), self._coefficients)
            if j == self.identifier:
                self._shares[j] = value
                continue
            recipient_key = dict(self._round1[j].enc_keys)[self.identifier]
            sealed = _seal(
                purpose, session, self.identifier, j, recipient_key, value.to_bytes(), self._random
            )
            shares.append((j, sealed))
        echo = tuple(self._round1[i] for i in self.roster.members)
        message: DkgRound2 = self._sign(DkgRound2(session, self.identifier, tuple(shares), echo))
        return message

    def _check_round2(self, m: DkgRound2) -> list[DkgMessage]:
        problem = _round2_problem(self.roster, m, self._round1)
        if problem:
            return self._complain(KIND_INVALID, m.sender, [m])
        for echoed in m.echo:
            mine = self._round1[echoed.sender]
            if echoed != mine:  # authentic (checked above) yet different: equivocation
                return self._complain(KIND_EQUIVOCATION, echoed.sender, [mine, echoed])
        sealed = dict(m.shares)[self.identifier]
        share = _open_scalar(
            self.roster.purpose,
            self.roster.session_id,
            m.sender,
            self.identifier,
            self._enc_secrets[m.sender],
            sealed,
        )
        commitment = _dealer_commitment(self.roster, self._round1[m.sender])
        assert not isinstance(commitment, str)
        if isinstance(share, str) or not vss_verify(self.identifier, share, commitment):
            evidence: list[DkgMessage] = [self._round1[m.sender], m, self._round1[self.identifier]]
            return self._complain(KIND_BAD_SHARE, m.sender, evidence, self._enc_secrets[m.sender])
        self._shares[m.sender] = share
        return []

    def _finish(self) -> None:
        roster = self.roster
        t = roster.threshold
        total = [Point.identity() for _ in range(t)]
        for m in self._round1.values():
            commitment = _dealer_commitment(roster, m)
            assert not isinstance(commitment, str)
            total = [a + b for a, b in zip(total, commitment, strict=True)]
        secret = Scalar.ZERO
        for s in self._shares.values():
            secret = secret + s
        if roster.purpose == "dkg":
            group_key = total[0]
            if group_key.is_identity():
                raise DkgError("group key is the identity; rerun the DKG")
            shares = {j: evaluate_vss_commitment(j, total) for j in roster.members}
        else:
            assert roster.public is not None and self._old_share is not None
            group_key = roster.public.group_public_key
            secret = secret + self._old_share.secret
            shares = {
                j: roster.public.verification_share(j) + evaluate_vss_commitment(j, total)
                for j in roster.members
            }
        if Point.base_mul(secret) != shares[self.identifier]:
            raise DkgError("internal error: own share does not match its verification share")
        transcript = hashlib.sha256(
            _canon(
                [
                    PROTOCOL_LABEL,
                    roster.purpose,
                    [self._round1[i].to_wire() for i in roster.members],
                ]
            )
        ).digest()
        self._output = DkgOutput(
            SigningKeyShare(self.identifier, secret, group_key),
            PublicKeyPackage(t, group_key, shares),
            transcript,
        )
        self._forget_secrets()

    def _forget_secrets(self) -> None:
        self._coefficients = []
        self._shares = {}
        self._enc_secrets = {}

    @property
    def done(self) -> bool:
        """True once the output is available."""
        return self._output is not None

    def result(self) -> DkgOutput:
        """The new share and group info; raises :class:`DkgAborted` naming the culprits."""
        self._check_result(self.done)
        assert self._output is not None
        return self._output


class RepairHelper(_Machine):
    """A current share holder helping ``roster.target`` to its share (Laing & Stinson)."""

    def __init__(
        self,
        roster: Roster,
        key_share: SigningKeyShare,
        identity_key: Ed25519PrivateKey,
        *,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        if roster.purpose != "repair":
            raise DkgError("RepairHelper runs repair rosters only")
        super().__init__(roster, key_share.identifier, identity_key, random_bytes)
        assert roster.public is not None
        if key_share.identifier not in roster.members:
            raise DkgError("the repair target cannot help itself")
        if key_share.public_key != roster.public.verification_share(key_share.identifier):
            raise DkgError("key share does not match the group's verification share")
        self._key_share = key_share
        self._deltas: dict[int, Scalar] = {}
        self._enc_secrets: dict[int, bytes] = {}
        self._request: RepairRequest | None = None
        self._commits: dict[int, RepairCommit] = {}
        self._delta_msgs: dict[int, RepairDeltas] = {}
        self._pending: list[RepairDeltas] = []
        self._received: dict[int, Scalar] = {}
        self._sent_deltas = False
        self._sent_sigma = False

    def start(self) -> list[DkgMessage]:
        """Split ``lambda * share`` into committed summands and broadcast the commitments."""
        if self._started:
            raise DkgError("already started")
        self._started = True
        assert self.roster.target is not None
        helpers = self.roster.members
        lam = lagrange_coefficient(helpers, self.identifier, self.roster.target)
        value = lam * self._key_share.secret
        while True:
            deltas = {k: Scalar.random_nonzero(self._random) for k in helpers[:-1]}
            rest = value
            for d in deltas.values():
                rest = rest - d
            if not rest.is_zero():
                deltas[helpers[-1]] = rest
                break
        self._deltas = deltas
        enc_keys = []
        for k in helpers:
            if k != self.identifier:
                secret, public = _x25519_keypair(self._random)
                self._enc_secrets[k] = secret
                enc_keys.append((k, public))
        message: RepairCommit = self._sign(
            RepairCommit(
                self.roster.session_id,
                self.identifier,
                tuple((k, Point.base_mul(d).to_bytes()) for k, d in sorted(deltas.items())),
                tuple(enc_keys),
            )
        )
        self._commits[self.identifier] = message
        self._received[self.identifier] = deltas[self.identifier]
        return [message, *self._progress()]

    def _dispatch(self, message: DkgMessage) -> list[DkgMessage]:
        if isinstance(message, RepairRequest):
            if self._request is not None:
                if self._request != message:
                    return self._complain(
                        KIND_EQUIVOCATION, message.sender, [self._request, message]
                    )
                return []
            if _repair_request_problem(self.roster, message):
                return self._complain(KIND_INVALID, message.sender, [message])
            self._request = message
            return self._progress()
        if isinstance(message, RepairCommit):
            is_new, conflicting = self._record(self._commits, message)
            if conflicting is not None:
                return self._complain(KIND_EQUIVOCATION, message.sender, [conflicting, message])
            if is_new and _repair_commit_problem(self.roster, message):
                return self._complain(KIND_INVALID, message.sender, [message])
            return self._progress() if is_new else []
        if isinstance(message, RepairDeltas):
            is_new_d, previous_d = self._record(self._delta_msgs, message)
            if previous_d is not None:
                return self._complain(KIND_EQUIVOCATION, message.sender, [previous_d, message])
            if not is_new_d:
                return []
            if _repair_deltas_problem(self.roster, message):
                return self._complain(KIND_INVALID, message.sender, [message])
            self._pending.append(message)
            return self._progress()
        if isinstance(message, RepairSigma):
            return []  # for the target only
        raise DkgMessageRejected(f"unexpected {message.TYPE} in a repair run")

    def _progress(self) -> list[DkgMessage]:
        out: list[DkgMessage] = []
        helpers = self.roster.members
        if not self._started or len(self._commits) < len(helpers):
            return out
        session = self.roster.session_id
        if not self._sent_deltas:
            self._sent_deltas = True
            sealed = []
            for k in helpers:
                if k == self.identifier:
                    continue
                key = dict(self._commits[k].enc_keys)[self.identifier]
                value = self._deltas[k].to_bytes()
                sealed.append(
                    (k, _seal("repair", session, self.identifier, k, key, value, self._random))
                )
            out.append(self._sign(RepairDeltas(session, self.identifier, tuple(sealed))))
        while self._pending and not self.aborted:
            m = self._pending.pop(0)
            delta = _open_scalar(
                "repair",
                session,
                m.sender,
                self.identifier,
                self._enc_secrets[m.sender],
                dict(m.deltas)[self.identifier],
            )
            expected = Point.from_bytes(
                dict(self._commits[m.sender].delta_commitments)[self.identifier]
            )
            if isinstance(delta, str) or Point.base_mul(delta) != expected:
                evidence: list[DkgMessage] = [
                    self._commits[m.sender],
                    m,
                    self._commits[self.identifier],
                ]
                return [
                    *out,
                    *self._complain(
                        KIND_BAD_SHARE, m.sender, evidence, self._enc_secrets[m.sender]
                    ),
                ]
            self._received[m.sender] = delta
        if (
            not self.aborted
            and not self._sent_sigma
            and self._request is not None
            and len(self._received) == len(helpers)
        ):
            self._sent_sigma = True
            sigma = Scalar.ZERO
            for d in self._received.values():
                sigma = sigma + d
            target = self.roster.target
            assert target is not None
            key = dict(self._request.enc_keys)[self.identifier]
            sealed_sigma = _seal(
                "repair", session, self.identifier, target, key, sigma.to_bytes(), self._random
            )
            out.append(self._sign(RepairSigma(session, self.identifier, sealed_sigma)))
            self._forget_secrets()
        return out

    def _forget_secrets(self) -> None:
        self._deltas = {}
        self._received = {}
        self._enc_secrets = {}

    @property
    def done(self) -> bool:
        """True once this helper has sent its sum to the target."""
        return self._sent_sigma

    def result(self) -> None:
        """Raises :class:`DkgAborted` if the run was aborted, :class:`DkgError` if unfinished."""
        self._check_result(self.done)


class RepairTarget(_Machine):
    """The participant that receives its (new or lost) share at ``roster.target``."""

    def __init__(
        self,
        roster: Roster,
        identity_key: Ed25519PrivateKey,
        *,
        random_bytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        if roster.purpose != "repair" or roster.target is None:
            raise DkgError("RepairTarget runs repair rosters only")
        super().__init__(roster, roster.target, identity_key, random_bytes)
        self._enc_secrets: dict[int, bytes] = {}
        self._request: RepairRequest | None = None
        self._commits: dict[int, RepairCommit] = {}
        self._sigma_msgs: dict[int, RepairSigma] = {}
        self._pending: list[RepairSigma] = []
        self._sigmas: dict[int, Scalar] = {}
        self._output: RepairOutput | None = None

    def start(self) -> list[DkgMessage]:
        """Broadcast the request with one fresh encryption key per helper."""
        if self._started:
            raise DkgError("already started")
        self._started = True
        enc_keys = []
        for k in self.roster.members:
            secret, public = _x25519_keypair(self._random)
            self._enc_secrets[k] = secret
            enc_keys.append((k, public))
        message: RepairRequest = self._sign(
            RepairRequest(self.roster.session_id, self.identifier, tuple(enc_keys))
        )
        self._request = message
        return [message]

    def _dispatch(self, message: DkgMessage) -> list[DkgMessage]:
        if isinstance(message, RepairCommit):
            is_new, conflicting = self._record(self._commits, message)
            if conflicting is not None:
                return self._complain(KIND_EQUIVOCATION, message.sender, [conflicting, message])
            if is_new and _repair_commit_problem(self.roster, message):
                return self._complain(KIND_INVALID, message.sender, [message])
            return self._progress() if is_new else []
        if isinstance(message, RepairSigma):
            is_new_s, previous_s = self._record(self._sigma_msgs, message)
            if previous_s is not None:
                return self._complain(KIND_EQUIVOCATION, message.sender, [previous_s, message])
            if not is_new_s:
                return []
            if _repair_sigma_problem(self.roster, message):
                return self._complain(KIND_INVALID, message.sender, [message])
            self._pending.append(message)
            return self._progress()
        if isinstance(message, RepairDeltas):
            return []  # between helpers
        raise DkgMessageRejected(f"unexpected {message.TYPE} in a repair run")

    def _progress(self) -> list[DkgMessage]:
        helpers = self.roster.members
        if not self._started or len(self._commits) < len(helpers):
            return []
        assert self._request is not None and self.roster.public is not None
        while self._pending and not self.aborted:
            m = self._pending.pop(0)
            sigma = _open_scalar(
                "repair",
                self.roster.session_id,
                m.sender,
                self.identifier,
                self._enc_secrets[m.sender],
                m.sigma,
            )
            expected = Point.identity()
            for c in self._commits.values():
                expected = expected + Point.from_bytes(dict(c.delta_commitments)[m.sender])
            if isinstance(sigma, str) or Point.base_mul(sigma) != expected:
                evidence: list[DkgMessage] = [
                    m,
                    self._request,
                    *(self._commits[k] for k in helpers),
                ]
                return self._complain(
                    KIND_BAD_SHARE, m.sender, evidence, self._enc_secrets[m.sender]
                )
            self._sigmas[m.sender] = sigma
        if not self.aborted and self._output is None and len(self._sigmas) == len(helpers):
            secret = Scalar.ZERO
            for s in self._sigmas.values():
                secret = secret + s
            public = self.roster.public.with_participant(self.identifier)
            if Point.base_mul(secret) != public.verification_share(self.identifier):
                raise DkgError(
                    "internal error: repaired share does not match its verification share"
                )
            self._output = RepairOutput(
                SigningKeyShare(self.identifier, secret, public.group_public_key), public
            )
            self._forget_secrets()
        return []

    def _forget_secrets(self) -> None:
        self._sigmas = {}
        self._enc_secrets = {}

    @property
    def done(self) -> bool:
        """True once the share is available."""
        return self._output is not None

    def result(self) -> RepairOutput:
        """The repaired share; raises :class:`DkgAborted` naming the culprits."""
        self._check_result(self.done)
        assert self._output is not None
        return self._output
