"""The gossip control RPC's messages: push-pull, the full member-table exchange.

The table itself is gossip's own encoding (``gossip.codec`` push-pull state), which
the SWIM core checks entry by entry when it merges; here the body only has to be
those bytes, no more than the router lets a body be.
"""

from __future__ import annotations

from peermesh.core.codec import WireMessage, wire
from peermesh.net.rpc import RpcMethod
from peermesh.net.rpc.router import MAX_BODY


class PushPullRequest(WireMessage, what="push-pull body", bare=True):
    """``gossip/pushpull``: the caller's whole member table; the callee merges it first."""

    state: bytes = wire(max_len=MAX_BODY)


class PushPullReply(WireMessage, what="push-pull reply", bare=True):
    """The callee's whole member table, taken after merging the caller's."""

    state: bytes = wire(max_len=MAX_BODY)


PUSH_PULL = RpcMethod("gossip/pushpull", PushPullRequest, PushPullReply)
