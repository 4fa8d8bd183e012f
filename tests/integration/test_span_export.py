"""The span exporter against a real OTLP/HTTP receiver on loopback (trio, h11)."""

from __future__ import annotations

import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import h11
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from peermesh.observability.context import RequestRecord
from peermesh.observability.otlp import SpanBuffer, SpanRecord, encode_head, encode_span
from peermesh.observability.spanexport import SpanExporter
from peermesh.observability.tracing import Tracer

HOUR = 3600.0  # an interval no test waits for: exports here are caused, never timed


@dataclass
class Receiver:
    """Answers each POST with the next status of ``answers`` (200 once they run out)."""

    answers: deque[int] = field(default_factory=deque)
    close_after_answer: bool = False
    hold: bool = False  # read requests but never answer them (until hold is cleared)
    bodies: list[bytes] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    targets: list[bytes] = field(default_factory=list)
    content_types: list[bytes] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)
    released: trio.Event = field(default_factory=trio.Event)
    port: int = 0
    connections: int = 0

    def spans(self) -> list[str]:
        """Span names over every accepted (2xx) request, in order."""
        names = []
        for body, status in zip(self.bodies, self.statuses, strict=True):
            if status == 200:
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for rs in request.resource_spans:
                    for ss in rs.scope_spans:
                        names += [span.name for span in ss.spans]
        return names

    async def wait_for(self, requests: int) -> None:
        while len(self.bodies) < requests:
            await self.changed.wait()

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(1 << 16)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    headers = dict(event.headers)
                    self.targets.append(event.target)
                    self.content_types.append(headers.get(b"content-type", b""))
                    body = b""
                    while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                        if event is h11.NEED_DATA:
                            conn.receive_data(await stream.receive_some(1 << 16))
                        elif isinstance(event, h11.Data):
                            body += event.data
                    status = self.answers.popleft() if self.answers else 200
                    self.bodies.append(body)
                    self.statuses.append(status)
                    self.changed.set()
                    self.changed = trio.Event()
                    if self.hold:
                        await self.released.wait()
                    await stream.send_all(
                        conn.send(
                            h11.Response(status_code=status, headers=[("content-length", "0")])
                        )
                        + conn.send(h11.EndOfMessage())
                    )
                    if self.close_after_answer:
                        return  # without "Connection: close": the client finds out later
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return
        finally:
            await stream.aclose()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self.serve, listeners)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def tracer_for(receiver: Receiver, **caps: int) -> Tracer:
    tracer = Tracer(service="frontend", node="node-a", endpoint=receiver.endpoint, **caps)
    exporter = tracer.exporter
    assert exporter is not None
    exporter.interval = HOUR
    exporter.backoff = 0.0
    return tracer


def finish(tracer: Tracer, n: int, prefix: str = "r") -> None:
    """End ``n`` sampled requests named ``GET {prefix}{i}``."""
    for i in range(n):
        record = RequestRecord("outbound", time.time(), 0.0, f"id{i}", "GET", f"{prefix}{i}", "/")
        tracer.begin(record, None)
        assert record.sampled
        record.status = 200
        tracer.end(record)


async def test_a_full_batch_is_exported_at_once_and_the_rest_on_flush():
    receiver = Receiver()
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        tracer = tracer_for(receiver)
        assert tracer.exporter is not None
        tracer.exporter.batch = 4
        await nursery.start(tracer.run)
        finish(tracer, 6)  # 4 make a batch: exported without waiting for the interval
        await receiver.wait_for(1)
        assert receiver.spans() == [f"GET r{i}" for i in range(4)]
        assert await tracer.flush()
        assert receiver.spans() == [f"GET r{i}" for i in range(6)]
        assert receiver.targets == [b"/v1/traces"] * 2
        assert receiver.content_types == [b"application/x-protobuf"] * 2
        assert tracer.exporter.exported == 6 and not tracer.exporter.dropped
        assert receiver.connections == 1  # kept alive between exports
        nursery.cancel_scope.cancel()


async def test_spans_over_the_cap_are_dropped_and_counted():
    receiver = Receiver()
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        tracer = tracer_for(receiver, max_spans=3)
        finish(tracer, 5)
        assert tracer.spans_recorded == 3
        assert tracer.exporter is not None and tracer.exporter.dropped == {"buffer-full": 2}
        small = tracer_for(receiver, max_bytes=300)  # a span is ~250 bytes: one fits
        finish(small, 2)
        assert small.spans_recorded == 1
        assert small.exporter is not None and small.exporter.dropped == {"buffer-full": 1}
        assert await tracer.flush()
        assert receiver.spans() == ["GET r0", "GET r1", "GET r2"]
        # Space is free again once exported.
        finish(tracer, 1, prefix="again")
        assert tracer.spans_recorded == 4
        nursery.cancel_scope.cancel()


async def test_503_and_429_are_retried_400_is_dropped_and_counted():
    receiver = Receiver(answers=deque([503, 429, 200, 400]))
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        tracer = tracer_for(receiver)
        exporter = tracer.exporter
        assert exporter is not None
        finish(tracer, 2)
        assert await tracer.flush()
        assert receiver.statuses == [503, 429, 200]
        assert receiver.bodies[0] == receiver.bodies[1] == receiver.bodies[2]
        assert receiver.spans() == ["GET r0", "GET r1"] and exporter.exported == 2
        finish(tracer, 1, prefix="late")
        assert not await tracer.flush()  # the 400 is not retried
        assert receiver.statuses[-1] == 400 and len(receiver.statuses) == 4
        assert exporter.dropped == {"rejected": 1} and exporter.exported == 2
        nursery.cancel_scope.cancel()


async def test_retries_are_bounded_then_the_batch_is_dropped():
    receiver = Receiver(answers=deque([503] * 10))
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        tracer = tracer_for(receiver)
        exporter = tracer.exporter
        assert exporter is not None
        exporter.attempts = 3
        finish(tracer, 2)
        assert not await tracer.flush()
        assert receiver.statuses == [503] * 3
        assert exporter.dropped == {"export-failed": 2} and exporter.failed_exports == 1
        nursery.cancel_scope.cancel()


async def test_a_server_that_does_not_speak_http_costs_one_batch_and_no_retry():
    async def garbage(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(1 << 16)
            await stream.send_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, garbage, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        tracer = Tracer(service="s", node="n", endpoint=f"http://127.0.0.1:{port}")
        exporter = tracer.exporter
        assert exporter is not None
        exporter.backoff = 0.0
        finish(tracer, 2)
        assert not await tracer.flush()
        assert exporter.dropped == {"bad-response": 2} and exporter.failed_exports == 1
        finish(tracer, 1)  # the exporter keeps working after it
        assert not await tracer.flush()
        assert exporter.dropped == {"bad-response": 3}
        nursery.cancel_scope.cancel()


async def test_an_unreachable_collector_drops_after_the_attempts_and_never_raises():
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        tracer = Tracer(service="s", node="n", endpoint=f"http://127.0.0.1:{port}")
        exporter = tracer.exporter
        assert exporter is not None
        exporter.backoff = 0.0
        finish(tracer, 3)
        assert not await tracer.flush()
        assert exporter.dropped == {"export-failed": 3} and exporter.exported == 0


async def test_a_kept_connection_the_collector_closed_is_replaced_without_a_retry():
    receiver = Receiver(close_after_answer=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        tracer = tracer_for(receiver)
        exporter = tracer.exporter
        assert exporter is not None
        exporter.attempts = 1  # a stale connection must not use up an attempt
        for i in range(3):
            finish(tracer, 1, prefix=f"b{i}-")
            assert await tracer.flush()
        assert receiver.spans() == ["GET b0-0", "GET b1-0", "GET b2-0"]
        assert receiver.connections == 3
        assert not exporter.dropped
        nursery.cancel_scope.cancel()


async def test_shutdown_exports_what_is_buffered_and_an_interrupted_batch_is_sent_again():
    receiver = Receiver(hold=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        tracer = tracer_for(receiver)
        exporter = tracer.exporter
        assert exporter is not None
        exporter.batch = 2
        async with trio.open_nursery() as agent:  # stands for the agent's nursery
            await agent.start(tracer.run)
            finish(tracer, 2)  # a full batch: the exporter posts it, the receiver holds it
            await receiver.wait_for(1)
            finish(tracer, 1, prefix="tail")
            agent.cancel_scope.cancel()  # the agent stops mid-export
        receiver.hold = False
        receiver.released.set()
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            await tracer.shutdown()
        assert not tracer.enabled
        assert receiver.spans()[-3:] == ["GET r0", "GET r1", "GET tail0"]
        assert exporter.exported == 3 and not exporter.dropped
        finish_after = Tracer.end
        record = RequestRecord("outbound", time.time(), 0.0, "x", "GET", "late", "/")
        record.sampled = True
        finish_after(tracer, record)  # after shutdown: nothing recorded, nothing raised
        assert tracer.spans_recorded == 3
        nursery.cancel_scope.cancel()


async def test_shutdown_within_a_deadline_counts_what_it_could_not_send():
    receiver = Receiver(hold=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        tracer = tracer_for(receiver)
        exporter = tracer.exporter
        assert exporter is not None
        finish(tracer, 2)
        with trio.CancelScope() as deadline:
            nursery.start_soon(_cancel_when_received, receiver, deadline)
            await tracer.shutdown()
        assert exporter.dropped == {"shutdown": 2} and len(tracer.buffer) == 0
        receiver.released.set()
        nursery.cancel_scope.cancel()


async def _cancel_when_received(receiver: Receiver, scope: trio.CancelScope) -> None:
    await receiver.wait_for(1)
    scope.cancel()


def test_https_endpoints_use_tls_and_bad_urls_are_refused():
    head = encode_head([], "peermesh")
    tls = SpanExporter(
        "https://collector.example:4318/v1/traces", SpanBuffer(max_spans=1, max_bytes=1), head
    )
    assert tls._tls is not None and tls._port == 4318
    plain = SpanExporter(
        "http://collector.example/v1/traces", SpanBuffer(max_spans=1, max_bytes=1), head
    )
    assert plain._tls is None and plain._port == 80
    for bad in ("ftp://x/v1/traces", "http:///v1/traces"):
        try:
            SpanExporter(bad, SpanBuffer(max_spans=1, max_bytes=1), head)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")


def _self_signed(tmp: Path) -> tuple[Path, Path, str]:
    """A self-signed certificate for 127.0.0.1 (cert file, key file, PEM)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "collector")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (tmp / "cert.pem").write_text(pem)
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tmp / "cert.pem", tmp / "key.pem", pem


async def test_https_export_verifies_the_collector_certificate(tmp_path):
    cert, key, pem = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    receiver = Receiver()

    async def serve_tls(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_tls, server_side=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError:
            return  # the untrusting client below hangs up
        await receiver.serve(tls)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve_tls, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        url = f"https://127.0.0.1:{port}/v1/traces"
        head = encode_head([("service.name", "frontend")], "peermesh")
        trusting = SpanExporter(
            url,
            SpanBuffer(max_spans=8, max_bytes=1 << 20),
            head,
            ssl_context=ssl.create_default_context(cadata=pem),
        )
        trusting.buffer.add(encode_span(SpanRecord("1" * 32, "2" * 16, "", "GET x", 3, 1, 2, ())))
        assert await trusting.export_all()
        assert receiver.spans() == ["GET x"]
        # The system trust store does not know this certificate: refused, counted.
        default = SpanExporter(url, SpanBuffer(max_spans=8, max_bytes=1 << 20), head, attempts=1)
        default.buffer.add(encode_span(SpanRecord("1" * 32, "3" * 16, "", "GET y", 3, 1, 2, ())))
        assert not await default.export_all()
        assert default.dropped == {"export-failed": 1}
        assert receiver.spans() == ["GET x"]
        nursery.cancel_scope.cancel()
