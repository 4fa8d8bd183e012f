"""``ping``: the liveness call every agent answers, echoing a small value back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from peermesh.core.wire import Fields

from .method import RpcMethod


@dataclass(frozen=True)
class PingRequest:
    """What to echo: any small msgpack value."""

    echo: Any = None

    def to_wire(self) -> Any:
        return self.echo

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        return cls(raw)  # any value: the router already capped the body's size


@dataclass(frozen=True)
class PingReply:
    """Who answered, who it saw calling, and the echo."""

    node: str
    service: str
    caller: str
    echo: Any = None

    def to_wire(self) -> Any:
        return {
            "node": self.node,
            "service": self.service,
            "caller": self.caller,
            "echo": self.echo,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        fields = Fields(raw, "ping reply")
        return cls(
            node=fields.text("node", max_len=253),
            service=fields.text("service", max_len=253),
            caller=fields.text("caller", max_len=2048),
            echo=fields.value("echo"),
        )


PING = RpcMethod("ping", PingRequest, PingReply)
