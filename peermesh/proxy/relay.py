"""Relay one exchange between a downstream (who asked) and an upstream (who answers).

Both bodies stream concurrently chunk by chunk, so memory stays bounded by flow-control
windows whatever the body size. Errors are sorted by side: an upstream failure before
the response starts becomes the sidecar's own 502; after that, or when the downstream
goes away, the other side is reset so nothing keeps running for nobody.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from peermesh.http.exchange import BodySource, ResponseWriter, UpstreamCall
from peermesh.http.h1client import AppUnavailable, UpstreamBroken
from peermesh.http.h1server import ClientGone
from peermesh.http.h2session import StreamReset
from peermesh.proxy import errors

UPSTREAM_ERRORS = (StreamReset, AppUnavailable, UpstreamBroken)
DOWNSTREAM_ERRORS = (StreamReset, ClientGone)


class DownstreamGone(Exception):
    """The client of this exchange went away; nothing is left to answer."""


@dataclass
class RelayResult:
    """What happened, for metrics and logs."""

    status: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    error_code: str = ""


async def relay(
    body: BodySource,
    call: UpstreamCall,
    writer: ResponseWriter,
    *,
    request_has_body: bool,
    response_complete: bool = False,
) -> RelayResult:
    """Stream the request body up and the response down; returns the outcome."""
    result = RelayResult()
    finished = False
    try:
        async with trio.open_nursery() as nursery:
            if request_has_body:
                nursery.start_soon(_pump_request, body, call, result)
            try:
                status, headers = await call.receive_response()
            except UPSTREAM_ERRORS as exc:
                nursery.cancel_scope.cancel()
                err = _upstream_error(exc)
                result.status, result.error_code = err.status, err.code
                await _send_error_downstream(writer, err)
                finished = True
                return result
            result.status = status
            ended = response_complete or _response_already_complete(call)
            try:
                await writer.send_head(status, headers, end=ended)
            except DOWNSTREAM_ERRORS as exc:
                raise DownstreamGone(str(exc)) from exc
            if not ended:
                await _pump_response(call, writer, result)
            finished = True
            # The upstream answered in full; an unread request body is no longer wanted.
            nursery.cancel_scope.cancel()
    finally:
        if not finished:
            call.abort()
    return result


def _response_already_complete(call: UpstreamCall) -> bool:
    stream = getattr(call, "stream", None)
    if stream is None:
        return False
    return bool(stream.headers_only)


async def _pump_request(body: BodySource, call: UpstreamCall, result: RelayResult) -> None:
    while True:
        try:
            chunk = await body.receive_data()
        except DOWNSTREAM_ERRORS as exc:
            call.abort()
            raise DownstreamGone(f"client went away while sending the body: {exc}") from exc
        try:
            if not chunk:
                await call.finish(body.trailers)
                return
            result.request_bytes += len(chunk)
            await call.send_data(chunk)
        except UPSTREAM_ERRORS:
            # The response side sees the same failure and reports it; stop sending.
            return


async def _pump_response(call: UpstreamCall, writer: ResponseWriter, result: RelayResult) -> None:
    while True:
        try:
            chunk = await call.receive_data()
        except UPSTREAM_ERRORS as exc:
            result.error_code = "upstream-reset"
            writer.abort()
            raise DownstreamGone(f"upstream broke mid-response: {exc}") from exc
        try:
            if not chunk:
                await writer.finish(call.trailers)
                return
            result.response_bytes += len(chunk)
            await writer.send_data(chunk)
        except DOWNSTREAM_ERRORS as exc:
            raise DownstreamGone(f"client went away mid-response: {exc}") from exc


def _upstream_error(exc: BaseException) -> errors.ProxyError:
    if isinstance(exc, AppUnavailable):
        return errors.app_unavailable(str(exc))
    return errors.upstream_reset(str(exc))


async def _send_error_downstream(writer: ResponseWriter, err: errors.ProxyError) -> None:
    try:
        await errors.send_error(writer, err)
    except DOWNSTREAM_ERRORS as exc:
        raise DownstreamGone(str(exc)) from exc
