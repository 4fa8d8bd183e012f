"""gRPC end to end through two sidecars: grpcio as client and as the h2c app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import httpx
import trio

from peermesh.agent import Agent
from tests.support.meshkit import eventually, two_agents

SERVICE = "demo.Echo"


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_trailing_metadata((("x-handled-by", "orders"),))
    if request == b"deny":
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "not for you")
    return b"echo:" + request


def _server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    count = int(request)
    for i in range(count):
        yield f"item-{i}".encode()
    context.set_trailing_metadata((("x-items", str(count)),))


def _bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for request in requests:
        yield request.upper()


def start_grpc_server() -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


async def test_grpc_unary_streaming_and_status(tmp_path):
    server, port = start_grpc_server()
    try:
        async with two_agents(tmp_path, app_port=port, proto="h2c") as mesh:
            host, out_port = mesh.outbound

            def client_calls() -> dict[str, object]:
                options = [("grpc.default_authority", "orders"), ("grpc.enable_http_proxy", 0)]
                with grpc.insecure_channel(f"{host}:{out_port}", options=options) as channel:
                    unary = channel.unary_unary(f"/{SERVICE}/Unary")
                    reply, call = unary.with_call(b"hello", timeout=10)
                    trailers = dict(call.trailing_metadata())
                    try:
                        unary(b"deny", timeout=10)
                        denied = None
                    except grpc.RpcError as exc:
                        denied = (exc.code(), exc.details())
                    stream_call = channel.unary_stream(f"/{SERVICE}/ServerStream")(
                        b"50", timeout=10
                    )
                    items = list(stream_call)
                    stream_trailers = dict(stream_call.trailing_metadata())
                    bidi = channel.stream_stream(f"/{SERVICE}/Bidi")
                    upper = list(bidi(iter([b"a", b"bb", b"ccc"] * 20), timeout=10))
                return {
                    "reply": reply,
                    "trailers": trailers,
                    "denied": denied,
                    "items": items,
                    "stream_trailers": stream_trailers,
                    "upper": upper,
                }

            result = await trio.to_thread.run_sync(client_calls)
    finally:
        server.stop(None)
    assert result["reply"] == b"echo:hello"
    assert result["trailers"]["x-handled-by"] == "orders"
    assert result["denied"] == (grpc.StatusCode.PERMISSION_DENIED, "not for you")
    assert result["items"] == [f"item-{i}".encode() for i in range(50)]
    assert result["stream_trailers"]["x-items"] == "50"
    assert result["upper"] == [b"A", b"BB", b"CCC"] * 20


def _slow(request: bytes, context: grpc.ServicerContext) -> bytes:
    time.sleep(float(request))
    return b"late"


def start_slow_grpc_server() -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Slow": grpc.unary_unary_rpc_method_handler(_slow),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _code_of(target: str, authority: str, method: str, request: bytes, timeout: float) -> object:
    """The status code a grpcio call through the outbound sidecar ends with."""
    options = [("grpc.default_authority", authority), ("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(target, options=options) as channel:
        try:
            channel.unary_unary(f"/{SERVICE}/{method}")(request, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def apply(agent: Agent, *objects: dict) -> None:
    host, port = agent.addresses["admin"]
    async with httpx.AsyncClient() as c:
        r = await c.put(
            f"http://{host}:{port}/v1/policy",
            json={"objects": list(objects)},
            headers={"X-Peermesh-Request": "1"},
        )
    assert r.status_code == 200, r.text


async def test_grpc_status_codes_of_the_sidecars_own_answers(tmp_path):
    server, port = start_slow_grpc_server()
    try:
        async with two_agents(tmp_path, app_port=port, proto="h2c") as mesh:
            host, out_port = mesh.outbound
            target = f"{host}:{out_port}"

            async def code(
                method: str, request: bytes, timeout: float = 10, authority: str = "orders"
            ) -> object:
                return await trio.to_thread.run_sync(
                    _code_of, target, authority, method, request, timeout
                )

            results: dict[str, object] = {}
            # Client deadline shorter than the app: grpc-timeout is honoured by the sidecar.
            results["deadline"] = await code("Slow", b"3", timeout=0.5)
            results["no-route"] = await code("Unary", b"x", authority="nosuch")
            await apply(
                mesh.client,
                {
                    "kind": "Route",
                    "name": "orders",
                    "spec": {
                        "host": "orders",
                        "http": [
                            {"route": [{"destination": {"host": "orders"}}], "timeout": "300ms"}
                        ],
                    },
                },
            )
            await eventually(lambda: mesh.client.policy.get("Route", "orders"))
            results["sidecar-timeout"] = await code("Slow", b"3")
            await apply(
                mesh.client,
                {
                    "kind": "TrafficPolicy",
                    "name": "orders",
                    "spec": {"host": "orders", "connectionPool": {"http": {"http2MaxRequests": 1}}},
                },
            )
            await eventually(lambda: mesh.client.policy.get("TrafficPolicy", "orders"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(code, "Slow", b"0.25")
                await trio.sleep(0.1)
                results["overflow"] = await code("Unary", b"x")
            await apply(
                mesh.server,
                {
                    "kind": "AuthorizationPolicy",
                    "name": "orders-deny-all",
                    "spec": {"service": "orders", "action": "DENY", "rules": [{}]},
                },
            )
            await eventually(
                lambda: mesh.server.policy.get("AuthorizationPolicy", "orders-deny-all")
            )
            results["denied"] = await code("Unary", b"x")
    finally:
        server.stop(None)
    assert results == {
        "deadline": grpc.StatusCode.DEADLINE_EXCEEDED,
        "no-route": grpc.StatusCode.UNIMPLEMENTED,
        "sidecar-timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
        "overflow": grpc.StatusCode.UNAVAILABLE,
        "denied": grpc.StatusCode.PERMISSION_DENIED,
    }


async def test_grpc_rate_limited_call_is_unavailable(tmp_path):
    server, port = start_slow_grpc_server()
    try:
        async with two_agents(tmp_path, app_port=port, proto="h2c") as mesh:
            host, out_port = mesh.outbound
            limit = {
                "kind": "TrafficPolicy",
                "name": "orders",
                "spec": {
                    "host": "orders",
                    "rateLimit": {"maxTokens": 2, "tokensPerFill": 1, "fillInterval": "60s"},
                },
            }
            await apply(mesh.server, limit)
            codes = [
                await trio.to_thread.run_sync(
                    _code_of, f"{host}:{out_port}", "orders", "Unary", b"x", 10
                )
                for _ in range(4)
            ]
    finally:
        server.stop(None)
    assert codes == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.UNAVAILABLE] * 2
