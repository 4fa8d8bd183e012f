"""``MeshConfig``: mTLS modes, the inbound default, certificates, tokens, revocations, admins."""

from __future__ import annotations

from peermesh.policy.model import (
    DEFAULT_CERTIFICATE_LIFETIME,
    INBOUND_ALLOW_AUTHENTICATED,
    INBOUND_POLICIES,
    MTLS_MODES,
    MTLS_STRICT,
    MeshConfigSpec,
    MTLSSettings,
    Pairs,
    RevokedIdentity,
    TelemetrySettings,
)
from peermesh.policy.validate.common import _service, _spiffe_exact
from peermesh.policy.validate.join_token import _join_token
from peermesh.policy.validate.walker import (
    HOUR,
    MAX_LIST,
    _bool,
    _Ctx,
    _duration,
    _enum,
    _mapping,
    _number,
    _pairs,
    _str,
    _unique,
)


def _mtls_mode(ctx: _Ctx, value: object, path: str) -> str | None:
    return _enum(ctx, value, path, choices=MTLS_MODES)


def _mtls(ctx: _Ctx, value: object, path: str) -> MTLSSettings | None:
    f = _mapping(ctx, value, path, ("mode", "services"))
    if f is None:
        return None
    mode = f.get_or("mode", MTLS_STRICT, _mtls_mode)
    no_overrides: Pairs = ()
    services = f.get_or(
        "services",
        no_overrides,
        _pairs,
        key_check=_service,
        value_check=_mtls_mode,
        max_items=MAX_LIST,
    )
    if mode is None or services is None:
        return None
    return MTLSSettings(mode=mode, services=services)


def _revoked(ctx: _Ctx, value: object, path: str) -> RevokedIdentity | None:
    f = _mapping(ctx, value, path, ("identity", "reason"), ("identity",))
    if f is None:
        return None
    identity = f.get("identity", _spiffe_exact)
    reason = f.get("reason", _str, what="reason", max_len=1024)
    return None if identity is None else RevokedIdentity(identity=identity, reason=reason)


def _telemetry(ctx: _Ctx, value: object, path: str) -> TelemetrySettings | None:
    f = _mapping(ctx, value, path, ("accessLog", "tracing"))
    if f is None:
        return None
    access_log = None
    if "accessLog" in f:
        log_fields = _mapping(ctx, f.data["accessLog"], f.at("accessLog"), ("enabled",))
        if log_fields is not None:
            access_log = log_fields.get("enabled", _bool)
    sampling = None
    if "tracing" in f:
        tracing = _mapping(ctx, f.data["tracing"], f.at("tracing"), ("randomSamplingPercentage",))
        if tracing is not None:
            sampling = tracing.get("randomSamplingPercentage", _number, lo=0.0, hi=100.0)
    return TelemetrySettings(
        access_log=access_log,
        random_sampling_percentage=None if sampling is None else float(sampling),
    )


def _mesh_config_spec(ctx: _Ctx, value: object) -> MeshConfigSpec | None:
    allowed = (
        "mtls",
        "defaultInboundPolicy",
        "certificateLifetime",
        "joinTokens",
        "revokedIdentities",
        "admins",
        "tapIdentities",
        "telemetry",
    )
    f = _mapping(ctx, value, "spec", allowed)
    if f is None:
        return None
    mtls = f.get_or("mtls", MTLSSettings(), _mtls)
    inbound = f.get_or(
        "defaultInboundPolicy", INBOUND_ALLOW_AUTHENTICATED, _enum, choices=INBOUND_POLICIES
    )
    lifetime = f.get_or(
        "certificateLifetime", DEFAULT_CERTIFICATE_LIFETIME, _duration, lo=60.0, hi=90 * 24 * HOUR
    )
    tokens = f.many("joinTokens", _join_token)
    _unique(ctx, ((f"spec.joinTokens[{i}].id", t.id) for i, t in enumerate(tokens)), "token id")
    revoked = f.many("revokedIdentities", _revoked)
    _unique(
        ctx,
        ((f"spec.revokedIdentities[{i}].identity", r.identity) for i, r in enumerate(revoked)),
        "identity",
    )
    admins = f.many("admins", _spiffe_exact)
    _unique(ctx, ((f"spec.admins[{i}]", a) for i, a in enumerate(admins)), "admin")
    tappers = f.many("tapIdentities", _spiffe_exact)
    _unique(ctx, ((f"spec.tapIdentities[{i}]", a) for i, a in enumerate(tappers)), "identity")
    telemetry = f.get_or("telemetry", TelemetrySettings(), _telemetry)
    if mtls is None or inbound is None or lifetime is None or telemetry is None:
        return None
    return MeshConfigSpec(
        mtls=mtls,
        default_inbound_policy=inbound,
        certificate_lifetime=lifetime,
        join_tokens=tokens,
        revoked_identities=revoked,
        admins=admins,
        tap_identities=tappers,
        telemetry=telemetry,
    )
