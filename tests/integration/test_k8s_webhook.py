"""The admission webhook served over real TLS, answering AdmissionReview v1 requests."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import subprocess
from pathlib import Path

import httpx
import trio
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from peermesh.k8s.inject import InjectConfig
from peermesh.k8s.webhook import Webhook, server_context
from tests.support.k8skit import admission_review, apply_patch, pod, validate
from tests.support.meshkit import python


def serving_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed serving certificate for 127.0.0.1, as caBundle would vouch for."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peermesh-webhook.peermesh.svc")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("peermesh-webhook.peermesh.svc"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


async def test_webhook_over_tls_injects_labelled_pods_only(tmp_path):
    cert, key = serving_cert(tmp_path)
    hook = Webhook(InjectConfig(image="peermesh:test"), server_context(cert, key))
    trust = ssl.create_default_context(cafile=str(cert))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hook.serve, "127.0.0.1", 0)
        base = f"https://127.0.0.1:{port}"
        async with httpx.AsyncClient(verify=trust, timeout=10) as client:

            async def post(path: str, obj: dict) -> dict:
                r = await client.post(base + path, json=admission_review(obj))
                assert r.status_code == 200, r.text
                return r.json()["response"]

            original = pod()
            response = await post("/mutate/namespace", original)
            assert response["allowed"] and response["patchType"] == "JSONPatch"
            injected = apply_patch(original, json.loads(base64.b64decode(response["patch"])))
            validate(injected)
            # Idempotent: the injected pod gets no second agent.
            again = await post("/mutate/namespace", injected)
            assert "patch" not in again
            # Unlabelled pods reaching the pod-level webhook are left alone.
            assert "patch" not in await post("/mutate/pod", pod())
            # Hostile input is refused with 400 and counted; the server keeps serving.
            bad = await client.post(base + "/mutate/pod", content=b"{not json")
            assert bad.status_code == 400
            huge = await client.post(base + "/mutate/pod", content=b"x" * (4 << 20))
            assert huge.status_code == 413
            health = (await client.get(base + "/healthz")).json()
            assert health["injected"] == 1 and health["refused"] == 2
        # Only TLS 1.3 is spoken.
        old = ssl.create_default_context(cafile=str(cert))
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        async with httpx.AsyncClient(verify=old, timeout=10) as client:
            try:
                await client.get(base + "/healthz")
                raise AssertionError("TLS 1.2 was accepted")
            except httpx.ConnectError:
                pass
        nursery.cancel_scope.cancel()


def test_inject_cli_rewrites_a_deployment(tmp_path):
    deployment = Path(__file__).resolve().parents[2] / "deploy/kubernetes/sample/reviews.yaml"
    out = subprocess.run(
        python("-m", "peermesh", "inject", "-f", str(deployment), "--image", "peermesh:test"),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    for doc in docs:
        validate(doc)
    (workload,) = [d for d in docs if d["kind"] == "Deployment"]
    names = [c["name"] for c in workload["spec"]["template"]["spec"]["initContainers"]]
    assert names == ["peermesh-capture", "peermesh-agent"]
    again = tmp_path / "again.yaml"
    again.write_text(out.stdout)
    twice = subprocess.run(
        python("-m", "peermesh", "inject", "-f", str(again), "--image", "peermesh:test"),
        capture_output=True,
        text=True,
    )
    assert twice.stdout == out.stdout  # idempotent
