"""The signed broadcasts of DKG, refresh and repair runs: frozen dataclasses and their wire forms.

:func:`message_from_wire` checks every field's type on decode; signatures and content are
checked against a :class:`~certs.dkg.roster.Roster` by the machines and the complaint judge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self, TypeAlias, get_type_hints

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.dkg.codec import (
    Pairs,
    canonical,
    pairs_to_wire,
    read_bytes,
    read_bytes_list,
    read_int,
    read_list,
    read_pairs,
    read_str,
)
from certs.dkg.errors import DkgMessageRejected

__all__ = [
    "KIND_BAD_SHARE",
    "KIND_EQUIVOCATION",
    "KIND_INVALID",
    "PROTOCOL_LABEL",
    "Complaint",
    "DkgMessage",
    "DkgRound1",
    "DkgRound2",
    "RepairCommit",
    "RepairDeltas",
    "RepairRequest",
    "RepairSigma",
    "SignedMessage",
    "message_from_wire",
]

PROTOCOL_LABEL: Final[bytes] = b"peermesh-dkg-v1"
KIND_INVALID: Final[str] = "invalid-message"
KIND_EQUIVOCATION: Final[str] = "equivocation"
KIND_BAD_SHARE: Final[str] = "bad-share"


@dataclass(frozen=True)
class SignedMessage:
    """Shared behaviour of signed messages: the envelope, payload, signing, wire form.

    A subclass declares only its body fields; their wire form follows from their types
    (see ``_CODECS``), under the field's own name.
    """

    TYPE: ClassVar[str]
    session_id: bytes
    sender: int
    signature: bytes = field(default=b"", kw_only=True)

    def to_wire(self) -> dict[str, Any]:
        """msgpack-friendly dict: str keys; bytes, ints, lists and nested dicts only."""
        body = {name: codec.to_wire(getattr(self, name)) for name, codec in _BODIES[type(self)]}
        return {
            "type": self.TYPE,
            "session": self.session_id,
            "sender": self.sender,
            **body,
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
        return canonical([PROTOCOL_LABEL, purpose, wire])

    def signed(self, purpose: str, key: Ed25519PrivateKey) -> Self:
        """A copy signed with ``key`` for a run of ``purpose``."""
        return dataclasses.replace(self, signature=key.sign(self.signing_payload(purpose)))


@dataclass(frozen=True)
class DkgRound1(SignedMessage):
    """Round one (broadcast): commitments, proof of knowledge, per-sender encryption keys.

    ``commitments`` are the Feldman commitments to the dealer's coefficients (all t for
    a DKG; for a refresh the constant term is zero and only the t-1 others are sent).
    ``proof`` is ``R || mu`` (empty for a refresh).  ``enc_keys`` holds the X25519 key
    each other member must encrypt its round-two share to.
    """

    TYPE: ClassVar[str] = "dkg-round1"
    commitments: tuple[bytes, ...]
    proof: bytes
    enc_keys: Pairs


@dataclass(frozen=True)
class DkgRound2(SignedMessage):
    """Round two (broadcast): each other member's share, sealed to it; echo of round one."""

    TYPE: ClassVar[str] = "dkg-round2"
    shares: Pairs
    echo: tuple[DkgRound1, ...]


@dataclass(frozen=True)
class RepairRequest(SignedMessage):
    """The repair target asks for its share; ``enc_keys`` has one X25519 key per helper."""

    TYPE: ClassVar[str] = "repair-request"
    enc_keys: Pairs


@dataclass(frozen=True)
class RepairCommit(SignedMessage):
    """A helper commits to its summands (``delta_k * B`` for each helper k) and its keys."""

    TYPE: ClassVar[str] = "repair-commit"
    delta_commitments: Pairs
    enc_keys: Pairs


@dataclass(frozen=True)
class RepairDeltas(SignedMessage):
    """A helper's summands for the other helpers, each sealed to its recipient."""

    TYPE: ClassVar[str] = "repair-deltas"
    deltas: Pairs


@dataclass(frozen=True)
class RepairSigma(SignedMessage):
    """A helper's sum of received summands, sealed to the target."""

    TYPE: ClassVar[str] = "repair-sigma"
    sigma: bytes


@dataclass(frozen=True)
class Complaint(SignedMessage):
    """An accusation with the evidence to judge it (see :func:`verify_complaint`).

    ``kind`` is ``invalid-message`` (one signed message that breaks the rules),
    ``equivocation`` (two different signed messages of one kind from the accused) or
    ``bad-share`` (a sealed value that does not decrypt or does not match its
    commitments; ``revealed_key`` is the X25519 secret the complainer published for the
    accused, which opens that one ciphertext).
    """

    TYPE: ClassVar[str] = "complaint"
    accused: int
    kind: str
    evidence: tuple[DkgMessage, ...]
    revealed_key: bytes = b""


DkgMessage: TypeAlias = (
    DkgRound1 | DkgRound2 | RepairRequest | RepairCommit | RepairDeltas | RepairSigma | Complaint
)
_TYPES: Final[dict[str, type[DkgMessage]]] = {
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


@dataclass(frozen=True)
class _Codec:
    """How a body field of one type goes onto the wire, and is read back checked."""

    to_wire: Callable[[Any], Any]
    read: Callable[[Mapping[str, Any], str], Any]


def _as_is(value: Any) -> Any:
    return value


def _messages_to_wire(items: tuple[DkgMessage, ...]) -> list[dict[str, Any]]:
    return [m.to_wire() for m in items]


def _read_echo(data: Mapping[str, Any], key: str) -> tuple[DkgRound1, ...]:
    echo = []
    for item in read_list(data, key):
        m = message_from_wire(item)
        if not isinstance(m, DkgRound1):
            raise DkgMessageRejected("echo must contain round-one messages only")
        echo.append(m)
    return tuple(echo)


def _read_evidence(data: Mapping[str, Any], key: str) -> tuple[DkgMessage, ...]:
    evidence = tuple(message_from_wire(m) for m in read_list(data, key))
    if any(isinstance(m, Complaint) for m in evidence):
        raise DkgMessageRejected("complaints cannot be evidence")
    return evidence


_CODECS: Final[dict[Any, _Codec]] = {
    bytes: _Codec(_as_is, read_bytes),
    int: _Codec(_as_is, read_int),
    str: _Codec(_as_is, read_str),
    tuple[bytes, ...]: _Codec(list, read_bytes_list),
    Pairs: _Codec(pairs_to_wire, read_pairs),
    tuple[DkgRound1, ...]: _Codec(_messages_to_wire, _read_echo),
    tuple[DkgMessage, ...]: _Codec(_messages_to_wire, _read_evidence),
}
_ENVELOPE: Final = frozenset(f.name for f in dataclasses.fields(SignedMessage))


def _body(cls: type[DkgMessage]) -> tuple[tuple[str, _Codec], ...]:
    hints = get_type_hints(cls)
    return tuple(
        (f.name, _CODECS[hints[f.name]]) for f in dataclasses.fields(cls) if f.name not in _ENVELOPE
    )


_BODIES: Final[dict[type[SignedMessage], tuple[tuple[str, _Codec], ...]]] = {
    t: _body(t) for t in _TYPES.values()
}


def message_from_wire(data: Any) -> DkgMessage:
    """Parse any message's ``to_wire()`` dict; checks types only, not signatures or content."""
    if not isinstance(data, Mapping):
        raise DkgMessageRejected("message must be a map")
    kind = read_str(data, "type")
    cls = _TYPES.get(kind)
    if cls is None:
        raise DkgMessageRejected(f"unknown message type {kind!r}")
    session, sender = read_bytes(data, "session"), read_int(data, "sender")
    body = {name: codec.read(data, name) for name, codec in _BODIES[cls]}
    return cls(session, sender, **body, signature=read_bytes(data, "signature"))
