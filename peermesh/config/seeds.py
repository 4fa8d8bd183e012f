"""``--seeds``: the DNS name whose records list agents to join (``dns:`` or ``srv:``)."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from peermesh.config.declare import ConfigError
from peermesh.config.values import words

DEFAULT_INBOUND_PORT = 15443


class SeedKind(enum.Enum):
    ADDRESS = "dns"  # A and AAAA, e.g. a headless Service; the port is given or the default
    SRV = "srv"  # SRV: target and port come from each record


@dataclass(frozen=True)
class DnsSeed:
    kind: SeedKind
    name: str
    port: int = DEFAULT_INBOUND_PORT


def parse_seed(text: str) -> DnsSeed:
    """``dns:NAME[:PORT]`` (A/AAAA) or ``srv:NAME`` (e.g. ``srv:_gossip._tcp.svc``)."""
    scheme, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ConfigError(f"--seeds {text!r}: expected dns:NAME[:PORT] or srv:NAME")
    try:
        kind = SeedKind(scheme)
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: scheme must be dns or srv") from None
    name, port = rest, DEFAULT_INBOUND_PORT
    if kind is SeedKind.ADDRESS and ":" in rest:
        name, _, port_text = rest.rpartition(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"--seeds {text!r}: bad port {port_text!r}")
        port = int(port_text)
    labels = name.rstrip(".").split(".")
    if len(name) > 253 or not all(0 < len(label) < 64 for label in labels):
        raise ConfigError(f"--seeds {text!r}: {name!r} is not a DNS name")
    return DnsSeed(kind, name.rstrip(".") + ".", port)


def parse_dns_seeds(values: Iterable[str]) -> tuple[DnsSeed, ...]:
    return tuple(parse_seed(text) for text in words(values))
