"""The signed broadcasts of DKG, refresh and repair runs: frozen dataclasses and their wire forms.

:func:`message_from_wire` checks every field's type on decode; signatures and content are
checked against a :class:`~certs.dkg.roster.Roster` by the machines and the complaint judge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self, TypeAlias

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


class SignedMessage:
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
        return canonical([PROTOCOL_LABEL, purpose, wire])

    def signed(self, purpose: str, key: Ed25519PrivateKey) -> Self:
        """A copy signed with ``key`` for a run of ``purpose``."""
        return dataclasses.replace(self, signature=key.sign(self.signing_payload(purpose)))  # type: ignore[type-var]


@dataclass(frozen=True)
class DkgRound1(SignedMessage):
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
            "enc_keys": pairs_to_wire(self.enc_keys),
        }

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], session: bytes, sender: int) -> DkgRound1:
        return cls(
            session,
            sender,
            read_bytes_list(data, "commitments"),
            read_bytes(data, "proof"),
            read_pairs(data, "enc_keys"),
            read_bytes(data, "signature"),
        )


@dataclass(frozen=True)
class DkgRound2(SignedMessage):
    """Round two (broadcast): each other member's share, sealed to it; echo of round one."""

    TYPE: ClassVar[str] = "dkg-round2"
    session_id: bytes
    sender: int
    shares: Pairs
    echo: tuple[DkgRound1, ...]
    signature: bytes = b""

    def _fields_wire(self) -> dict[str, Any]:
        return {"shares": pairs_to_wire(self.shares), "echo": [m.to_wire() for m in self.echo]}

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], session: bytes, sender: int) -> DkgRound2:
        echo = []
        for item in read_list(data, "echo"):
            m = message_from_wire(item)
            if not isinstance(m, DkgRound1):
                raise DkgMessageRejected("echo must contain round-one messages only")
            echo.append(m)
        return cls(
            session, sender, read_pairs(data, "shares"), tuple(echo), read_bytes(data, "signature")
        )


@dataclass(frozen=True)
class RepairRequest(SignedMessage):
    """The repair target asks for its share; ``enc_keys`` has one X25519 key per helper."""

    TYPE: ClassVar[str] = "repair-request"
    session_id: bytes
    sender: int
    enc_keys: Pairs
    signature: bytes = b""

    def _fields_wire(self) -> dict[str, Any]:
        return {"enc_keys": pairs_to_wire(self.enc_keys)}

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], session: bytes, sender: int) -> RepairRequest:
        return cls(session, sender, read_pairs(data, "enc_keys"), read_bytes(data, "signature"))


@dataclass(frozen=True)
class RepairCommit(SignedMessage):
    """A helper commits to its summands (``delta_k * B`` for each helper k) and its keys."""

    TYPE: ClassVar[str] = "repair-commit"
    session_id: bytes
    sender: int
    delta_commitments: Pairs
    enc_keys: Pairs
    signature: bytes = b""

    def _fields_wire(self) -> dict[str, Any]:
        return {
            "delta_commitments": pairs_to_wire(self.delta_commitments),
            "enc_keys": pairs_to_wire(self.enc_keys),
        }

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], session: bytes, sender: int) -> RepairCommit:
        return cls(
            session,
            sender,
            read_pairs(data, "delta_commitments"),
            read_pairs(data, "enc_keys"),
            read_bytes(data, "signature"),
        )


@dataclass(frozen=True)
class RepairDeltas(SignedMessage):
    """A helper's summands for the other helpers, each sealed to its recipient."""

    TYPE: ClassVar[str] = "repair-deltas"
    session_id: bytes
    sender: int
    deltas: Pairs
    signature: bytes = b""

    def _fields_wire(self) -> dict[str, Any]:
        return {"deltas": pairs_to_wire(self.deltas)}

    @classmethod
    def _from_fields(cls, data: Mapping[str, Any], session: bytes, sender: int) -> RepairDeltas:
        return cls(session, sender, read_pairs(data, "deltas"), read_bytes(data, "signature"))


@dataclass(frozen=True)
class RepairSigma(SignedMessage):
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
        return cls(session, sender, read_bytes(data, "sigma"), read_bytes(data, "signature"))


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
        evidence = tuple(message_from_wire(m) for m in read_list(data, "evidence"))
        if any(isinstance(m, Complaint) for m in evidence):
            raise DkgMessageRejected("complaints cannot be evidence")
        return cls(
            session,
            sender,
            read_int(data, "accused"),
            read_str(data, "kind"),
            evidence,
            read_bytes(data, "revealed_key"),
            read_bytes(data, "signature"),
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
    kind = read_str(data, "type")
    cls = _TYPES.get(kind)
    if cls is None:
        raise DkgMessageRejected(f"unknown message type {kind!r}")
    message: DkgMessage = cls._from_fields(
        data, read_bytes(data, "session"), read_int(data, "sender")
    )
    return message
