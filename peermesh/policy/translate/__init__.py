"""Istio and Gateway API objects, as users already write them, translated to peermesh kinds.

Sans-IO: a raw document (a mapping from YAML) in, peermesh object documents and the list of
fields that cannot be honoured out. Nothing is dropped: a field peermesh cannot do as the
source API means it is listed with its path and why, and ``policy apply`` refuses the whole
input while any is listed. One module per source kind family: :mod:`.virtual_service`,
:mod:`.destination_rule`, :mod:`.security` (AuthorizationPolicy, PeerAuthentication),
:mod:`.http_route`; names and principals follow the rules in :mod:`.names`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from peermesh.policy.model import MESH_CONFIG
from peermesh.policy.translate.context import Tx, Unhonoured, Why
from peermesh.policy.translate.destination_rule import translate_destination_rule
from peermesh.policy.translate.http_route import translate_http_route
from peermesh.policy.translate.names import metadata_of, object_name
from peermesh.policy.translate.security import (
    translate_authorization_policy,
    translate_peer_authentication,
)
from peermesh.policy.translate.virtual_service import translate_virtual_service

ISTIO_NETWORKING = tuple(f"networking.istio.io/{v}" for v in ("v1", "v1beta1", "v1alpha3"))
ISTIO_SECURITY = tuple(f"security.istio.io/{v}" for v in ("v1", "v1beta1"))
GATEWAY_API = ("gateway.networking.k8s.io/v1",)

_Translator = Callable[[Tx, Mapping[str, Any], str, str, str], list[dict[str, Any]]]

#: (apiVersion, kind) → translator.
_TRANSLATORS: dict[tuple[str, str], _Translator] = {}
for _v in ISTIO_NETWORKING:
    _TRANSLATORS[(_v, "VirtualService")] = lambda tx, d, n, ns, td: translate_virtual_service(
        tx, d, n, ns
    )
    _TRANSLATORS[(_v, "DestinationRule")] = lambda tx, d, n, ns, td: translate_destination_rule(
        tx, d, n, ns
    )
for _v in ISTIO_SECURITY:
    _TRANSLATORS[(_v, "AuthorizationPolicy")] = translate_authorization_policy
    _TRANSLATORS[(_v, "PeerAuthentication")] = lambda tx, d, n, ns, td: (
        translate_peer_authentication(tx, d, n, ns)
    )
for _v in GATEWAY_API:
    _TRANSLATORS[(_v, "HTTPRoute")] = lambda tx, d, n, ns, td: translate_http_route(tx, d, n, ns)

#: Groups we recognise, so a version we do not translate is named as such.
_FOREIGN_GROUPS = ("networking.istio.io/", "security.istio.io/", "gateway.networking.k8s.io/")


def is_foreign(data: object) -> bool:
    """Whether a document belongs to Istio or the Gateway API (and so must be translated)."""
    if not isinstance(data, Mapping):
        return False
    version = data.get("apiVersion")
    return isinstance(version, str) and version.startswith(_FOREIGN_GROUPS)


@dataclass(frozen=True)
class Translation:
    """peermesh documents for one or more foreign objects, and what could not be honoured.

    ``origins`` maps each produced object key to the foreign objects it came from.
    """

    objects: tuple[dict[str, Any], ...]
    problems: tuple[Unhonoured, ...]
    origins: dict[str, tuple[str, ...]] = field(default_factory=dict)


def translate(data: Mapping[str, Any], *, trust_domain: str) -> Translation:
    """Translate one foreign document (see :func:`is_foreign`)."""
    version = str(data.get("apiVersion"))
    kind = str(data.get("kind"))
    name, namespace = metadata_of(data)
    tx = Tx(kind, object_name(name, namespace) if name else "?")
    translator = _TRANSLATORS.get((version, kind))
    if translator is None:
        known = sorted({k for v, k in _TRANSLATORS if v.split("/")[0] == version.split("/")[0]})
        tx.refuse(
            "kind",
            f"{version} {kind} cannot be translated",
            hint=f"translated from this group: {', '.join(known)}" if known else None,
        )
        return Translation((), tuple(tx.problems))
    if not name:
        tx.refuse("metadata.name", "required field is missing", Why.INVALID)
        return Translation((), tuple(tx.problems))
    objects = translator(tx, data, name, namespace, trust_domain)
    origin = f"{kind}/{namespace}/{name}"
    return Translation(
        tuple(objects), tuple(tx.problems), {f"{o['kind']}/{o['name']}": (origin,) for o in objects}
    )


def merge_fragments(fragments: list[dict[str, Any]]) -> dict[str, Any]:
    mode: str | None = None
    services: dict[str, str] = {}
    for fragment in fragments:
        mtls = fragment["spec"]["mtls"]
        mode = mtls.get("mode", mode)
        services.update(mtls.get("services", {}))
    mtls_out: dict[str, Any] = {}
    if mode is not None:
        mtls_out["mode"] = mode
    if services:
        mtls_out["services"] = dict(sorted(services.items()))
    return {**fragments[0], "spec": {"mtls": mtls_out}}


def translate_all(documents: Iterable[Mapping[str, Any]], *, trust_domain: str) -> Translation:
    """Translate many foreign documents; PeerAuthentications merge into one MeshConfig."""
    objects: list[dict[str, Any]] = []
    problems: list[Unhonoured] = []
    origins: dict[str, tuple[str, ...]] = {}
    mesh: list[dict[str, Any]] = []
    for data in documents:
        result = translate(data, trust_domain=trust_domain)
        problems.extend(result.problems)
        for obj in result.objects:
            (mesh if obj["kind"] == MESH_CONFIG else objects).append(obj)
        for key, origin in result.origins.items():
            origins[key] = origins.get(key, ()) + origin
    if mesh:
        objects.append(merge_fragments(mesh))
    return Translation(tuple(objects), tuple(problems), origins)


def merge_mesh_config(
    current: Mapping[str, Any] | None, fragment: Mapping[str, Any]
) -> dict[str, Any]:
    """The live MeshConfig with a translated ``mtls`` fragment applied on top.

    PeerAuthentication only speaks about mTLS, so every other MeshConfig field (admins,
    tokens, revocations) is kept as it is rather than reset by the translation.
    """
    spec = dict(current.get("spec", {})) if current else {}
    mtls = dict(spec.get("mtls", {}))
    new = fragment["spec"]["mtls"]
    if "mode" in new:
        mtls["mode"] = new["mode"]
    if "services" in new:
        mtls["services"] = {**mtls.get("services", {}), **new["services"]}
    spec["mtls"] = mtls
    return {"kind": fragment["kind"], "name": fragment["name"], "spec": spec}


__all__ = [
    "GATEWAY_API",
    "ISTIO_NETWORKING",
    "ISTIO_SECURITY",
    "Translation",
    "Unhonoured",
    "Why",
    "is_foreign",
    "merge_fragments",
    "merge_mesh_config",
    "translate",
    "translate_all",
]
