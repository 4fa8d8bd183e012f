"""Agent configuration: flags, then ``PEERMESH_*`` environment, then a TOML file, then defaults.

Every setting is declared once, on a field of :class:`AgentConfig` or of one of its
sections (peermesh/config/sections.py); the command line, the environment names and
the TOML keys are derived from those declarations (peermesh/config/declare.py).
Everything is validated here, before any socket is opened, so a typo is a clear
message at start-up rather than a surprise under traffic.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peermesh.ca.settings import joined_gossip_key
from peermesh.config.declare import (
    ConfigError,
    Kind,
    Setting,
    choice_setting,
    declared,
    parse_section,
    setting,
)
from peermesh.config.sections import (
    AdminConfig,
    CaConfig,
    GossipConfig,
    GossipProfile,
    LimitsConfig,
    ProxyConfig,
    TelemetryConfig,
)
from peermesh.config.values import (
    ServiceSpec,
    check_name,
    optional_path,
    optional_text,
    parse_address,
    parse_labels,
)

DEFAULT_TRUST_DOMAIN = "mesh.local"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class AgentConfig:
    """Everything an agent needs to start: who it is, and one section per component."""

    name: str = setting(
        "--name", help="This node's name.", parse=lambda n: check_name(n, "--name"), required=True
    )
    service: ServiceSpec = setting(
        "--service",
        help="The local service: NAME=PORT[,proto=h1|h2c][,host=ADDR].",
        parse=ServiceSpec.parse,
        required=True,
    )
    data_dir: Path = setting(
        "--data-dir",
        help="Key, certificate, bundle, state (default: peermesh-data/NAME).",
        parse=optional_path,
    )
    trust_domain: str = setting(
        "--trust-domain",
        help="SPIFFE trust domain (default: the certificate's, else mesh.local).",
        parse=optional_text,
    )
    labels: dict[str, str] = setting(
        "--label",
        help="Service label KEY=VALUE advertised to the mesh (e.g. version=v2); repeatable.",
        parse=parse_labels,
        multiple=True,
        aliases=("labels",),
    )
    log_level: LogLevel = choice_setting("--log-level", LogLevel, "info", help="Log verbosity.")
    admin: AdminConfig = field(default_factory=AdminConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    ca: CaConfig = field(default_factory=CaConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)

    @classmethod
    def build(cls, **values: Any) -> AgentConfig:
        """Validate raw settings, keyed by flag name (``drain_timeout`` for ``--drain-timeout``).

        A missing key takes its declared default; an unknown one is a TypeError, as for
        any function call.
        """
        known = {name for item in SETTINGS.values() for name in item.names}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"AgentConfig.build() got unexpected settings: {', '.join(unknown)}")
        top = parse_section(cls, values)
        sections: dict[str, Any] = {
            name: section(**parse_section(section, values)) for name, section in _sections().items()
        }
        gossip: GossipConfig = sections["gossip"]
        ca: CaConfig = sections["ca"]
        ca.check()
        ca = sections["ca"] = ca.with_token_file()
        _check_join_token(ca, gossip)
        data_dir = top["data_dir"] or Path("peermesh-data") / top["name"]
        if (
            gossip.listen is not None
            and gossip.key_file is None
            and not gossip.insecure
            and not ca.carries_gossip_key
            # A token-joined agent restarted without its token: the mesh's keyring is here.
            and not joined_gossip_key(data_dir).is_file()
        ):
            raise ConfigError(
                "gossip needs the mesh gossip key: make one with 'peermesh keygen gossip --out"
                " FILE', give every agent --gossip-key-file FILE; or pass --insecure-gossip"
                " (local experiments only), or --gossip off (static --peer endpoints only)"
            )
        gossip.check()
        if gossip.listen is None and gossip.mdns:
            sections["gossip"] = dataclasses.replace(gossip, mdns=False)
        top["data_dir"] = data_dir
        top["trust_domain"] = top["trust_domain"] or trust_domain_from_data_dir(data_dir)
        return cls(**top, **sections)


def _check_join_token(ca: CaConfig, gossip: GossipConfig) -> None:
    """Flags that contradict a join token stop the agent before it starts."""
    if ca.join_token is None:
        return
    if not gossip.join:
        raise ConfigError(
            "--join-token needs --join HOST:PORT: the agent of the mesh that is asked for"
            " this agent's first certificate"
        )
    if ca.bootstrap_expect is not None or ca.bootstrap_token_file is not None:
        raise ConfigError(
            "--join-token excludes --bootstrap-expect and --bootstrap-token-file: an agent"
            " either joins an existing mesh or bootstraps a new one"
        )


def _sections() -> dict[str, type]:
    """The section fields of :class:`AgentConfig`: name to section dataclass."""
    found: dict[str, type] = {}
    for f in dataclasses.fields(AgentConfig):
        if isinstance(f.default_factory, type):
            found[f.name] = f.default_factory
    return found


def _all_settings() -> dict[str, Setting]:
    found = {item.key: item for _name, item in declared(AgentConfig)}
    for section in _sections().values():
        found.update({item.key: item for _name, item in declared(section)})
    return found


SETTINGS: dict[str, Setting] = _all_settings()
"""Every agent setting by key, in declaration order: what the CLI turns into options."""


def trust_domain_from_data_dir(data_dir: Path) -> str:
    """The trust domain of the certificate already in ``data_dir``, else the default."""
    from cryptography import x509

    from certs.spiffe import IdentityError, spiffe_id_from_certificate
    from peermesh.net.identity_files import CERT_FILE

    try:
        cert = x509.load_pem_x509_certificate((data_dir / CERT_FILE).read_bytes())
        return spiffe_id_from_certificate(cert).trust_domain
    except (OSError, ValueError, IdentityError):
        return DEFAULT_TRUST_DOMAIN


__all__ = [
    "DEFAULT_TRUST_DOMAIN",
    "SETTINGS",
    "AdminConfig",
    "AgentConfig",
    "CaConfig",
    "ConfigError",
    "GossipConfig",
    "GossipProfile",
    "Kind",
    "LimitsConfig",
    "LogLevel",
    "ProxyConfig",
    "ServiceSpec",
    "Setting",
    "TelemetryConfig",
    "check_name",
    "parse_address",
]
