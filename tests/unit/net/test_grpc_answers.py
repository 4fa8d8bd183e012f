"""The sidecar's own answers to gRPC callers: status mapping and grpc-message encoding."""

from __future__ import annotations

from peermesh.net import errors
from peermesh.net.errors import GrpcStatus
from peermesh.net.http.headers import RequestHead


def _head(content_type: bytes) -> RequestHead:
    return RequestHead(
        method=b"POST",
        scheme=b"http",
        authority=b"orders",
        path=b"/demo.Echo/Unary",
        headers=((b"content-type", content_type),),
    )


def test_grpc_requests_are_told_apart_by_content_type():
    assert errors.is_grpc(_head(b"application/grpc"))
    assert errors.is_grpc(_head(b"application/grpc+proto"))
    assert not errors.is_grpc(_head(b"application/json"))


def test_status_mapping_follows_envoy():
    assert errors.grpc_status_for(errors.no_route("x")) is GrpcStatus.UNIMPLEMENTED
    assert errors.grpc_status_for(errors.no_endpoints("x")) is GrpcStatus.UNAVAILABLE
    assert errors.grpc_status_for(errors.upstream_reset("x")) is GrpcStatus.UNAVAILABLE
    assert errors.grpc_status_for(errors.bad_request("x")) is GrpcStatus.INTERNAL
    timeout = errors.ProxyError(504, "timeout", "slow")
    assert errors.grpc_status_for(timeout) is GrpcStatus.DEADLINE_EXCEEDED
    assert errors.grpc_status_for(errors.ProxyError(403, "x", "")) is GrpcStatus.PERMISSION_DENIED
    assert errors.grpc_status_for(errors.ProxyError(429, "x", "")) is GrpcStatus.UNAVAILABLE
    assert errors.grpc_status_for(errors.ProxyError(418, "x", "")) is GrpcStatus.UNKNOWN


def test_grpc_message_is_percent_encoded():
    assert errors.grpc_message("plain text") == b"plain text"
    assert errors.grpc_message("100% é\n") == b"100%25 %C3%A9%0A"
