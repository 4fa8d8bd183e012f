"""Where each service runs: the endpoint value type and the source interface.

The proxy asks an ``EndpointSource``; it never cares whether the answer came from a
static file, ``--peer`` flags or gossip membership.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from peermesh.core.errors import PeermeshError


class EndpointError(PeermeshError, ValueError):
    """An endpoint file or flag that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Endpoint:
    """One agent's inbound listener fronting one instance of a service."""

    service: str
    host: str
    port: int
    node: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class EndpointSource(Protocol):
    """Answers "where does service X run?" for the outbound proxy."""

    def endpoints(self, service: str) -> Sequence[Endpoint] | None:
        """Endpoints of ``service``; None when the service is unknown to the mesh."""

    def services(self) -> Iterable[str]:
        """Every service this source knows."""


def parse_host_port(text: str, *, what: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` into its parts, with an error naming ``what``."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise EndpointError(f"{what}: {text!r} is not [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise EndpointError(f"{what}: {text!r} has no port; write HOST:PORT")
    if not host:
        raise EndpointError(f"{what}: {text!r} has no host")
    try:
        port = int(port_text)
    except ValueError:
        raise EndpointError(f"{what}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise EndpointError(f"{what}: port {port} is outside 1-65535")
    return host, port


class CompositeEndpoints:
    """Several sources merged: static flags/files beside live gossip membership."""

    def __init__(self, sources: Sequence[EndpointSource]) -> None:
        self.sources = list(sources)

    def endpoints(self, service: str) -> Sequence[Endpoint] | None:
        found: list[Endpoint] = []
        known = False
        seen: set[tuple[str, int]] = set()
        for source in self.sources:
            result = source.endpoints(service)
            if result is None:
                continue
            known = True
            for endpoint in result:
                if (endpoint.host, endpoint.port) not in seen:
                    seen.add((endpoint.host, endpoint.port))
                    found.append(endpoint)
        return found if known else None

    def services(self) -> Iterable[str]:
        names: set[str] = set()
        for source in self.sources:
            names.update(source.services())
        return sorted(names)
