"""A control method: its name and message types, shared by its router and its callers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

from certs.spiffe import SpiffeId
from peermesh.core.wire import Message

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True)
class RpcMethod(Generic[Req, Resp]):
    """``/peermesh.v1/<name>``: the body decodes as ``request``, the result as ``response``."""

    name: str
    request: type[Req]
    response: type[Resp]


@dataclass(frozen=True)
class ControlRequest(Generic[Req]):
    """One decoded control call: the method, the caller's verified SPIFFE ID, the body."""

    method: str
    peer: SpiffeId
    body: Req
    #: The caller's node name (its certificate's one DNS SAN), when it has one.
    node: str | None = None


@dataclass(frozen=True)
class Empty:
    """A body with nothing in it (``None`` on the wire)."""

    def to_wire(self) -> Any:
        return None

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        return cls()


@dataclass(frozen=True)
class Opaque:
    """A body whose shape its handler checks itself."""

    value: Any = None

    def to_wire(self) -> Any:
        return self.value

    @classmethod
    def from_wire(cls, raw: Any) -> Self:
        return cls(raw)
