"""Who takes part in one run, with which identity keys, for which purpose."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from certs.dkg.errors import DkgError
from certs.dkg.messages import DkgMessage
from certs.frost import FrostError, PublicKeyPackage, check_identifier

__all__ = ["PURPOSES", "Roster"]

PURPOSES: Final[tuple[str, ...]] = ("dkg", "refresh", "repair")


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
