"""gRPC end to end through two sidecars: grpcio as client and as the h2c app."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import trio

from tests.support.meshkit import two_agents

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
