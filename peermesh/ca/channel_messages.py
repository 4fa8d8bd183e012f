"""The bootstrap listener's messages: roster, root and join (``ca/bootstrap/*``, ``ca/join*``).

The DKG and signing steps on the listener carry the same messages as over mTLS
(:mod:`peermesh.ca.messages`); only the method names differ.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from peermesh.core.codec import WireMessage, wire
from peermesh.net.rpc import Empty, Opaque, RpcMethod

_MAX_NAME = 253
_MAX_DER = 64 << 10


class RosterMessage(WireMessage, what="hello"):
    """``hello``: the initial agents one knows of (each entry checked when merged)."""

    entries: tuple[Any, ...] = wire(key="roster", default=(), max_len=1024)

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        # A hello with no roster at all is an agent that knows nobody yet.
        return super().from_wire(raw) if isinstance(raw, Mapping) else cls(())


class RootMessage(WireMessage, what="root"):
    """The signed root certificate (DER), pushed to every initial agent."""

    root: bytes = wire(max_len=_MAX_DER)


class JoinInfo(WireMessage, what="ca/join/info reply"):
    """``ca/join/info``: the mesh's root (the joiner compares it with its token's pin)."""

    root: bytes = wire(max_len=_MAX_DER)
    trust_domain: str = wire(max_len=_MAX_NAME)


class JoinRequest(WireMessage, what="ca/join"):
    """``ca/join``: the token's id and secret and the joiner's CSR (DER)."""

    token_id: str = wire(max_len=64, absent="")
    secret: str = wire(max_len=128, absent="")
    csr: bytes = wire(max_len=_MAX_DER)


class JoinReply(WireMessage, what="ca/join reply"):
    """The joiner's certificate, the committee and the gossip keyring."""

    cert: bytes = wire(max_len=_MAX_DER)
    committee: Committee = wire(decode=committee_from_wire)
    gossip_keys: tuple[bytes, ...] | None = wire(default=None, max_len=64)


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
