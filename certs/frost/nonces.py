"""Round-one secret nonces and where they wait until round two uses them, exactly once.

A durable store (one that survives a restart without ever handing a nonce out twice)
belongs to whoever owns the disk; anything with :class:`NonceStore`'s two methods will do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from certs.ed25519_group import Point, Scalar
from certs.frost.errors import NonceReuseError, UnknownNonceError
from certs.frost.messages import SigningCommitments

__all__ = ["MemoryNonceStore", "NonceStore", "SigningNonces"]


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
