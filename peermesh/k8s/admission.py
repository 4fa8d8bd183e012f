"""AdmissionReview v1 for pod creation: request bytes in, response bytes out (sans-IO).

The MutatingWebhookConfiguration decides which namespaces and pods are sent here with its
selectors; the path says which of its two webhooks sent it, and the pod's own label is
checked again here so a mis-set selector cannot inject an opted-out pod:

- ``/mutate/namespace``: the namespace has ``peermesh-injection=enabled``; inject unless
  the pod says ``peermesh.io/inject: "false"``;
- ``/mutate/pod``: inject only pods labelled ``peermesh.io/inject: "true"``.

A pod that cannot be injected (no ``app`` label, no port) is admitted unchanged with a
warning rather than refused: a broken mesh must not stop deployments (Istio's webhook
fails open the same way with ``failurePolicy: Ignore`` in its docs' examples).
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from peermesh.core.errors import PeermeshError
from peermesh.k8s.inject import (
    NAMESPACE_ENABLED,
    NAMESPACE_LABEL,
    POD_LABEL,
    InjectConfig,
    InjectionError,
    pod_patch,
    wants_injection,
)

#: The API server sends at most a few MiB; anything bigger is not a pod review.
MAX_REVIEW_BYTES = 3 << 20
API_VERSION = "admission.k8s.io/v1"


class Scope(enum.Enum):
    """Which opt-in sent the request (one webhook each)."""

    NAMESPACE = "/mutate/namespace"
    POD = "/mutate/pod"


class BadReview(PeermeshError, ValueError):
    default_status = 400
    default_code = "bad-admission-review"


@dataclass
class AdmissionStats:
    """Counters for ``/metrics``-style reporting and tests."""

    injected: int = 0
    skipped: int = 0
    failed_open: int = 0
    refused: int = 0


def _decode(body: bytes) -> Mapping[str, Any]:
    if len(body) > MAX_REVIEW_BYTES:
        raise BadReview(f"review is {len(body)} bytes, more than {MAX_REVIEW_BYTES}")
    try:
        review = json.loads(body)
    except (ValueError, RecursionError):
        raise BadReview("body is not JSON") from None
    if not isinstance(review, Mapping) or review.get("kind") != "AdmissionReview":
        raise BadReview("body is not an AdmissionReview")
    if review.get("apiVersion") != API_VERSION:
        raise BadReview(f"only {API_VERSION} AdmissionReviews are served")
    request = review.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str):
        raise BadReview("request.uid is missing")
    return request


def review(
    body: bytes, scope: Scope, config: InjectConfig, stats: AdmissionStats | None = None
) -> bytes:
    """The AdmissionReview answering ``body``; raises :class:`BadReview` for non-reviews."""
    stats = stats if stats is not None else AdmissionStats()
    try:
        request = _decode(body)
    except BadReview:
        stats.refused += 1
        raise
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    pod = request.get("object")
    kind = request.get("kind") or {}
    if (
        request.get("operation") == "CREATE"
        and isinstance(kind, Mapping)
        and kind.get("kind") == "Pod"
        and isinstance(pod, Mapping)
    ):
        labels = (pod.get("metadata") or {}).get("labels") or {}
        namespace = {NAMESPACE_LABEL: NAMESPACE_ENABLED} if scope is Scope.NAMESPACE else None
        if labels.get(POD_LABEL) is None and scope is Scope.POD:
            namespace = None
        if wants_injection(labels, namespace):
            try:
                ops = pod_patch(pod, config)
            except InjectionError as exc:
                stats.failed_open += 1
                response["warnings"] = [f"peermesh: not injected: {exc}"]
            else:
                if ops:
                    stats.injected += 1
                    response["patchType"] = "JSONPatch"
                    response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
                else:
                    stats.skipped += 1
        else:
            stats.skipped += 1
    else:
        stats.skipped += 1
    answer = {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
    return json.dumps(answer).encode()
