"""How Kubernetes names become peermesh names, one documented rule each.

- **Objects.** ``metadata.name`` plus ``metadata.namespace`` become ``<name>.<namespace>``
  (namespace ``default`` when absent). Kubernetes namespaces are DNS labels without dots,
  so the last dot always separates the two and two sources never collide.
- **Routes.** A source naming several services becomes one Route per service, named
  ``<object>.<service>``; naming one, the Route is just ``<object>``.
- **Services.** peermesh services are flat (no namespaces). A host ``reviews``,
  ``reviews.<ns>``, ``reviews.<ns>.svc`` or ``reviews.<ns>.svc.cluster.local`` names the
  service ``reviews``; any other host (external names, wildcards) is refused.
- **Principals.** Istio's ``<trust-domain>/ns/<ns>/sa/<account>`` becomes
  ``spiffe://<mesh trust domain>/svc/<account>``: a workload's Kubernetes service account
  is its peermesh service name (``peermesh inject`` sets both from the same label), and the
  trust domain is the mesh's, whatever Istio's was. ``*`` stays ``*``; a trailing ``*`` in
  the account (``.../sa/admin-*``) stays a prefix pattern. Patterns over the namespace
  only (``.../ns/foo/*``) are refused: peermesh identities carry no namespace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from peermesh.policy.model import ROUTE
from peermesh.policy.translate.context import Tx, Why

DEFAULT_NAMESPACE = "default"
#: Istio's root namespace: policy there applies to the whole mesh.
ROOT_NAMESPACE = "istio-system"

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SERVICE_HOST = re.compile(rf"(?P<svc>{_LABEL})(\.{_LABEL}(\.svc(\.cluster\.local)?)?)?")
_PRINCIPAL = re.compile(r"(?P<td>[^/]+)/ns/(?P<ns>[^/]+)/sa/(?P<sa>[^/]+)")


def metadata_of(data: Mapping[str, Any]) -> tuple[str, str]:
    """``(name, namespace)`` from a Kubernetes object ('' for a missing name)."""
    meta = data.get("metadata")
    if not isinstance(meta, Mapping):
        return "", DEFAULT_NAMESPACE
    name = meta.get("name")
    namespace = meta.get("namespace")
    return (
        name if isinstance(name, str) else "",
        namespace if isinstance(namespace, str) and namespace else DEFAULT_NAMESPACE,
    )


def object_name(name: str, namespace: str) -> str:
    """The peermesh name of the object ``namespace/name``."""
    return f"{name}.{namespace}"


def routes_for(
    services: list[str | None], name: str, namespace: str, rules: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One Route document per service (a refused one, None, is skipped), all with ``rules``."""
    base = object_name(name, namespace)
    return [
        {
            "kind": ROUTE,
            "name": base if len(services) == 1 else f"{base}.{service}",
            "spec": {"host": service, "http": rules},
        }
        for service in services
        if service is not None
    ]


def service_of_host(tx: Tx, host: object, path: str) -> str | None:
    """The peermesh service a Kubernetes host names, or None (refused)."""
    if not isinstance(host, str):
        tx.refuse(path, f"expected a host name, got {type(host).__name__}", Why.INVALID)
        return None
    match = _SERVICE_HOST.fullmatch(host)
    if match is None:
        tx.refuse(
            path,
            f"host {host!r} is not a mesh service",
            hint="peermesh routes services by name: 'reviews' or 'reviews.<ns>.svc.cluster.local'",
        )
        return None
    return match.group("svc")


def principal(tx: Tx, value: object, path: str, trust_domain: str) -> str | None:
    """The peermesh principal pattern for an Istio principal, or None (refused)."""
    if not isinstance(value, str) or not value:
        tx.refuse(path, f"expected a principal string, got {value!r}", Why.INVALID)
        return None
    if value == "*":
        return value
    if value.startswith("spiffe://"):
        return value  # already a SPIFFE ID (or pattern): peermesh validates it as is
    match = _PRINCIPAL.fullmatch(value)
    if match is None or "*" in match.group("td") or "*" in match.group("ns"):
        tx.refuse(
            path,
            f"principal {value!r} cannot be mapped to a peermesh identity",
            hint="write '<trust-domain>/ns/<ns>/sa/<account>'; peermesh identities carry no "
            "namespace, so patterns over the namespace cannot be expressed",
        )
        return None
    return f"spiffe://{trust_domain}/svc/{match.group('sa')}"
