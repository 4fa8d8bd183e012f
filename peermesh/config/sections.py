"""The agent's settings, one frozen dataclass per component, each field declared once."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from peermesh.config.declare import ConfigError, Kind, choice_setting, setting
from peermesh.config.seeds import DnsSeed, parse_dns_seeds
from peermesh.config.values import (
    LOOPBACK,
    optional_address,
    optional_path,
    optional_text,
    parse_address,
    parse_peers,
    parse_seeds,
    words,
)
from peermesh.core.endpoint import EndpointError, parse_host_port
from peermesh.core.units import parse_duration, parse_sampling
from peermesh.net.caps import Caps
from peermesh.net.http.h2engine import EngineName
from peermesh.net.http.timeouts import Timeouts

# The signers refuse a longer certificate, so the agent never asks for one.
MAX_CERT_LIFETIME = 86400.0


class GossipProfile(enum.StrEnum):
    """SWIM timing: a LAN, a WAN, or one host (tests)."""

    LAN = "lan"
    WAN = "wan"
    LOCAL = "local"


def _admin_address(text: str) -> tuple[str, int]:
    address = parse_address(text, "--admin")
    if address[0] not in LOOPBACK:
        raise ConfigError(
            f"--admin {text!r}: the admin API must listen on loopback (127.0.0.1 or ::1);"
            " it can change policy and must not be reachable from the network"
        )
    return address


def _drain_timeout(value: float | str) -> float:
    seconds = float(value)
    if seconds < 0:
        raise ConfigError("--drain-timeout must be ≥ 0 seconds")
    return seconds


def _timeout(flag: str) -> Callable[[str | float], float]:
    def parse(value: str | float) -> float:
        if isinstance(value, str) and value.strip().lower() in ("0", "off"):
            return 0.0
        try:
            seconds = float(value) if isinstance(value, int | float) else parse_duration(value)
        except ValueError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
        if not 0 <= seconds < math.inf:
            raise ConfigError(f"{flag} must be ≥ 0 seconds (0 turns it off)")
        return seconds

    return parse


def _dial_timeout(value: str | float) -> float:
    seconds = _timeout("--connect-timeout")(value)
    if not 0 < seconds <= 600:
        raise ConfigError("--connect-timeout must be more than 0 and at most 10 minutes")
    return seconds


def _dns_upstreams(values: Iterable[str]) -> tuple[tuple[str, int], ...]:
    found = []
    for text in words(values):
        try:
            found.append(parse_host_port(text, what=f"--dns-upstream {text!r}"))
        except EndpointError as exc:
            raise ConfigError(str(exc)) from None
    return tuple(found)


def _ports(values: Iterable[str]) -> tuple[int, ...]:
    found = []
    for text in words(values):
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ConfigError(f"--tcp-port {text!r}: give a port 1-65535")
        found.append(int(text))
    return tuple(found)


def _profile(value: str) -> GossipProfile:
    try:
        return GossipProfile(value)
    except ValueError:
        raise ConfigError(f"--gossip-profile {value!r}: choose lan, wan or local") from None


def _h2_engine(value: str | EngineName | None) -> EngineName | None:
    if value is None:
        return None  # the process default: nghttp2, h2 when the extension is not built
    try:
        return EngineName(value)
    except ValueError:
        raise ConfigError(f"--h2-engine {value!r}: choose nghttp2 or h2") from None


def _join_token(value: str | None) -> str | None:
    if value is None:
        return None
    from peermesh.ca.tokens import JoinToken, TokenError

    try:
        JoinToken.parse(value)
    except TokenError as exc:
        raise ConfigError(f"--join-token: {exc}") from None
    return value


def _cert_lifetime(value: str | float) -> float:
    try:
        lifetime = float(value) if isinstance(value, int | float) else parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"--cert-lifetime: {exc}") from None
    if lifetime > MAX_CERT_LIFETIME:
        raise ConfigError("--cert-lifetime is at most 24h (the signers' limit)")
    if lifetime < 60:
        raise ConfigError("--cert-lifetime must be at least 60s")
    return lifetime


def _otlp_endpoint(value: str | None) -> str | None:
    if not value:
        return None
    hint = "give the collector's OTLP/HTTP URL, e.g. http://127.0.0.1:4318"
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"--otlp-endpoint {value!r}: {hint}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not one)
    except ValueError as exc:
        raise ConfigError(f"--otlp-endpoint {value!r}: {exc}; {hint}") from None
    if not parts.hostname or not value.isascii() or any(c.isspace() for c in value):
        raise ConfigError(f"--otlp-endpoint {value!r}: no host, or not ASCII; {hint}")
    return value


def _trace_sampling(value: str | float) -> float:
    try:
        return parse_sampling(value)
    except ValueError as exc:
        raise ConfigError(f"--trace-sampling {value!r}: {exc}") from None


@dataclass(frozen=True)
class AdminConfig:
    """The loopback admin API (status, policy edits, the CLI's way in)."""

    listen: tuple[str, int] = setting(
        "--admin", "127.0.0.1:15000", help="Admin API HOST:PORT (loopback).", parse=_admin_address
    )


@dataclass(frozen=True)
class ProxyConfig:
    """The outbound and inbound proxies and where they find endpoints."""

    outbound: tuple[str, int] = setting(
        "--outbound",
        "localhost:15001",
        help="Listener the local service sends mesh requests to. localhost (the default)"
        " listens on both 127.0.0.1 and [::1], where capture redirects IPv4 and IPv6"
        " connections (IPv4 only on a host without IPv6); any other ADDR:PORT is exactly"
        " that address.",
        parse=lambda text: parse_address(text, "--outbound"),
    )
    inbound: tuple[str, int] = setting(
        "--inbound",
        "0.0.0.0:15443",
        help="mTLS listener peers reach this agent on.",
        parse=lambda text: parse_address(text, "--inbound"),
    )
    peers: tuple[str, ...] = setting(
        "--peer",
        help="Static endpoint SERVICE=HOST:PORT (repeatable; env: space-separated).",
        parse=parse_peers,
        multiple=True,
        aliases=("peers",),
    )
    endpoints_file: Path | None = setting(
        "--endpoints-file",
        help="YAML/JSON endpoint table, re-read when it changes.",
        parse=optional_path,
        kind=Kind.FILE,
    )
    drain_timeout: float = setting(
        "--drain-timeout",
        10.0,
        help="Seconds to let in-flight requests finish on SIGTERM.",
        parse=_drain_timeout,
        kind=Kind.FLOAT,
    )
    plaintext: tuple[str, int] | None = setting(
        "--plaintext",
        help="Also accept plain HTTP from non-mesh clients here (MeshConfig PERMISSIVE only).",
        parse=optional_address("--plaintext"),
    )
    h2_engine: EngineName | None = choice_setting(
        "--h2-engine",
        EngineName,
        help="HTTP/2 implementation of every leg: nghttp2 (default; h2 if not built) or h2.",
        parse=_h2_engine,
    )
    dns: tuple[str, int] | None = setting(
        "--dns",
        help="Serve mesh DNS (<service>.mesh -> a stable VIP, the rest forwarded) on"
        " HOST:PORT, e.g. 127.0.0.1:15053 (what 'peermesh capture install' redirects to).",
        parse=optional_address("--dns", off="off"),
    )
    dns_bare_names: bool = setting(
        "--dns-bare-names",
        False,
        help="Mesh DNS also answers a bare known service name ('orders').",
        parse=bool,
        kind=Kind.FLAG,
    )
    dns_upstreams: tuple[tuple[str, int], ...] = setting(
        "--dns-upstream",
        help="Resolver HOST:PORT for non-mesh names (repeatable; default: /etc/resolv.conf).",
        parse=_dns_upstreams,
        multiple=True,
    )
    tcp_ports: tuple[int, ...] = setting(
        "--tcp-port",
        help="Captured destination port carried as plain TCP without protocol sniffing"
        " (server-speaks-first protocols such as MySQL or SMTP); repeatable.",
        parse=_ports,
        multiple=True,
    )
    connect_timeout: float = setting(
        "--connect-timeout",
        "2s",
        help="Longest wait for a connection to a peer agent (dial, TLS, SETTINGS); a"
        " TrafficPolicy connectTimeout can only shorten it for TCP tunnels.",
        parse=_dial_timeout,
    )


def _cap(flag: str) -> Callable[[str | int], int]:
    def parse(value: str | int) -> int:
        text = str(value).strip()
        if not text.isdigit():
            raise ConfigError(f"{flag} {value!r}: give a whole number ≥ 0 (0 turns it off)")
        return int(text)

    return parse


def _timeout_setting(flag: str, default: str, *, help: str) -> float:
    """A duration setting where 0 or 'off' turns the timeout off."""
    result: float = setting(flag, default, help=help, parse=_timeout(flag))
    return result


def _cap_setting(flag: str, default: str, *, help: str) -> int:
    """A whole-number cap where 0 turns the cap off."""
    result: int = setting(flag, default, help=help, parse=_cap(flag), kind=Kind.INT)
    return result


@dataclass(frozen=True)
class LimitsConfig:
    """Downstream timeouts and connection/stream caps (docs/security.md, Hostile traffic)."""

    header_timeout: float = _timeout_setting(
        "--header-timeout",
        "60s",
        help="An HTTP/1.1 request head must arrive whole within this (408, or a close if"
        " nothing came); 0 is off.",
    )
    body_timeout: float = _timeout_setting(
        "--body-timeout",
        "60s",
        help="Longest wait between two reads of a request body (HTTP/1.1 and each HTTP/2"
        " stream): 408 / RST_STREAM CANCEL; 0 is off.",
    )
    keepalive_timeout: float = _timeout_setting(
        "--keepalive-timeout",
        "75s",
        help="An HTTP/1.1 app connection idle between requests this long is closed; 0 is off.",
    )
    idle_timeout: float = _timeout_setting(
        "--idle-timeout",
        "1h",
        help="An HTTP/2 connection with no open streams this long gets GOAWAY; 0 is off.",
    )
    stream_idle_timeout: float = _timeout_setting(
        "--stream-idle-timeout",
        "5m",
        help="An HTTP/2 stream with no frames either way this long is reset; 0 is off.",
    )
    tunnel_idle_timeout: float = _timeout_setting(
        "--tunnel-idle-timeout",
        "1h",
        help="The stream idle timeout of CONNECT streams (TCP tunnels, WebSockets); 0 is off.",
    )
    preface_timeout: float = _timeout_setting(
        "--preface-timeout",
        "10s",
        help="After TLS (mTLS inbound) or the h2c magic, the HTTP/2 SETTINGS must come"
        " within this; 0 is off.",
    )
    max_connections: int = _cap_setting(
        "--max-connections",
        "10000",
        help="Open connections per listener; more are closed at accept. 0 is off.",
    )
    max_peer_connections: int = _cap_setting(
        "--max-peer-connections",
        "1000",
        help="Open connections per source address (app listeners) or SPIFFE ID (inbound).",
    )
    max_streams: int = _cap_setting(
        "--max-streams",
        "10000",
        help="Concurrent requests across the agent; more get REFUSED_STREAM or 503. 0 is off.",
    )

    def timeouts(self) -> Timeouts:
        return Timeouts(
            header=self.header_timeout,
            body=self.body_timeout,
            keepalive=self.keepalive_timeout,
            idle=self.idle_timeout,
            stream_idle=self.stream_idle_timeout,
            tunnel_idle=self.tunnel_idle_timeout,
            preface=self.preface_timeout,
        )

    def caps(self) -> Caps:
        return Caps(
            connections=self.max_connections,
            peer_connections=self.max_peer_connections,
            streams=self.max_streams,
        )


@dataclass(frozen=True)
class GossipConfig:
    """SWIM membership and mDNS discovery."""

    listen: tuple[str, int] | None = setting(
        "--gossip",
        "0.0.0.0:15946",
        help="UDP address for SWIM gossip, or 'off' (static --peer endpoints only).",
        parse=optional_address("--gossip", off="off"),
    )
    join: tuple[tuple[str, int], ...] = setting(
        "--join",
        help="Seed: a peer agent's inbound HOST[:PORT] (mTLS); repeatable.",
        parse=parse_seeds,
        multiple=True,
    )
    key_file: Path | None = setting(
        "--gossip-key-file",
        help="Mesh gossip keyring (from 'peermesh keygen gossip').",
        parse=optional_path,
        kind=Kind.EXISTING_FILE,
    )
    insecure: bool = setting(
        "--insecure-gossip",
        False,
        help="Gossip without encryption (local experiments only).",
        parse=bool,
        kind=Kind.FLAG,
    )
    profile: GossipProfile = choice_setting(
        "--gossip-profile",
        GossipProfile,
        "lan",
        help="SWIM timing: lan, wan or local (one host).",
        parse=_profile,
    )
    mdns: bool = setting(
        "--mdns",
        True,
        help="Advertise and discover agents on the local link with mDNS.",
        parse=bool,
        kind=Kind.SWITCH,
    )
    advertise: str | None = setting("--advertise", help="Address peers use to reach us.")
    seeds: tuple[DnsSeed, ...] = setting(
        "--seeds",
        help="Join agents a DNS name lists: dns:NAME[:PORT] (A/AAAA) or srv:NAME; repeatable.",
        parse=parse_dns_seeds,
        multiple=True,
    )
    seeds_resolver: tuple[str, int] | None = setting(
        "--seeds-resolver",
        help="DNS server HOST:PORT for --seeds (default: the first in /etc/resolv.conf).",
        parse=optional_address("--seeds-resolver"),
    )

    def check(self) -> None:
        if self.key_file is not None and self.insecure:
            raise ConfigError("--gossip-key-file and --insecure-gossip exclude each other")


@dataclass(frozen=True)
class CaConfig:
    """The threshold CA: bootstrap, joining with a token, certificate lifetime."""

    bootstrap_expect: int | None = setting(
        "--bootstrap-expect",
        help="Bootstrap the threshold CA once this many agents with our bootstrap token meet.",
        kind=Kind.INT,
    )
    bootstrap_token_file: Path | None = setting(
        "--bootstrap-token-file",
        help="Secret shared by the initial agents (from 'peermesh keygen bootstrap-token').",
        parse=optional_path,
        kind=Kind.EXISTING_FILE,
    )
    bootstrap_listen: tuple[str, int] | None = setting(
        "--bootstrap-listen",
        help="Bootstrap/join listener HOST:PORT (default: inbound port + 1; an ephemeral port"
        " when the inbound port is 0).",
        parse=optional_address("--bootstrap-listen"),
    )
    threshold: int | None = setting(
        "--threshold",
        help="Signers needed per certificate (default: a majority of --bootstrap-expect).",
        kind=Kind.INT,
    )
    join_token: str | None = setting(
        "--join-token",
        help=(
            "Join token from 'peermesh token create' (first certificate through --join);"
            " on shared hosts use --join-token-file or PEERMESH_JOIN_TOKEN (argv is public)."
        ),
        parse=_join_token,
    )
    join_token_file: Path | None = setting(
        "--join-token-file",
        help="File holding the join token (mode 0600 or stricter; read once at start).",
        parse=optional_path,
        kind=Kind.EXISTING_FILE,
    )
    cert_lifetime: float = setting(
        "--cert-lifetime",
        "24h",
        help="Lifetime of this agent's certificates (renewed at half of it; at most 24h).",
        parse=_cert_lifetime,
    )
    max_cert_lifetime: float = MAX_CERT_LIFETIME

    def check(self) -> None:
        expect, threshold = self.bootstrap_expect, self.threshold
        if expect is not None:
            if self.bootstrap_token_file is None:
                raise ConfigError(
                    "--bootstrap-expect needs --bootstrap-token-file: the same secret file on"
                    " every initial agent authenticates the bootstrap (make one with 'peermesh"
                    " keygen bootstrap-token --out FILE')"
                )
            if expect < 2:
                raise ConfigError("--bootstrap-expect must be at least 2 (a threshold needs t ≥ 2)")
        if threshold is not None:
            if expect is None:
                raise ConfigError("--threshold only applies with --bootstrap-expect")
            if not 2 <= threshold <= expect:
                raise ConfigError(
                    f"--threshold {threshold} must be between 2 and --bootstrap-expect {expect}"
                )
        if self.bootstrap_token_file is not None and not self.bootstrap_token_file.is_file():
            raise ConfigError(f"--bootstrap-token-file {self.bootstrap_token_file}: no such file")
        if self.join_token_file is not None and self.join_token is not None:
            raise ConfigError("give the join token once: --join-token-file or --join-token")

    def with_token_file(self) -> CaConfig:
        """This section with ``join_token`` read from ``--join-token-file`` (if given).

        Like ssh with a private key, a token file other users can read is refused: the
        token is a credential for a mesh identity.
        """
        path = self.join_token_file
        if path is None:
            return self
        try:
            mode = path.stat().st_mode
            if mode & 0o077:
                raise ConfigError(
                    f"--join-token-file {path}: mode {mode & 0o777:04o} lets other users read"
                    f" the token; run 'chmod 600 {path}'"
                )
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--join-token-file {path}: {exc}") from None
        try:
            token = _join_token(text)
        except ConfigError as exc:
            raise ConfigError(f"--join-token-file {path}: {exc}") from None
        return dataclasses.replace(self, join_token=token)

    @property
    def carries_gossip_key(self) -> bool:
        """The bootstrap token or join token yields the gossip key, so no key file is needed."""
        return (
            self.bootstrap_token_file is not None
            or self.join_token is not None
            or self.join_token_file is not None
        )


@dataclass(frozen=True)
class TelemetryConfig:
    """Access log and tracing."""

    access_log: str | None = setting(
        "--access-log",
        help="Write one JSON line per request to this file ('-' for stdout).",
        parse=optional_text,
    )
    otlp_endpoint: str | None = setting(
        "--otlp-endpoint",
        help="Export a span per hop to this OTLP/HTTP collector (e.g. http://127.0.0.1:4318).",
        parse=_otlp_endpoint,
    )
    trace_sampling: float = setting(
        "--trace-sampling",
        "1",
        help="Fraction of new traces to sample (0..1, or a percentage like 1%); a decision"
        " arriving with the request (traceparent flags, x-b3-sampled) is always honoured.",
        parse=_trace_sampling,
    )
