"""Value types and parsers for settings: each turns what a user wrote into a checked value."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from peermesh.config.declare import ConfigError
from peermesh.core.endpoint import EndpointError, parse_host_port

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ServiceSpec:
    """The one service this agent stands beside."""

    name: str
    port: int
    protocol: Literal["h1", "h2c"] = "h1"
    host: str = "127.0.0.1"

    @classmethod
    def parse(cls, text: str) -> ServiceSpec:
        """``NAME=PORT[,proto=h1|h2c][,host=ADDR]``."""
        name, sep, rest = text.partition("=")
        if not sep:
            raise ConfigError(f"--service {text!r}: write NAME=PORT[,proto=h1|h2c]")
        check_name(name, "--service name")
        parts = rest.split(",")
        try:
            port = int(parts[0])
        except ValueError:
            raise ConfigError(f"--service {text!r}: port {parts[0]!r} is not a number") from None
        if not 0 < port < 65536:
            raise ConfigError(f"--service {text!r}: port {port} is outside 1-65535")
        protocol: Literal["h1", "h2c"] = "h1"
        host = "127.0.0.1"
        for option in parts[1:]:
            key, _, value = option.partition("=")
            if key == "proto":
                if value not in ("h1", "h2c"):
                    raise ConfigError(f"--service {text!r}: proto must be h1 or h2c, not {value!r}")
                protocol = "h1" if value == "h1" else "h2c"
            elif key == "host":
                if not value:
                    raise ConfigError(f"--service {text!r}: host is empty")
                host = value
            else:
                raise ConfigError(f"--service {text!r}: unknown option {key!r} (proto, host)")
        return cls(name=name, port=port, protocol=protocol, host=host)


def check_name(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"{what} {name!r} must be lowercase letters, digits and '-' (DNS label, ≤63 chars)"
        )
    return name


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` for a listener; port 0 means "pick one" (tests)."""
    try:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"{what} {text!r}: write HOST:PORT")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what} {text!r}: port is not a number") from None
    if not 0 <= port < 65536:
        raise ConfigError(f"{what} {text!r}: port outside 0-65535")
    return host or "0.0.0.0", port


def optional_address(
    what: str, off: str | None = None
) -> Callable[[str | None], tuple[str, int] | None]:
    """A listener address, or None when not given (or given as ``off``)."""

    def parse(text: str | None) -> tuple[str, int] | None:
        if not text or text == off:
            return None
        return parse_address(text, what)

    return parse


def optional_path(value: str | Path | None) -> Path | None:
    return Path(value) if value else None


def optional_text(value: str | None) -> str | None:
    return value or None


def words(values: Iterable[str]) -> tuple[str, ...]:
    """Repeated values, each of which may hold several separated by spaces (env style)."""
    return tuple(word for value in values for word in value.split())


def parse_peers(values: Iterable[str]) -> tuple[str, ...]:
    peers = words(values)
    for spec_text in peers:
        _service, sep, address = spec_text.partition("=")
        if not sep:
            raise ConfigError(f"--peer {spec_text!r}: write SERVICE=HOST:PORT")
        try:
            parse_host_port(address, what=f"--peer {spec_text!r}")
        except EndpointError as exc:
            raise ConfigError(str(exc)) from None
    return peers


def parse_seeds(values: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """``--join`` seeds: a peer's inbound ``HOST[:PORT]``, port 15443 when left out."""
    seeds = []
    for seed in words(values):
        host, sep, port_text = seed.rpartition(":")
        if not sep:
            host, port_text = seed, "15443"
        try:
            seeds.append(parse_host_port(f"{host}:{port_text}", what=f"--join {seed!r}"))
        except EndpointError as exc:
            raise ConfigError(str(exc)) from None
    return tuple(seeds)


def parse_labels(values: Iterable[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label {item!r}: write KEY=VALUE (e.g. version=v2)")
        labels[key] = value
    return labels
