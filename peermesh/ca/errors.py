"""The threshold CA's errors: one root, each with the status and code an API answers with.

A handler raises these directly (the control router and the bootstrap listener answer
with ``status`` and ``code``); a caller branches on the class or on ``status``, never
on the message text.
"""

from __future__ import annotations

from peermesh.core.errors import PeermeshError


class CaError(PeermeshError, status=500, code="ca-error"):
    """Root of the threshold CA's errors."""


class CaBadRequest(CaError, status=400, code="ca-bad-request"):
    """A request whose content the CA cannot use (a malformed CSR, root or run)."""


class CaForbidden(CaError, status=403, code="ca-forbidden"):
    """This identity may not do that (MeshConfig admins, committee identities, policy)."""


class CaConflict(CaError, status=409, code="ca-conflict"):
    """The request contradicts state this agent already holds (another root, epoch)."""


class CaUnavailable(CaError, status=503, code="ca-unavailable"):
    """This agent cannot serve that yet (no share, no certificate, still bootstrapping)."""


class CaStateError(CaError, code="ca-state"):
    """A CA state file is missing pieces or corrupt; the message names the file and the fix."""


class TokenError(CaForbidden, ValueError, code="join-token"):
    """A join token that is malformed or refused; the message says why and what to do."""


class RosterError(CaBadRequest, ValueError, code="bootstrap-roster"):
    """An entry that cannot join this bootstrap; the message says how to fix the flags."""


class RelayError(CaBadRequest, code="dkg-relay"):
    """A relayed DKG, refresh or repair run did not complete; the message names who and how."""


class SignerUnavailable(CaUnavailable, code="signer-unavailable"):
    """A signer could not be reached or refused; the message says which and why."""


class SignerRefused(SignerUnavailable, status=403, code="signer-refused"):
    """A reachable signer refused the request (policy, token); the message is its reason."""


class QuorumError(CaUnavailable, code="no-quorum"):
    """Fewer than t signers could (or would) sign; the message lists who and why."""


class JoinError(CaError, status=502, code="join-refused"):
    """The member we joined through answered something we cannot accept."""


class ChannelError(CaUnavailable, code="bootstrap-channel"):
    """A bootstrap-channel call that returned no result; the message says why."""


class ChannelRefused(ChannelError):
    """The bootstrap listener answered with a refusal (its status and message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status, code="bootstrap-refused")
