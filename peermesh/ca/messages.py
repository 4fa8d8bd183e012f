"""The threshold CA's RPC messages, over mTLS (``ca/*``) and on the bootstrap listener.

Every body comes from another agent, so each is read field by field before a handler
sees it; what a message carries beyond its shape (a signing package, a run's
participants, a CSR) is checked by the signer or the flow that acts on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Self

from certs import frost
from peermesh.ca.dkgrelay import RunSpec
from peermesh.ca.errors import CaError
from peermesh.ca.state import Committee
from peermesh.core.wire import Fields, WireError
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


@dataclass(frozen=True)
class SignAuth:
    """What authorizes a signature: its kind, and the kind's particulars."""

    kind: AuthKind
    node: str | None = None  # BOOTSTRAP: the initial agent the leaf is for
    token_id: str | None = None  # JOIN: the token, and the service the CSR asks for
    secret: str | None = None
    service: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value}
        for key in ("node", "token_id", "secret", "service"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "ca/sign auth")
        kind = f.text("kind", max_len=32)
        try:
            parsed = AuthKind(kind)
        except ValueError:
            known = ", ".join(k.value for k in AuthKind)
            raise WireError(f"ca/sign auth.kind: {kind!r} is not one of {known}") from None
        return cls(
            kind=parsed,
            node=f.opt_text("node", max_len=_MAX_NAME),
            token_id=f.opt_text("token_id", max_len=64),
            secret=f.opt_text("secret", max_len=128),
            service=f.opt_text("service", max_len=_MAX_NAME),
        )


@dataclass(frozen=True)
class CommitReply:
    """Round one: a signer's fresh nonce commitments, and its committee epoch."""

    commitments: frost.SigningCommitments
    epoch: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"commitments": self.commitments.to_wire(), "epoch": self.epoch}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "ca/commit reply")
        try:
            commitments = frost.SigningCommitments.from_wire(f.value("commitments"))
        except (frost.FrostError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise WireError(f"ca/commit reply.commitments: {exc}") from None
        return cls(commitments, f.integer("epoch", minimum=0, default=0))


@dataclass(frozen=True)
class SignRequest:
    """Round two: the signing package (the signer decodes and checks it) and the auth."""

    package: Mapping[str, Any]
    auth: SignAuth

    def to_wire(self) -> dict[str, Any]:
        return {"package": dict(self.package), "auth": self.auth.to_wire()}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "ca/sign")
        package = f.value("package")
        if not isinstance(package, Mapping):
            raise WireError("ca/sign needs {package, auth}: package is not a map")
        return cls(package, SignAuth.from_wire(f.value("auth")))


@dataclass(frozen=True)
class SignReply:
    """A signer's signature share."""

    share: frost.SignatureShare

    def to_wire(self) -> dict[str, Any]:
        return {"share": self.share.to_wire()}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "ca/sign reply")
        try:
            return cls(frost.SignatureShare.from_wire(f.value("share")))
        except (frost.FrostError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise WireError(f"ca/sign reply.share: {exc}") from None


@dataclass(frozen=True)
class TokenCheckRequest:
    """``ca/token/check``: is join token ``token_id`` in policy? Merge ``update`` first."""

    token_id: str
    update: bytes | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.token_id, "update": self.update}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("id"), str):
            raise WireError("ca/token/check needs {id, update?}")
        f = Fields(raw, "ca/token/check")
        update = f.value("update")
        return cls(
            f.text("id", max_len=64),
            bytes(update) if isinstance(update, bytes | bytearray) and update else None,
        )


@dataclass(frozen=True)
class TokenCheckReply:
    """Whether the signer knows the token, and its policy state vector (to diff against)."""

    known: bool
    sv: bytes = b""

    def to_wire(self) -> dict[str, Any]:
        return {"known": self.known, "sv": self.sv}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "ca/token/check reply")
        return cls(f.flag("known", default=False), f.blob("sv", max_len=1 << 24, default=b""))


@dataclass(frozen=True)
class CommitteeMessage:
    """A whole committee: its epoch, members, group public key package and root."""

    committee: Committee

    def to_wire(self) -> dict[str, Any]:
        return self.committee.to_wire()

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        return cls(committee_from_wire(raw, "committee"))


@dataclass(frozen=True)
class AdoptedReply:
    """Whether the receiver took the committee it was sent."""

    adopted: bool

    def to_wire(self) -> dict[str, Any]:
        return {"adopted": self.adopted}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        return cls(Fields(raw, "ca/committee/update reply").flag("adopted"))


@dataclass(frozen=True)
class InfoReply:
    """``ca/info``: who the agent is, its identity key, and whether it is a signer now."""

    node: str
    service: str
    identity_key: bytes
    signer: bool
    epoch: int | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "service": self.service,
            "identity_key": self.identity_key,
            "signer": self.signer,
            "epoch": self.epoch,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "ca/info reply")
        identity_key = f.blob("identity_key", max_len=32)
        if len(identity_key) != 32:
            raise WireError("ca/info reply.identity_key: expected 32 bytes")
        return cls(
            node=f.text("node", max_len=_MAX_NAME),
            service=f.text("service", max_len=_MAX_NAME),
            identity_key=identity_key,
            signer=f.flag("signer", default=False),
            epoch=f.integer("epoch", minimum=0) if f.has("epoch") else None,
        )


@dataclass(frozen=True)
class DkgBegin:
    """Start a relayed run; an enrolment also carries the committee the target will join."""

    spec: RunSpec
    committee: Committee | None = None

    def to_wire(self) -> Any:
        if self.committee is None:
            return self.spec.to_wire()
        return {"spec": self.spec.to_wire(), "committee": self.committee.to_wire()}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "ca/dkg/begin")
        spec_raw = f.value("spec", raw)
        try:
            spec = RunSpec.from_wire(spec_raw)
        except CaError as exc:
            raise WireError(str(exc)) from None
        committee = (
            committee_from_wire(f.value("committee"), "ca/dkg/begin.committee")
            if f.has("committee")
            else None
        )
        return cls(spec, committee)


@dataclass(frozen=True)
class DkgMessages:
    """A participant's broadcasts (opaque here: the DKG machines check them)."""

    messages: tuple[Any, ...]

    def to_wire(self) -> list[Any]:
        return list(self.messages)

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        if not isinstance(raw, list | tuple) or len(raw) > _MAX_MESSAGES:
            raise WireError("ca/dkg/begin reply: expected a list of messages")
        return cls(tuple(raw))


@dataclass(frozen=True)
class DkgDeliver:
    """Broadcasts relayed to one participant of session ``session``."""

    session: bytes
    messages: tuple[Any, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"session": self.session, "messages": list(self.messages)}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "ca/dkg/deliver")
        messages = f.items("messages", max_items=_MAX_MESSAGES, default=[])
        return cls(f.blob("session", max_len=64), tuple(messages))


@dataclass(frozen=True)
class DkgProgress:
    """A participant's new broadcasts, whether it is done, and why it aborted if it did."""

    messages: tuple[Any, ...] = ()
    done: bool = False
    error: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"messages": list(self.messages), "done": self.done, "error": self.error}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "ca/dkg/deliver reply")
        messages = f.items("messages", max_items=_MAX_MESSAGES, default=[])
        return cls(tuple(messages), f.flag("done", default=False), f.opt_text("error"))


@dataclass(frozen=True)
class DkgSession:
    """Which session to finish."""

    session: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"session": self.session}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        return cls(Fields(raw, "ca/dkg/finish").blob("session", max_len=64))


@dataclass(frozen=True)
class Ok:
    """A step that answers only that it was done."""

    ok: bool = True

    def to_wire(self) -> dict[str, Any]:
        return {"ok": self.ok}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        return cls(Fields(raw, "reply").flag("ok", default=False))


def committee_from_wire(raw: Any, what: str) -> Committee:
    """A committee in a message; malformed is a ``WireError`` naming ``what``."""
    try:
        return Committee.from_wire(raw)
    except CaError as exc:
        raise WireError(f"{what}: {exc}") from None


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
