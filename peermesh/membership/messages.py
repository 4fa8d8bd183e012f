"""The gossip control RPC's messages: push-pull, the full member-table exchange.

The table itself is gossip's own encoding (``gossip.codec`` push-pull state), which
the SWIM core checks entry by entry when it merges; here the body only has to be
those bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from peermesh.core.wire import WireError
from peermesh.net.rpc import RpcMethod


def _state(raw: Any, what: str) -> bytes:
    if not isinstance(raw, bytes | bytearray):
        raise WireError(f"{what} must be the msgpack state bytes")
    return bytes(raw)


@dataclass(frozen=True)
class PushPullRequest:
    """``gossip/pushpull``: the caller's whole member table; the callee merges it first."""

    state: bytes

    def to_wire(self) -> bytes:
        return self.state

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        return cls(_state(raw, "push-pull body"))


@dataclass(frozen=True)
class PushPullReply:
    """The callee's whole member table, taken after merging the caller's."""

    state: bytes

    def to_wire(self) -> bytes:
        return self.state

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        return cls(_state(raw, "push-pull reply"))


PUSH_PULL = RpcMethod("gossip/pushpull", PushPullRequest, PushPullReply)
