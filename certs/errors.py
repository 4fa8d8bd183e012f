"""The root of every error the certs library raises on purpose.

``certs`` is a library and imports nothing from peermesh, so it cannot use
``peermesh.core.errors.PeermeshError``; its errors share this root instead, each with a
stable ``code``. Where they cross into peermesh (an RPC handler, the CLI, the CA shells)
they are translated into peermesh's own errors. Most subclasses are also ``ValueError``s,
because they refuse a bad input, and callers have always been able to catch them as such.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

__all__ = ["CertsError", "ErrorCode"]


class ErrorCode(StrEnum):
    """The stable token of each kind of refusal (safe to log, match on or send)."""

    CERTS = "certs"
    GROUP = "invalid-group-encoding"
    SPIFFE_ID = "invalid-spiffe-id"
    IDENTITY = "invalid-identity"
    CERTIFICATE_FORMAT = "invalid-certificate-format"
    TBS_REFUSED = "tbs-refused"
    DEV_CA = "dev-ca"
    FROST = "frost"
    INVALID_SIGNATURE_SHARES = "invalid-signature-shares"
    NONCE = "nonce"
    NONCE_REUSED = "nonce-reused"
    NONCE_UNKNOWN = "nonce-unknown"
    DKG = "dkg"
    DKG_MESSAGE_REJECTED = "dkg-message-rejected"
    DKG_ABORTED = "dkg-aborted"


class CertsError(Exception):
    """Root of the library's errors; ``code`` says which kind of refusal this is."""

    default_code: ClassVar[ErrorCode] = ErrorCode.CERTS

    def __init__(self, *args: object, code: ErrorCode | None = None) -> None:
        super().__init__(*args)
        self.code: ErrorCode = self.default_code if code is None else code
