"""The mutating admission webhook's trio shell: HTTPS in, :func:`admission.review` out.

The API server calls it over TLS with the certificate the MutatingWebhookConfiguration's
``caBundle`` vouches for (``deploy/kubernetes/webhook``). One bad request never ends the
server: a malformed review is answered 400 and counted, a broken connection is dropped.
"""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path

import trio

from peermesh.k8s.admission import MAX_REVIEW_BYTES, AdmissionStats, BadReview, Scope, review
from peermesh.k8s.inject import InjectConfig
from peermesh.net.http.h1server import H1RequestBody, H1ResponseWriter, H1ServerConnection
from peermesh.net.http.headers import RequestHead

log = logging.getLogger(__name__)
_SCOPES = {scope.value: scope for scope in Scope}


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS for the API server (which speaks 1.3), certificate and key from files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


class Webhook:
    """Answers AdmissionReviews on ``/mutate/namespace`` and ``/mutate/pod``; ``/healthz``."""

    def __init__(self, config: InjectConfig, context: ssl.SSLContext) -> None:
        self.config = config
        self.context = context
        self.stats = AdmissionStats()

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, self.context, server_side=True)
        try:
            with trio.move_on_after(30):
                await tls.do_handshake()
            await H1ServerConnection(tls, self._handle).run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
            log.debug("webhook connection dropped: %s", exc)
        except Exception:  # one connection's bug must not stop the webhook
            log.exception("webhook connection failed")
        finally:
            await trio.aclose_forcefully(tls)

    async def _handle(
        self, head: RequestHead, body: H1RequestBody, writer: H1ResponseWriter
    ) -> None:
        path = head.path.decode("ascii", "replace").partition("?")[0]
        chunks: list[bytes] = []
        size = 0
        status, payload = 200, b""
        while chunk := await body.receive_data():
            size += len(chunk)
            if size > MAX_REVIEW_BYTES:
                status, payload = 413, b'{"error": "review too large"}'
                self.stats.refused += 1
                break
            chunks.append(chunk)
        if status == 200:
            status, payload = self._answer(head.method, path, b"".join(chunks))
        await writer.send_head(
            status,
            [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        )
        await writer.send_data(payload)
        await writer.finish()

    def _answer(self, method: bytes, path: str, body: bytes) -> tuple[int, bytes]:
        if path == "/healthz":
            return 200, json.dumps({"ok": True, **vars(self.stats)}).encode()
        scope = _SCOPES.get(path)
        if scope is None or method != b"POST":
            return 404, b'{"error": "POST an AdmissionReview to /mutate/namespace or /mutate/pod"}'
        try:
            return 200, review(body, scope, self.config, self.stats)
        except BadReview as exc:
            return 400, json.dumps({"error": str(exc)}).encode()
