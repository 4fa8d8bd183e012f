"""Why a FROST input or session is refused."""

from __future__ import annotations

from collections.abc import Sequence

from certs.errors import CertsError, ErrorCode

__all__ = [
    "FrostError",
    "InvalidSignatureShares",
    "NonceError",
    "NonceReuseError",
    "UnknownNonceError",
]


class FrostError(CertsError, ValueError):
    """A FROST input is invalid or a session cannot complete; the message says why."""

    default_code = ErrorCode.FROST


class InvalidSignatureShares(FrostError):
    """One or more signature shares failed verification; ``culprits`` names their senders."""

    default_code = ErrorCode.INVALID_SIGNATURE_SHARES

    def __init__(self, culprits: Sequence[int]) -> None:
        self.culprits: tuple[int, ...] = tuple(sorted(culprits))
        who = ", ".join(str(i) for i in self.culprits)
        super().__init__(f"invalid signature share from participant(s) {who}")


class NonceError(FrostError):
    """A signing nonce cannot be used."""

    default_code = ErrorCode.NONCE


class NonceReuseError(NonceError):
    """The nonce for these commitments was already consumed: signing again would leak the key."""

    default_code = ErrorCode.NONCE_REUSED


class UnknownNonceError(NonceError):
    """No stored nonce matches these commitments (never created here, or long forgotten)."""

    default_code = ErrorCode.NONCE_UNKNOWN
