"""A control method: its name and message types, shared by its router and its callers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from certs.spiffe import SpiffeId
from peermesh.core.codec import WireMessage
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


class Empty(WireMessage, what="empty body", bare=True):
    """A body with nothing in it (``None`` on the wire)."""


class Opaque(WireMessage, what="body", bare=True):
    """A body whose shape its handler checks itself."""

    value: Any = None
