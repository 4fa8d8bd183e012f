"""The bootstrap listener's messages: roster, root and join (``ca/bootstrap/*``, ``ca/join*``).

The DKG and signing steps on the listener carry the same messages as over mTLS
(:mod:`peermesh.ca.messages`); only the method names differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from peermesh.ca.messages import (
    CommitReply,
    DkgBegin,
    DkgDeliver,
    DkgMessages,
    DkgProgress,
    DkgSession,
    Ok,
    SignReply,
    SignRequest,
    committee_from_wire,
)
from peermesh.ca.state import Committee
from peermesh.core.wire import Fields, WireError
from peermesh.net.rpc import Empty, Opaque, RpcMethod

_MAX_NAME = 253
_MAX_DER = 64 << 10


@dataclass(frozen=True)
class RosterMessage:
    """``hello``: the initial agents one knows of (each entry checked when merged)."""

    entries: tuple[Any, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"roster": list(self.entries)}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        if not isinstance(raw, Mapping):
            return cls(())
        return cls(tuple(Fields(raw, "hello").items("roster", max_items=1024, default=[])))


@dataclass(frozen=True)
class RootMessage:
    """The signed root certificate (DER), pushed to every initial agent."""

    root: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"root": self.root}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        return cls(Fields(raw, "root").blob("root", max_len=_MAX_DER))


@dataclass(frozen=True)
class JoinInfo:
    """``ca/join/info``: the mesh's root (the joiner compares it with its token's pin)."""

    root: bytes
    trust_domain: str

    def to_wire(self) -> dict[str, Any]:
        return {"root": self.root, "trust_domain": self.trust_domain}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "ca/join/info reply")
        return cls(f.blob("root", max_len=_MAX_DER), f.text("trust_domain", max_len=_MAX_NAME))


@dataclass(frozen=True)
class JoinRequest:
    """``ca/join``: the token's id and secret and the joiner's CSR (DER)."""

    token_id: str
    secret: str
    csr: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"token_id": self.token_id, "secret": self.secret, "csr": self.csr}

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "ca/join")
        return cls(
            token_id=f.text("token_id", max_len=64, default=""),
            secret=f.text("secret", max_len=128, default=""),
            csr=f.blob("csr", max_len=_MAX_DER),
        )


@dataclass(frozen=True)
class JoinReply:
    """The joiner's certificate, the committee and the gossip keyring."""

    cert: bytes
    committee: Committee
    gossip_keys: tuple[bytes, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "cert": self.cert,
            "committee": self.committee.to_wire(),
            "gossip_keys": None if self.gossip_keys is None else list(self.gossip_keys),
        }

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        f = Fields(raw, "ca/join reply")
        keys = f.items("gossip_keys", max_items=64) if f.has("gossip_keys") else None
        if keys is not None and not all(isinstance(k, bytes) for k in keys):
            raise WireError("ca/join reply.gossip_keys: expected keys (bytes)")
        return cls(
            cert=f.blob("cert", max_len=_MAX_DER),
            committee=committee_from_wire(f.value("committee"), "ca/join reply.committee"),
            gossip_keys=None if keys is None else tuple(keys),
        )


# On the bootstrap listener (``ca/bootstrap/*`` authenticated by the bootstrap token).
BOOT_HELLO = RpcMethod("ca/bootstrap/hello", RosterMessage, RosterMessage)
BOOT_PUSHPULL = RpcMethod("ca/bootstrap/pushpull", Opaque, Opaque)
BOOT_DKG_BEGIN = RpcMethod("ca/bootstrap/dkg/begin", DkgBegin, DkgMessages)
BOOT_DKG_DELIVER = RpcMethod("ca/bootstrap/dkg/deliver", DkgDeliver, DkgProgress)
BOOT_DKG_FINISH = RpcMethod("ca/bootstrap/dkg/finish", DkgSession, Ok)
BOOT_COMMIT = RpcMethod("ca/bootstrap/commit", Empty, CommitReply)
BOOT_SIGN = RpcMethod("ca/bootstrap/sign", SignRequest, SignReply)
BOOT_ROOT = RpcMethod("ca/bootstrap/root", RootMessage, Ok)
JOIN_INFO = RpcMethod("ca/join/info", Empty, JoinInfo)
JOIN = RpcMethod("ca/join", JoinRequest, JoinReply)
