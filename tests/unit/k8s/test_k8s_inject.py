"""Sidecar injection and the manifests under deploy/, checked against the Kubernetes schema."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from peermesh.k8s.admission import AdmissionStats, BadReview, Scope, review
from peermesh.k8s.inject import (
    AGENT_CONTAINER,
    CAPTURE_CONTAINER,
    InjectConfig,
    InjectionError,
    inject_manifest,
    pod_patch,
    wants_injection,
)
from tests.support.k8skit import admission_review, apply_patch, pod, validate

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy" / "kubernetes"
CONFIG = InjectConfig(image="peermesh:test", trust_domain="mesh.test")


def answer(obj: dict, scope: Scope, stats: AdmissionStats | None = None) -> dict:
    body = json.dumps(admission_review(obj)).encode()
    return json.loads(review(body, scope, CONFIG, stats))["response"]


def test_injected_pod_is_valid_and_has_every_part() -> None:
    original = pod()
    validate(original)
    injected = apply_patch(original, pod_patch(original, CONFIG))
    validate(injected)
    spec = injected["spec"]
    capture, agent = spec["initContainers"][:2]
    assert capture["name"] == CAPTURE_CONTAINER and capture["args"][:2] == ["capture", "install"]
    assert {"--app-port=9080", "--agent-user=1337", "--inbound=off"} <= set(capture["args"])
    assert capture["securityContext"]["capabilities"] == {"add": ["NET_ADMIN"], "drop": ["ALL"]}
    assert not any("securityContext" in c and "capabilities" in c["securityContext"]
                   and c["securityContext"]["capabilities"].get("add")
                   for c in spec["initContainers"][1:] + spec["containers"])  # fmt: skip
    assert agent["name"] == AGENT_CONTAINER
    assert agent["restartPolicy"] == "Always"  # a native sidecar
    assert "--service=reviews=9080" in agent["args"]
    assert "--label=version=v1" in agent["args"]
    assert "--join=peermesh-committee.peermesh.svc.cluster.local:15443" in agent["args"]
    assert "--seeds=dns:peermesh-committee.peermesh.svc.cluster.local:15443" in agent["args"]
    assert "/readyz" in " ".join(agent["readinessProbe"]["exec"]["command"])
    token = next(e for e in agent["env"] if e["name"] == "PEERMESH_JOIN_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "peermesh-join-token"
    assert not any(a.startswith("--join-token") for a in agent["args"])  # never in argv
    assert {"name": "peermesh-data", "emptyDir": {}} in spec["volumes"]
    assert spec["containers"] == original["spec"]["containers"]  # the app is untouched


def test_capture_annotations_set_mode_and_excluded_ports() -> None:
    original = pod()
    original["metadata"]["annotations"] = {
        "peermesh.io/inbound-capture": "strict",
        "peermesh.io/exclude-ports": "5432, 6379",
    }
    injected = apply_patch(original, pod_patch(original, CONFIG))
    validate(injected)
    args = injected["spec"]["initContainers"][0]["args"]
    assert {"--inbound=strict", "--exclude-port=5432", "--exclude-port=6379"} <= set(args)
    for bad in ({"peermesh.io/inbound-capture": "loud"}, {"peermesh.io/exclude-ports": "x,1"}):
        original["metadata"]["annotations"] = bad
        with pytest.raises(InjectionError):
            pod_patch(original, CONFIG)


def test_injection_is_idempotent() -> None:
    once = apply_patch(pod(), pod_patch(pod(), CONFIG))
    assert pod_patch(once, CONFIG) == []
    manifest = yaml.safe_load((DEPLOY / "sample" / "reviews.yaml").read_text().split("---")[2])
    twice = inject_manifest(inject_manifest(manifest, CONFIG), CONFIG)
    assert twice == inject_manifest(manifest, CONFIG)
    validate(twice)


def test_opt_in_by_namespace_or_pod_label_and_opt_out() -> None:
    assert wants_injection({}, {"peermesh-injection": "enabled"})
    assert not wants_injection({}, {"peermesh-injection": "disabled"})
    assert not wants_injection({}, None)
    assert wants_injection({"peermesh.io/inject": "true"}, None)
    assert not wants_injection({"peermesh.io/inject": "false"}, {"peermesh-injection": "enabled"})
    stats = AdmissionStats()
    # Reached through the pod-level webhook without the label: untouched.
    unlabeled = answer(pod(), Scope.POD, stats)
    assert unlabeled["allowed"] and "patch" not in unlabeled
    opted_out = answer(pod({"peermesh.io/inject": "false"}), Scope.NAMESPACE, stats)
    assert "patch" not in opted_out
    labeled = answer(pod({"peermesh.io/inject": "true"}), Scope.POD, stats)
    assert labeled["patchType"] == "JSONPatch"
    assert (stats.injected, stats.skipped) == (1, 2)


def test_review_patch_applies_to_a_valid_pod_and_uid_is_echoed() -> None:
    original = pod()
    request = admission_review(original)
    response = json.loads(review(json.dumps(request).encode(), Scope.NAMESPACE, CONFIG))
    assert response["apiVersion"] == "admission.k8s.io/v1"
    assert response["response"]["uid"] == request["request"]["uid"]
    ops = json.loads(base64.b64decode(response["response"]["patch"]))
    validate(apply_patch(original, ops))


def test_uninjectable_pods_are_admitted_with_a_warning_and_bad_reviews_refused() -> None:
    stats = AdmissionStats()
    portless = answer(pod(port=None), Scope.NAMESPACE, stats)
    assert portless["allowed"] and "patch" not in portless
    assert "containerPort" in portless["warnings"][0]
    assert stats.failed_open == 1
    for body in (b"not json", b"[]", json.dumps({"kind": "AdmissionReview"}).encode()):
        with pytest.raises(BadReview):
            review(body, Scope.POD, CONFIG, stats)
    assert stats.refused == 3
    with pytest.raises(InjectionError):
        inject_manifest({"kind": "Pod", "metadata": {}, "spec": {"containers": []}}, CONFIG)


def _manifests() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                out.append((f"{path.relative_to(DEPLOY)}#{i}", doc))
    return out


@pytest.mark.parametrize("name,doc", _manifests(), ids=[n for n, _ in _manifests()])
def test_every_manifest_is_valid_kubernetes(name: str, doc: dict) -> None:
    validate(doc)
    if doc["kind"] in ("Deployment", "StatefulSet") and doc["metadata"]["name"] == "reviews-v1":
        validate(inject_manifest(doc, CONFIG))


def test_kustomizations_list_files_that_exist() -> None:
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        data = yaml.safe_load(kustomization.read_text())
        for resource in data.get("resources", []):
            assert (kustomization.parent / resource).exists(), (kustomization, resource)
