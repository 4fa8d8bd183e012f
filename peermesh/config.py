"""Agent configuration: flags, then ``PEERMESH_*`` environment, then a TOML file, then defaults.

Everything is validated here, before any socket is opened, so a typo is a clear
message at start-up rather than a surprise under traffic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from peermesh.core.endpoint import EndpointError, parse_host_port
from peermesh.observability.tracing import parse_sampling

DEFAULT_OUTBOUND = "127.0.0.1:15001"
DEFAULT_INBOUND = "0.0.0.0:15443"
DEFAULT_ADMIN = "127.0.0.1:15000"
DEFAULT_TRUST_DOMAIN = "mesh.local"
DEFAULT_GOSSIP = "0.0.0.0:15946"

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ConfigError(ValueError):
    """A setting that cannot work; the message names the setting and the fix."""


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


@dataclass(frozen=True)
class AgentConfig:
    """Everything an agent needs to start."""

    name: str
    service: ServiceSpec
    data_dir: Path
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    outbound: tuple[str, int] = ("127.0.0.1", 15001)
    inbound: tuple[str, int] = ("0.0.0.0", 15443)
    admin: tuple[str, int] = ("127.0.0.1", 15000)
    peers: tuple[str, ...] = ()
    endpoints_file: Path | None = None
    drain_timeout: float = 10.0
    connect_timeout: float = 2.0
    labels: dict[str, str] = field(default_factory=dict)
    gossip: tuple[str, int] | None = ("0.0.0.0", 15946)
    join: tuple[tuple[str, int], ...] = ()
    gossip_key_file: Path | None = None
    gossip_profile: str = "lan"
    mdns: bool = True
    advertise: str | None = None
    plaintext: tuple[str, int] | None = None
    # threshold CA (issue 4) ------------------------------------------------------------
    insecure_gossip: bool = False
    bootstrap_expect: int | None = None
    bootstrap_token_file: Path | None = None
    bootstrap_listen: tuple[str, int] | None = None
    threshold: int | None = None
    join_token: str | None = None
    cert_lifetime: float = 86400.0
    max_cert_lifetime: float = 86400.0
    # observability (issue 7) ------------------------------------------------------------
    access_log: str | None = None
    otlp_endpoint: str | None = None
    trace_sampling: float = 1.0

    @classmethod
    def build(
        cls,
        *,
        name: str,
        service: str,
        data_dir: str | Path | None,
        trust_domain: str | None = None,
        outbound: str = DEFAULT_OUTBOUND,
        inbound: str = DEFAULT_INBOUND,
        admin: str = DEFAULT_ADMIN,
        peers: tuple[str, ...] = (),
        endpoints_file: str | Path | None = None,
        drain_timeout: float = 10.0,
        labels: tuple[str, ...] = (),
        gossip: str = DEFAULT_GOSSIP,
        join: tuple[str, ...] = (),
        gossip_key_file: str | Path | None = None,
        insecure_gossip: bool = False,
        gossip_profile: str = "lan",
        mdns: bool = True,
        advertise: str | None = None,
        plaintext: str | None = None,
        bootstrap_expect: int | None = None,
        bootstrap_token_file: str | Path | None = None,
        bootstrap_listen: str | None = None,
        threshold: int | None = None,
        join_token: str | None = None,
        cert_lifetime: str | float = 86400.0,
        access_log: str | None = None,
        otlp_endpoint: str | None = None,
        trace_sampling: str | float = 1.0,
    ) -> AgentConfig:
        check_name(name, "--name")
        spec = ServiceSpec.parse(service)
        admin_addr = parse_address(admin, "--admin")
        if admin_addr[0] not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError(
                f"--admin {admin!r}: the admin API must listen on loopback (127.0.0.1 or ::1);"
                " it can change policy and must not be reachable from the network"
            )
        for spec_text in peers:
            _service, sep, address = spec_text.partition("=")
            if not sep:
                raise ConfigError(f"--peer {spec_text!r}: write SERVICE=HOST:PORT")
            try:
                parse_host_port(address, what=f"--peer {spec_text!r}")
            except EndpointError as exc:
                raise ConfigError(str(exc)) from None
        if drain_timeout < 0:
            raise ConfigError("--drain-timeout must be ≥ 0 seconds")
        label_map: dict[str, str] = {}
        for item in labels:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--label {item!r}: write KEY=VALUE (e.g. version=v2)")
            label_map[key] = value
        gossip_addr = None if gossip == "off" else parse_address(gossip, "--gossip")
        ca = _check_ca_options(
            bootstrap_expect, bootstrap_token_file, bootstrap_listen, threshold, join_token,
            cert_lifetime,
        )  # fmt: skip
        ca_gossip_key = bootstrap_token_file is not None or join_token is not None
        if (
            gossip_addr is not None
            and gossip_key_file is None
            and not insecure_gossip
            and not ca_gossip_key
        ):
            raise ConfigError(
                "gossip needs the mesh gossip key: make one with 'peermesh keygen gossip --out"
                " FILE', give every agent --gossip-key-file FILE; or pass --insecure-gossip"
                " (local experiments only), or --gossip off (static --peer endpoints only)"
            )
        if gossip_key_file is not None and insecure_gossip:
            raise ConfigError("--gossip-key-file and --insecure-gossip exclude each other")
        if gossip_profile not in ("lan", "wan", "local"):
            raise ConfigError(f"--gossip-profile {gossip_profile!r}: choose lan, wan or local")
        seeds = []
        for seed in join:
            host, sep, port_text = seed.rpartition(":")
            if not sep:
                host, port_text = seed, "15443"
            try:
                seeds.append(parse_host_port(f"{host}:{port_text}", what=f"--join {seed!r}"))
            except EndpointError as exc:
                raise ConfigError(str(exc)) from None
        directory = Path(data_dir) if data_dir else Path("peermesh-data") / name
        if otlp_endpoint is not None and not otlp_endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"--otlp-endpoint {otlp_endpoint!r}: give the collector's OTLP/HTTP URL,"
                " e.g. http://127.0.0.1:4318"
            )
        try:
            sampling = parse_sampling(trace_sampling)
        except ValueError as exc:
            raise ConfigError(f"--trace-sampling {trace_sampling!r}: {exc}") from None
        return cls(
            name=name,
            service=spec,
            data_dir=directory,
            trust_domain=trust_domain or trust_domain_from_data_dir(directory),
            outbound=parse_address(outbound, "--outbound"),
            inbound=parse_address(inbound, "--inbound"),
            admin=admin_addr,
            peers=tuple(peers),
            endpoints_file=Path(endpoints_file) if endpoints_file else None,
            drain_timeout=drain_timeout,
            labels=label_map,
            gossip=gossip_addr,
            join=tuple(seeds),
            gossip_key_file=Path(gossip_key_file) if gossip_key_file else None,
            gossip_profile=gossip_profile,
            mdns=mdns and gossip_addr is not None,
            advertise=advertise,
            plaintext=parse_address(plaintext, "--plaintext") if plaintext else None,
            insecure_gossip=insecure_gossip,
            bootstrap_expect=ca.bootstrap_expect,
            bootstrap_token_file=ca.bootstrap_token_file,
            bootstrap_listen=ca.bootstrap_listen,
            threshold=ca.threshold,
            join_token=ca.join_token,
            cert_lifetime=ca.cert_lifetime,
            access_log=access_log or None,
            otlp_endpoint=otlp_endpoint or None,
            trace_sampling=sampling,
        )


def trust_domain_from_data_dir(data_dir: Path) -> str:
    """The trust domain of the certificate already in ``data_dir``, else the default."""
    from cryptography import x509

    from certs.devca import CERT_FILE
    from certs.spiffe import IdentityError, spiffe_id_from_certificate

    try:
        cert = x509.load_pem_x509_certificate((data_dir / CERT_FILE).read_bytes())
        return spiffe_id_from_certificate(cert).trust_domain
    except (OSError, ValueError, IdentityError):
        return DEFAULT_TRUST_DOMAIN


@dataclass(frozen=True)
class _CaOptions:
    """The validated threshold-CA settings (issue 4)."""

    bootstrap_expect: int | None
    bootstrap_token_file: Path | None
    bootstrap_listen: tuple[str, int] | None
    threshold: int | None
    join_token: str | None
    cert_lifetime: float


def _check_ca_options(
    bootstrap_expect: int | None,
    bootstrap_token_file: str | Path | None,
    bootstrap_listen: str | None,
    threshold: int | None,
    join_token: str | None,
    cert_lifetime: str | float,
) -> _CaOptions:
    """Validate the threshold-CA flags (issue 4)."""
    from peermesh.ca.renewal import parse_duration
    from peermesh.ca.tokens import JoinToken, TokenError

    if bootstrap_expect is not None:
        if bootstrap_token_file is None:
            raise ConfigError(
                "--bootstrap-expect needs --bootstrap-token-file: the same secret file on every"
                " initial agent authenticates the bootstrap (make one with 'peermesh keygen"
                " bootstrap-token --out FILE')"
            )
        if bootstrap_expect < 2:
            raise ConfigError("--bootstrap-expect must be at least 2 (a threshold needs t ≥ 2)")
    if threshold is not None:
        if bootstrap_expect is None:
            raise ConfigError("--threshold only applies with --bootstrap-expect")
        if not 2 <= threshold <= bootstrap_expect:
            raise ConfigError(
                f"--threshold {threshold} must be between 2 and --bootstrap-expect"
                f" {bootstrap_expect}"
            )
    if bootstrap_token_file is not None and not Path(bootstrap_token_file).is_file():
        raise ConfigError(f"--bootstrap-token-file {bootstrap_token_file}: no such file")
    if join_token is not None:
        try:
            JoinToken.parse(join_token)
        except TokenError as exc:
            raise ConfigError(f"--join-token: {exc}") from None
    try:
        lifetime = (
            float(cert_lifetime)
            if isinstance(cert_lifetime, int | float)
            else parse_duration(cert_lifetime)
        )
    except ValueError as exc:
        raise ConfigError(f"--cert-lifetime: {exc}") from None
    if lifetime > 86400.0:
        raise ConfigError("--cert-lifetime is at most 24h (the signers' limit)")
    if lifetime < 60:
        raise ConfigError("--cert-lifetime must be at least 60s")
    return _CaOptions(
        bootstrap_expect=bootstrap_expect,
        bootstrap_token_file=Path(bootstrap_token_file) if bootstrap_token_file else None,
        bootstrap_listen=(
            parse_address(bootstrap_listen, "--bootstrap-listen") if bootstrap_listen else None
        ),
        threshold=threshold,
        join_token=join_token,
        cert_lifetime=lifetime,
    )
