"""The threshold CA's errors: one root, each with the status and code an API answers with.

A handler raises these directly (the control router and the bootstrap listener answer
with ``status`` and ``code``); a caller branches on the class or on ``status``, never
on the message text.
"""

from __future__ import annotations

from peermesh.core.errors import PeermeshError


class CaError(PeermeshError):
    """Root of the threshold CA's errors."""

    default_status = 500
    default_code = "ca-error"


class CaBadRequest(CaError):
    """A request whose content the CA cannot use (a malformed CSR, root or run)."""

    default_status = 400
    default_code = "ca-bad-request"


class CaForbidden(CaError):
    """This identity may not do that (MeshConfig admins, committee identities, policy)."""

    default_status = 403
    default_code = "ca-forbidden"


class CaConflict(CaError):
    """The request contradicts state this agent already holds (another root, epoch)."""

    default_status = 409
    default_code = "ca-conflict"


class CaUnavailable(CaError):
    """This agent cannot serve that yet (no share, no certificate, still bootstrapping)."""

    default_status = 503
    default_code = "ca-unavailable"


class CaStateError(CaError):
    """A CA state file is missing pieces or corrupt; the message names the file and the fix."""

    default_code = "ca-state"


class TokenError(CaForbidden, ValueError):
    """A join token that is malformed or refused; the message says why and what to do."""

    default_code = "join-token"


class RosterError(CaBadRequest, ValueError):
    """An entry that cannot join this bootstrap; the message says how to fix the flags."""

    default_code = "bootstrap-roster"


class RelayError(CaBadRequest):
    """A relayed DKG, refresh or repair run did not complete; the message names who and how."""

    default_code = "dkg-relay"


class SignerUnavailable(CaUnavailable):
    """A signer could not be reached or refused; the message says which and why."""

    default_code = "signer-unavailable"


class SignerRefused(SignerUnavailable):
    """A reachable signer refused the request (policy, token); the message is its reason."""

    default_status = 403
    default_code = "signer-refused"


class QuorumError(CaUnavailable):
    """Fewer than t signers could (or would) sign; the message lists who and why."""

    default_code = "no-quorum"


class JoinError(CaError):
    """The member we joined through answered something we cannot accept."""

    default_status = 502
    default_code = "join-refused"


class ChannelError(CaUnavailable):
    """A bootstrap-channel call that returned no result; the message says why."""

    default_code = "bootstrap-channel"


class ChannelRefused(ChannelError):
    """The bootstrap listener answered with a refusal (its status and message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status, code="bootstrap-refused")
