"""Kubernetes shapes without a cluster: AdmissionReview requests as the API reference shows
them, RFC 6902 patches applied, and objects checked against the Kubernetes OpenAPI schema."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import kubernetes_validate

#: The Kubernetes version whose OpenAPI schema objects are validated against (native
#: sidecars, ``restartPolicy: Always`` on init containers, are on by default from 1.29).
K8S_VERSION = "1.30"


def validate(obj: dict[str, Any]) -> None:
    """Raise ``kubernetes_validate.ValidationError`` unless ``obj`` fits the schema (strict:
    unknown fields are errors too)."""
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply RFC 6902 ``add``/``replace``/``remove`` operations (JSON pointers, RFC 6901)."""
    out = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = out
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                if op["op"] == "replace" and last not in parent:
                    raise KeyError(f"replace of missing {op['path']}")
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return out


def pod(labels: dict[str, str] | None = None, *, port: int | None = 9080) -> dict[str, Any]:
    """A Pod as a Deployment's ReplicaSet creates it (no name yet, generateName set)."""
    container: dict[str, Any] = {"name": "reviews", "image": "example/reviews:1"}
    if port is not None:
        container["ports"] = [{"containerPort": port, "protocol": "TCP"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v1-5d8f7c9b4-",
            "namespace": "bookinfo",
            "labels": {"app": "reviews", "version": "v1", **(labels or {})},
        },
        "spec": {"serviceAccountName": "reviews", "containers": [container]},
    }


def admission_review(obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    """An AdmissionReview v1 request for a pod, in the API reference's shape."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": obj["metadata"].get("namespace", "default"),
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": str(uuid.uuid4()),
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
