"""Real HTTP clients (curl, httpx) through two sidecars with mTLS between them."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
import trio

from tests.support.meshkit import two_agents

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")

HOP_BY_HOP_REQUEST = {
    "Connection": "x-private, keep-alive",
    "X-Private": "must-not-leak",
    "Keep-Alive": "timeout=5",
    "Proxy-Authorization": "Basic c2VjcmV0",
    "X-Custom": "kept",
    "Cookie": "a=1; b=2",
}


async def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Run curl, return (status, response headers, body)."""
    result = await trio.run_process(
        ["curl", "-sS", "-D", "-", "--max-time", "20", *args], capture_stdout=True, check=True
    )
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def seen_headers(body: bytes) -> dict[str, str]:
    return json.loads(body)["headers"]


@pytest.mark.parametrize("mode", ["--http1.1", "--http2-prior-knowledge"])
async def test_curl_headers_and_hop_by_hop(tmp_path, mode):
    async with two_agents(tmp_path) as mesh:
        args = [mode, f"{mesh.outbound_url}/headers", "-H", "Host: orders"]
        for name, value in HOP_BY_HOP_REQUEST.items():
            if mode != "--http1.1" and name in ("Connection", "Keep-Alive", "X-Private"):
                continue  # curl refuses to send connection headers over h2
            args += ["-H", f"{name}: {value}"]
        status, _headers, body = await curl(*args)
    assert status == 200
    seen = seen_headers(body)
    assert seen["x-custom"] == "kept"
    assert seen["host"] == "orders"
    assert seen["cookie"] == "a=1; b=2"
    for name in ("x-private", "keep-alive", "proxy-authorization", "te", "transfer-encoding"):
        assert name not in seen, name
    assert "connection" not in seen or seen["connection"] in ("keep-alive", "close")
    assert seen["x-request-id"]
    assert "127.0.0.1" in seen["x-forwarded-for"]
    assert seen["x-forwarded-client-cert"].endswith("URI=spiffe://mesh.test/svc/frontend")


async def test_curl_absolute_form_proxy_and_chunked_upload(tmp_path):
    async with two_agents(tmp_path) as mesh:
        payload = tmp_path / "payload.bin"
        payload.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
        status, _, body = await curl(
            "--proxy",
            mesh.outbound_url,
            "http://orders/upload",
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            f"@{payload}",
        )
    assert status == 200
    import hashlib

    answer = json.loads(body)
    assert answer == {
        "size": 1 << 20,
        "sha256": hashlib.sha256(payload.read_bytes()).hexdigest(),
    }


@pytest.mark.parametrize("http2", [False, True])
async def test_httpx_echo_body_intact(tmp_path, http2):
    data = bytes(range(256)) * 1000
    async with two_agents(tmp_path) as mesh:
        async with httpx.AsyncClient(http1=not http2, http2=http2) as client:
            if http2:
                # httpx speaks h2 only over TLS; use prior-knowledge via a plain transport.
                transport = httpx.AsyncHTTPTransport(http1=False, http2=True)
                client = httpx.AsyncClient(transport=transport)
            r = await client.post(
                mesh.outbound_url + "/echo", content=data, headers={"host": "orders.mesh"}
            )
            await client.aclose()
        assert r.status_code == 200
        assert r.content == data
        assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert "x-peermesh-error" not in r.headers


async def test_keepalive_many_requests_one_connection(tmp_path):
    async with two_agents(tmp_path) as mesh:
        async with httpx.AsyncClient() as client:
            for i in range(20):
                r = await client.get(
                    f"{mesh.outbound_url}/status/{200 + i % 3}", headers={"host": "orders:80"}
                )
                assert r.status_code == 200 + i % 3
        assert mesh.client.pool.dials == 1


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) missing")
async def test_h2load_h1_counts_every_response_as_a_success(tmp_path):
    async with two_agents(tmp_path) as mesh:
        result = await trio.run_process(
            ["h2load", "--h1", "-n", "200", "-c", "4", "-H", ":authority: orders",
             mesh.outbound_url + "/"],
            capture_stdout=True, check=True,
        )  # fmt: skip
        missing = await trio.run_process(
            ["curl", "-sS", "-i", "--max-time", "20", "-H", "Host: nosuch",
             mesh.outbound_url + "/"],
            capture_stdout=True, check=True,
        )  # fmt: skip
    out = result.stdout.decode()
    assert "200 succeeded, 0 failed, 0 errored" in out, out
    assert "status codes: 200 2xx" in out, out
    assert missing.stdout.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), missing.stdout[:80]
