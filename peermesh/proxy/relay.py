"""Relay one exchange between a downstream (who asked) and an upstream (who answers).

Both bodies stream concurrently chunk by chunk, so memory stays bounded by flow-control
windows whatever the body size. Errors are sorted by side: an upstream failure before
the response starts becomes the sidecar's own 502; after that, or when the downstream
goes away, the other side is reset so nothing keeps running for nobody.
"""

from __future__ import annotations

from peermesh.net import errors
from peermesh.net.http.exchange import BodySource, ResponseWriter, UpstreamCall
from peermesh.net.http.h1client import AppUnavailable
from peermesh.proxy.attempt import (
    DOWNSTREAM_ERRORS,
    UPSTREAM_ERRORS,
    DownstreamGone,
    RelayResult,
    UpstreamAttempt,
)

__all__ = ["DOWNSTREAM_ERRORS", "UPSTREAM_ERRORS", "DownstreamGone", "RelayResult", "relay"]


async def relay(
    body: BodySource,
    call: UpstreamCall,
    writer: ResponseWriter,
    *,
    request_has_body: bool,
    response_complete: bool = False,
    grpc: bool = False,
) -> RelayResult:
    """Stream the request body up and the response down; returns the outcome."""
    async with UpstreamAttempt(call, body if request_has_body else None) as attempt:
        try:
            status, headers = await attempt.response()
        except UPSTREAM_ERRORS as exc:
            if attempt.body_error is not None:
                raise DownstreamGone(str(attempt.body_error)) from exc
            err = _upstream_error(exc)
            attempt.result.status, attempt.result.error_code = err.status, err.code
            try:
                await errors.send_error(writer, err, grpc=grpc)
            except DOWNSTREAM_ERRORS as send_exc:
                raise DownstreamGone(str(send_exc)) from send_exc
            return attempt.result
        stream = getattr(call, "stream", None)
        ended = response_complete or bool(stream is not None and stream.headers_only)
        return await attempt.commit(writer, status, headers, ended=ended)


def _upstream_error(exc: BaseException) -> errors.ProxyError:
    if isinstance(exc, AppUnavailable):
        return errors.app_unavailable(str(exc))
    return errors.upstream_reset(str(exc))
