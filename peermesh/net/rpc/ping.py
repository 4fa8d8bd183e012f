"""``ping``: the liveness call every agent answers, echoing a small value back."""

from __future__ import annotations

from typing import Any

from peermesh.core.codec import WireMessage, wire

from .method import RpcMethod


class PingRequest(WireMessage, what="ping", bare=True):
    """What to echo: any small msgpack value (the router already capped the body's size)."""

    echo: Any = None


class PingReply(WireMessage, what="ping reply"):
    """Who answered, who it saw calling, and the echo."""

    node: str = wire(max_len=253)
    service: str = wire(max_len=253)
    caller: str = wire(max_len=2048)
    echo: Any = None


PING = RpcMethod("ping", PingRequest, PingReply)
