"""The loopback admin API against requests shaped exactly as a browser sends them.

A web page cannot read our answers, but it can make the browser *send* a simple request
(an ``<img>`` GET, a form or ``fetch(..., {mode: "no-cors"})`` POST with ``text/plain``) and,
after DNS rebinding, send anything under its own Host name. None of those may change state.
"""

from __future__ import annotations

import json

import httpx
import trio

from peermesh.agent import Agent
from peermesh.net.admin_guard import ADMIN_HEADERS
from tests.support.meshkit import gossip_mesh

NODES = {"node-1": "web"}
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

ROUTE = {
    "kind": "Route",
    "name": "r",
    "spec": {"host": "web", "http": [{"route": [{"destination": {"host": "web"}}]}]},
}


async def raw(agent: Agent, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (CRLF lines, no trailing blank line) as-is; the status, headers, body."""
    host, port = agent.addresses["admin"]
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        head = head.replace("{port}", str(port))
        length = f"Content-Length: {len(body)}\r\n" if body else ""
        await stream.send_all(
            (head + "\r\nConnection: close\r\n" + length + "\r\n").encode() + body
        )
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    top, _, payload = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, payload


def no_cors_grant(headers: dict[str, str]) -> bool:
    return not any(name.startswith("access-control-") for name in headers)


async def test_browser_shaped_requests_change_nothing(tmp_path) -> None:
    async with trio.open_nursery() as nursery:
        (agent,) = await gossip_mesh(tmp_path, nursery, NODES)
        before = agent.policy.digest()
        doc = json.dumps({"objects": [ROUTE]}).encode()

        # A cross-site form / no-cors fetch: simple POST, text/plain, the page's Origin.
        status, headers, body = await raw(
            agent,
            "POST /v1/ca/token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"User-Agent: {UA}\r\nContent-Type: text/plain;charset=UTF-8\r\n"
            "Origin: https://evil.example\r\nReferer: https://evil.example/\r\n"
            "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors",
            b'{"service": "attacker"}',
        )
        assert status == 403 and b"cross-origin" in body and no_cors_grant(headers)
        # The same without Origin (a browser that omits it) still lacks the header.
        status, _, body = await raw(
            agent,
            "PUT /v1/policy HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"User-Agent: {UA}\r\nContent-Type: text/plain",
            doc,
        )
        assert status == 403 and b"X-Peermesh-Request" in body
        # <img src="http://127.0.0.1:15000/v1/ca/refresh">: a GET never changes state.
        for path in ("/v1/ca/refresh", "/v1/ca/enroll", "/v1/ca/renew", "/v1/ca/token"):
            status, headers, _ = await raw(
                agent,
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{{port}}\r\nUser-Agent: {UA}\r\n"
                "Accept: image/avif,image/webp,*/*\r\nSec-Fetch-Dest: image\r\n"
                "Sec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: cross-site",
            )
            assert status in (405, 503), (path, status)
            assert no_cors_grant(headers)
        # DNS rebinding: evil.example now resolves to 127.0.0.1; the page is same-origin with
        # itself, so it can even add our header. Its Host gives it away.
        status, _, body = await raw(
            agent,
            "PUT /v1/policy HTTP/1.1\r\nHost: evil.example:{port}\r\n"
            f"User-Agent: {UA}\r\nContent-Type: application/json\r\n"
            "Origin: http://evil.example:{port}\r\nX-Peermesh-Request: 1",
            doc,
        )
        assert status == 421 and b"DNS-rebinding" in body
        status, _, _ = await raw(agent, "GET /v1/policy HTTP/1.1\r\nHost: evil.example:{port}")
        assert status == 421
        # The CORS preflight a page would need for the header gets no grant.
        status, headers, _ = await raw(
            agent,
            "OPTIONS /v1/policy HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Origin: https://evil.example\r\nAccess-Control-Request-Method: PUT\r\n"
            "Access-Control-Request-Headers: x-peermesh-request",
        )
        assert status == 403 and no_cors_grant(headers)
        status, headers, _ = await raw(
            agent, "OPTIONS /v1/policy HTTP/1.1\r\nHost: 127.0.0.1:{port}"
        )
        assert status == 405 and no_cors_grant(headers)
        assert agent.policy.digest() == before and agent.policy.get("Route", "r") is None

        # What the CLI and tools send is served: loopback or localhost Host, the header,
        # and the dashboard's own same-origin requests.
        host, port = agent.addresses["admin"]
        async with httpx.AsyncClient() as client:
            for name in (host, "localhost"):
                ok = await client.get(f"http://{host}:{port}/v1/status", headers={"host": name})
                assert ok.status_code == 200
            same_origin = {"origin": f"http://{host}:{port}", **ADMIN_HEADERS}
            r = await client.put(
                f"http://{host}:{port}/v1/policy", json={"objects": [ROUTE]}, headers=same_origin
            )
            assert r.status_code == 200, r.text
        assert agent.policy.get("Route", "r") is not None
        nursery.cancel_scope.cancel()
