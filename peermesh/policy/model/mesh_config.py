"""``MeshConfig``: mesh-wide mTLS, inbound default, certificates, revocations, admins."""

from __future__ import annotations

from dataclasses import dataclass, field

from peermesh.policy.model.common import JSON, Pairs, _drop_empty, format_duration
from peermesh.policy.model.join_token import JoinTokenEntry

MTLS_STRICT = "STRICT"
MTLS_PERMISSIVE = "PERMISSIVE"
MTLS_MODES: tuple[str, ...] = (MTLS_STRICT, MTLS_PERMISSIVE)
INBOUND_ALLOW_AUTHENTICATED = "ALLOW_AUTHENTICATED"
INBOUND_DENY = "DENY"
INBOUND_POLICIES: tuple[str, ...] = (INBOUND_ALLOW_AUTHENTICATED, INBOUND_DENY)


@dataclass(frozen=True)
class MTLSSettings:
    mode: str = MTLS_STRICT
    #: Per-service overrides (service -> mode), e.g. PERMISSIVE while migrating one service.
    services: Pairs = ()

    def to_dict(self) -> JSON:
        return _drop_empty({"mode": self.mode, "services": dict(self.services)})

    def mode_for(self, service: str) -> str:
        return dict(self.services).get(service, self.mode)


@dataclass(frozen=True)
class RevokedIdentity:
    identity: str
    reason: str | None = None

    def to_dict(self) -> JSON:
        return _drop_empty({"identity": self.identity, "reason": self.reason})


DEFAULT_CERTIFICATE_LIFETIME = 24 * 3600.0


@dataclass(frozen=True)
class TelemetrySettings:
    """Mesh-wide telemetry (Istio's Telemetry API); None: each agent's own flag decides."""

    #: Access logs on every agent (True), off everywhere (False).
    access_log: bool | None = None
    #: Percentage (0 to 100) of new traces sampled; a caller's decision is still honoured.
    random_sampling_percentage: float | None = None

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "accessLog": _drop_empty({"enabled": self.access_log}),
                "tracing": _drop_empty(
                    {"randomSamplingPercentage": self.random_sampling_percentage}
                ),
            }
        )


@dataclass(frozen=True)
class MeshConfigSpec:
    mtls: MTLSSettings = field(default_factory=MTLSSettings)
    default_inbound_policy: str = INBOUND_ALLOW_AUTHENTICATED
    certificate_lifetime: float = DEFAULT_CERTIFICATE_LIFETIME
    join_tokens: tuple[JoinTokenEntry, ...] = ()
    revoked_identities: tuple[RevokedIdentity, ...] = ()
    #: SPIFFE IDs of peers allowed to edit policy through the control API.
    admins: tuple[str, ...] = ()
    #: SPIFFE IDs besides the admins whose agents may read other agents' tap rows.
    tap_identities: tuple[str, ...] = ()
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)

    def to_dict(self) -> JSON:
        return _drop_empty(
            {
                "mtls": self.mtls.to_dict(),
                "defaultInboundPolicy": self.default_inbound_policy,
                "certificateLifetime": format_duration(self.certificate_lifetime),
                "joinTokens": [t.to_dict() for t in self.join_tokens],
                "revokedIdentities": [r.to_dict() for r in self.revoked_identities],
                "admins": list(self.admins),
                "tapIdentities": list(self.tap_identities),
                "telemetry": self.telemetry.to_dict(),
            }
        )


__all__ = [
    "DEFAULT_CERTIFICATE_LIFETIME",
    "INBOUND_ALLOW_AUTHENTICATED",
    "INBOUND_DENY",
    "INBOUND_POLICIES",
    "MTLS_MODES",
    "MTLS_PERMISSIVE",
    "MTLS_STRICT",
    "MTLSSettings",
    "MeshConfigSpec",
    "RevokedIdentity",
    "TelemetrySettings",
]
