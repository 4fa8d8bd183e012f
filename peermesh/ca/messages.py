"""The threshold CA's RPC messages, over mTLS (``ca/*``) and on the bootstrap listener.

Every body comes from another agent, so each is read field by field before a handler
sees it; what a message carries beyond its shape (a signing package, a run's
participants, a CSR) is checked by the signer or the flow that acts on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, Self

from certs import frost
from peermesh.ca.dkgrelay import RunSpec
from peermesh.ca.errors import CaError
from peermesh.ca.state import Committee
from peermesh.core.codec import WireMessage, wire
from peermesh.core.wire import WireError
from peermesh.net.rpc import Empty, RpcMethod

_MAX_NAME = 253
_MAX_DER = 64 << 10
_MAX_MESSAGES = 10_000


class AuthKind(Enum):
    """Why a signer is asked for a share: what it checks before it releases one."""

    ROOT = "root"  # the root certificate, once, at bootstrap
    BOOTSTRAP = "bootstrap"  # an initial agent's first leaf, before any mTLS
    RENEW = "renew"  # a leaf for the identity the caller authenticates as
    JOIN = "join"  # a new agent's first leaf, authorized by a join token
    ENDORSE = "endorse"  # the committee the signer holds, after a refresh it took part in
    ADMIN_SET = "admin-set"  # a change of MeshConfig admins (peermesh.ca.admin_set)


class SignAuth(WireMessage, what="ca/sign auth", omit_none=True):
    """What authorizes a signature: its kind, and the kind's particulars."""

    kind: AuthKind = wire(max_len=32)
    node: str | None = wire(default=None, max_len=_MAX_NAME)  # BOOTSTRAP: whose leaf
    token_id: str | None = wire(default=None, max_len=64)  # JOIN: the token, and the
    secret: str | None = wire(default=None, max_len=128)  # service the CSR asks for
    service: str | None = wire(default=None, max_len=_MAX_NAME)


class CommitReply(WireMessage, what="ca/commit reply"):
    """Round one: a signer's fresh nonce commitments, and its committee epoch."""

    commitments: frost.SigningCommitments
    epoch: int = wire(default=0, minimum=0)


def _package(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise WireError("ca/sign needs {package, auth}: package is not a map")
    return value


class SignRequest(WireMessage, what="ca/sign"):
    """Round two: the signing package (the signer decodes and checks it) and the auth."""

    package: Mapping[str, Any] = wire(decode=_package)
    auth: SignAuth


class SignReply(WireMessage, what="ca/sign reply"):
    """A signer's signature share."""

    share: frost.SignatureShare


def _update(value: Any, where: str) -> bytes | None:
    """An empty or non-bytes update is none: the check then runs on the policy as it is."""
    return bytes(value) if isinstance(value, bytes | bytearray) and value else None


class TokenCheckRequest(
    WireMessage,
    what="ca/token/check",
    refuse=lambda e: WireError(f"ca/token/check needs {{id, update?}}: {e}"),
):
    """``ca/token/check``: is join token ``token_id`` in policy? Merge ``update`` first."""

    token_id: str = wire(key="id", max_len=64)
    update: bytes | None = wire(default=None, decode=_update)


class TokenCheckReply(WireMessage, what="ca/token/check reply"):
    """Whether the signer knows the token, and its policy state vector (to diff against)."""

    known: bool = wire(absent=False)
    sv: bytes = wire(default=b"", max_len=1 << 24)


def committee_from_wire(raw: Any, what: str) -> Committee:
    """A committee in a message; malformed is a ``WireError`` naming ``what``."""
    try:
        return Committee.from_wire(raw)
    except CaError as exc:
        raise WireError(f"{what}: {exc}") from None


class CommitteeMessage(WireMessage, what="committee", bare=True):
    """A whole committee: its epoch, members, group public key package and root."""

    committee: Committee = wire(decode=committee_from_wire)


class AdoptedReply(WireMessage, what="ca/committee/update reply"):
    """Whether the receiver took the committee it was sent."""

    adopted: bool


class InfoReply(WireMessage, what="ca/info reply"):
    """``ca/info``: who the agent is, its identity key, and whether it is a signer now."""

    node: str = wire(max_len=_MAX_NAME)
    service: str = wire(max_len=_MAX_NAME)
    identity_key: bytes = wire(length=32)
    signer: bool = wire(absent=False)
    epoch: int | None = wire(minimum=0)


def _spec(raw: Any, where: str) -> RunSpec:
    try:
        return RunSpec.from_wire(raw)
    except CaError as exc:
        raise WireError(str(exc)) from None
    except OverflowError:  # bytes(n) of a huge integer n
        raise WireError(f"{where}: a number is out of range") from None


class DkgBegin(WireMessage, what="ca/dkg/begin"):
    """Start a relayed run; an enrolment also carries the committee the target will join.

    Without a committee the body is the bare run spec, as agents have always sent it.
    """

    spec: RunSpec = wire(decode=_spec)
    committee: Committee | None = wire(default=None, decode=committee_from_wire)

    def to_wire(self) -> Any:
        return self.spec.to_wire() if self.committee is None else super().to_wire()

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        if isinstance(raw, Mapping) and "spec" not in raw:
            raw = {"spec": raw}
        return super().from_wire(raw)


class DkgMessages(WireMessage, what="ca/dkg/begin reply", bare=True):
    """A participant's broadcasts (opaque here: the DKG machines check them)."""

    messages: tuple[Any, ...] = wire(max_len=_MAX_MESSAGES)


class DkgDeliver(WireMessage, what="ca/dkg/deliver"):
    """Broadcasts relayed to one participant of session ``session``."""

    session: bytes = wire(max_len=64)
    messages: tuple[Any, ...] = wire(default=(), max_len=_MAX_MESSAGES)


class DkgProgress(WireMessage, what="ca/dkg/deliver reply"):
    """A participant's new broadcasts, whether it is done, and why it aborted if it did."""

    messages: tuple[Any, ...] = wire(default=(), max_len=_MAX_MESSAGES)
    done: bool = False
    error: str | None = None


class DkgSession(WireMessage, what="ca/dkg/finish"):
    """Which session to finish."""

    session: bytes = wire(max_len=64)


class Ok(WireMessage, what="reply"):
    """A step that answers only that it was done."""

    ok: bool = wire(default=True, absent=False)


# Over mTLS, between members.
COMMIT = RpcMethod("ca/commit", Empty, CommitReply)
SIGN = RpcMethod("ca/sign", SignRequest, SignReply)
TOKEN_CHECK = RpcMethod("ca/token/check", TokenCheckRequest, TokenCheckReply)
COMMITTEE = RpcMethod("ca/committee", Empty, CommitteeMessage)
COMMITTEE_UPDATE = RpcMethod("ca/committee/update", CommitteeMessage, AdoptedReply)
INFO = RpcMethod("ca/info", Empty, InfoReply)
DKG_BEGIN = RpcMethod("ca/dkg/begin", DkgBegin, DkgMessages)
DKG_DELIVER = RpcMethod("ca/dkg/deliver", DkgDeliver, DkgProgress)
DKG_FINISH = RpcMethod("ca/dkg/finish", DkgSession, Ok)
