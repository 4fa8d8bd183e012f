"""Add the peermesh agent to a pod: pure data in, data out (``peermesh inject`` and the webhook).

What a pod gets, once (injection is idempotent: a pod that already has the agent is left
as it is):

- a capture init container running ``peermesh capture install`` (redirects the app's
  traffic through the agent; needs NET_ADMIN/NET_RAW for that one step only);
- the agent as a native sidecar: an ``initContainers`` entry with ``restartPolicy: Always``
  (Kubernetes 1.29+), so it starts before the app, stops after it and does not keep Jobs
  alive; its readiness probe asks the agent's ``/readyz`` on the loopback admin port;
- an ``emptyDir`` data directory, and the join token from a Secret as an environment
  variable (never in the arguments);
- the pod's ``app`` label as the mesh service and its ``version`` label as a mesh label.

Opt-in is by label, as with Istio: the namespace label ``peermesh-injection=enabled``, or
the pod label ``peermesh.io/inject: "true"``; ``peermesh.io/inject: "false"`` opts out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from peermesh.core.errors import PeermeshError

NAMESPACE_LABEL = "peermesh-injection"
NAMESPACE_ENABLED = "enabled"
POD_LABEL = "peermesh.io/inject"
PORT_ANNOTATION = "peermesh.io/service-port"
INJECTED_ANNOTATION = "peermesh.io/injected"
AGENT_CONTAINER = "peermesh-agent"
CAPTURE_CONTAINER = "peermesh-capture"
DATA_VOLUME = "peermesh-data"
DATA_DIR = "/var/lib/peermesh"
INBOUND_PORT = 15443
OUTBOUND_PORT = 15001
GOSSIP_PORT = 15946
ADMIN_PORT = 15000
AGENT_UID = 1337
EXCLUDE_PORTS_ANNOTATION = "peermesh.io/exclude-ports"
INBOUND_MODE_ANNOTATION = "peermesh.io/inbound-capture"
INBOUND_MODES = ("strict", "permissive", "off")
#: Kinds whose pod template ``peermesh inject -f`` rewrites (``spec.template``).
TEMPLATE_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


class InjectionError(PeermeshError, ValueError):
    """A pod that cannot get the agent as asked (no service name or port)."""

    default_status = 400
    default_code = "injection-refused"


@dataclass(frozen=True)
class InjectConfig:
    """What every injected agent gets; one per webhook or ``inject`` run."""

    image: str = "ghcr.io/peermesh/peermesh:latest"
    #: Headless Service of the committee, the seeds every agent joins through.
    seeds: str = "peermesh-committee.peermesh.svc.cluster.local"
    join_token_secret: str = "peermesh-join-token"
    capture: bool = True
    trust_domain: str = "mesh.local"


def wants_injection(
    pod_labels: Mapping[str, str], namespace_labels: Mapping[str, str] | None
) -> bool:
    """The opt-in rule: the pod label decides when set, else the namespace label."""
    pod = pod_labels.get(POD_LABEL)
    if pod is not None:
        return pod == "true"
    return (namespace_labels or {}).get(NAMESPACE_LABEL) == NAMESPACE_ENABLED


def is_injected(spec: Mapping[str, Any]) -> bool:
    return any(c.get("name") == AGENT_CONTAINER for c in spec.get("initContainers") or [])


def _service_port(metadata: Mapping[str, Any], spec: Mapping[str, Any]) -> int:
    annotated = (metadata.get("annotations") or {}).get(PORT_ANNOTATION)
    if annotated is not None:
        if not str(annotated).isdigit() or not 0 < int(annotated) < 65536:
            raise InjectionError(f"annotation {PORT_ANNOTATION}={annotated!r} is not a port")
        return int(annotated)
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("protocol", "TCP") == "TCP" and isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    raise InjectionError(
        "the pod declares no TCP containerPort for its service",
        hint=f"add a containerPort to the app container or the annotation {PORT_ANNOTATION}",
    )


def _agent(
    config: InjectConfig, service: str, port: int, labels: Mapping[str, str]
) -> dict[str, Any]:
    args = [
        "agent",
        "--name=$(POD_NAME)",
        f"--service={service}={port}",
        f"--data-dir={DATA_DIR}",
        f"--trust-domain={config.trust_domain}",
        f"--inbound=0.0.0.0:{INBOUND_PORT}",
        f"--outbound=127.0.0.1:{OUTBOUND_PORT}",
        f"--gossip=0.0.0.0:{GOSSIP_PORT}",
        "--advertise=$(POD_IP)",
        f"--join={config.seeds}:{INBOUND_PORT}",
        # Re-resolved periodically: pods that start later are joined too.
        f"--seeds=dns:{config.seeds}:{INBOUND_PORT}",
        "--no-mdns",  # mDNS does not cross nodes; seeds come from the headless Service
    ]
    args += [f"--label={key}={value}" for key, value in sorted(labels.items())]
    ready = (
        "import urllib.request;"
        f"urllib.request.urlopen('http://127.0.0.1:{ADMIN_PORT}/readyz',timeout=2)"
    )
    return {
        "name": AGENT_CONTAINER,
        "image": config.image,
        "args": args,
        "restartPolicy": "Always",
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {
                "name": "PEERMESH_JOIN_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": config.join_token_secret,
                        "key": "token",
                        "optional": True,
                    }
                },
            },
        ],
        "ports": [
            {"name": "peermesh-in", "containerPort": INBOUND_PORT, "protocol": "TCP"},
            {"name": "peermesh-gossip", "containerPort": GOSSIP_PORT, "protocol": "UDP"},
        ],
        # The admin API stays on loopback (it takes policy edits), so the probe runs
        # inside the container instead of kubelet dialling the pod IP.
        "readinessProbe": {
            "exec": {"command": ["python", "-c", ready]},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "exec": {"command": ["python", "-c", ready]},
            "periodSeconds": 2,
            "failureThreshold": 60,
        },
        "volumeMounts": [{"name": DATA_VOLUME, "mountPath": DATA_DIR}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _capture_args(metadata: Mapping[str, Any], port: int) -> list[str]:
    annotations = metadata.get("annotations") or {}
    mode = str(annotations.get(INBOUND_MODE_ANNOTATION, "off"))
    if mode not in INBOUND_MODES:
        raise InjectionError(
            f"annotation {INBOUND_MODE_ANNOTATION}={mode!r} is not one of {INBOUND_MODES}"
        )
    excluded = []
    for text in str(annotations.get(EXCLUDE_PORTS_ANNOTATION, "")).split(","):
        if not text.strip():
            continue
        if not text.strip().isdigit() or not 0 < int(text) < 65536:
            raise InjectionError(f"annotation {EXCLUDE_PORTS_ANNOTATION}: {text!r} is not a port")
        excluded.append(f"--exclude-port={int(text)}")
    return [
        "capture",
        "install",
        f"--app-port={port}",
        f"--agent-user={AGENT_UID}",  # the agent's own traffic is never captured
        f"--outbound-port={OUTBOUND_PORT}",
        f"--admin-port={ADMIN_PORT}",
        f"--inbound={mode}",
        *excluded,
    ]


def _capture(config: InjectConfig, args: list[str]) -> dict[str, Any]:
    return {
        "name": CAPTURE_CONTAINER,
        "image": config.image,
        "args": args,
        # nftables needs NET_ADMIN, and only this short-lived step gets it.
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
        },
    }


def inject_pod_spec(
    metadata: Mapping[str, Any], spec: Mapping[str, Any], config: InjectConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metadata, spec)`` of the pod with the agent added; unchanged copies if already there."""
    new_meta = copy.deepcopy(dict(metadata))
    new_spec = copy.deepcopy(dict(spec))
    if is_injected(spec):
        return new_meta, new_spec
    labels = new_meta.get("labels") or {}
    service = labels.get("app") or labels.get("app.kubernetes.io/name")
    if not service:
        raise InjectionError(
            "the pod has no 'app' label to name its mesh service",
            hint="label the pod template with app: <service> (and version: <v>)",
        )
    port = _service_port(new_meta, new_spec)
    mesh_labels = {"version": labels["version"]} if "version" in labels else {}
    injected = [_agent(config, service, port, mesh_labels)]
    if config.capture:
        injected.insert(0, _capture(config, _capture_args(new_meta, port)))
    new_spec["initContainers"] = injected + list(new_spec.get("initContainers") or [])
    volumes = list(new_spec.get("volumes") or [])
    new_spec["volumes"] = [*volumes, {"name": DATA_VOLUME, "emptyDir": {}}]
    annotations = dict(new_meta.get("annotations") or {})
    annotations[INJECTED_ANNOTATION] = "true"
    new_meta["annotations"] = annotations
    return new_meta, new_spec


def pod_patch(pod: Mapping[str, Any], config: InjectConfig) -> list[dict[str, Any]]:
    """RFC 6902 operations turning ``pod`` into the injected pod ([] if nothing changes)."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    new_meta, new_spec = inject_pod_spec(metadata, spec, config)
    ops: list[dict[str, Any]] = []
    if "metadata" not in pod:
        ops.append({"op": "add", "path": "/metadata", "value": {}})
    for key in ("initContainers", "volumes"):
        if new_spec.get(key) != spec.get(key):
            op = "replace" if key in spec else "add"
            ops.append({"op": op, "path": f"/spec/{key}", "value": new_spec[key]})
    if new_meta.get("annotations") != metadata.get("annotations"):
        op = "replace" if "annotations" in metadata else "add"
        ops.append({"op": op, "path": "/metadata/annotations", "value": new_meta["annotations"]})
    return ops


def inject_manifest(doc: Mapping[str, Any], config: InjectConfig) -> dict[str, Any]:
    """A Pod or a workload (Deployment, StatefulSet, ...) with the agent in its pods.

    ``peermesh inject`` is explicit, so opt-in labels are not required; an explicit
    ``peermesh.io/inject: "false"`` is still honoured. Other kinds pass through unchanged.
    """
    out = copy.deepcopy(dict(doc))
    kind = doc.get("kind")
    if kind == "Pod":
        holder: dict[str, Any] = out
    elif kind in TEMPLATE_KINDS:
        holder = out.setdefault("spec", {}).setdefault("template", {})
    elif kind == "CronJob":
        job = out.setdefault("spec", {}).setdefault("jobTemplate", {}).setdefault("spec", {})
        holder = job.setdefault("template", {})
    else:
        return out
    metadata = holder.get("metadata") or {}
    if (metadata.get("labels") or {}).get(POD_LABEL) == "false":
        return out
    holder["metadata"], holder["spec"] = inject_pod_spec(metadata, holder.get("spec") or {}, config)
    return out
