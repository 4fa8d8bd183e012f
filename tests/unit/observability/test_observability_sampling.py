"""Head sampling decisions, the cheap unsampled path, and the access-log line encoder."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from peermesh.config import AgentConfig, ConfigError
from peermesh.observability import tracing
from peermesh.observability.context import RequestRecord, iso_utc
from peermesh.observability.hub import Observability
from peermesh.observability.metrics import AgentMetrics
from peermesh.observability.tracing import TraceContext, Tracer, extract, parse_sampling

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def _record(direction: str = "outbound") -> RequestRecord:
    return RequestRecord(direction, 1.0, 0.0, "r", "GET", "orders", "/", "frontend", "orders")


def test_parse_sampling_accepts_fractions_and_percentages():
    assert parse_sampling("0.25") == 0.25
    assert parse_sampling(1) == 1.0
    assert parse_sampling("1%") == 0.01
    assert parse_sampling("100%") == 1.0
    for bad in ("2", "-0.1", "150%", "nan", "often"):
        with pytest.raises(ValueError):
            parse_sampling(bad)


def test_agent_option_trace_sampling(tmp_path):
    common = {"name": "n1", "service": "web=8080", "data_dir": tmp_path, "gossip": "off"}
    assert AgentConfig.build(**common).telemetry.trace_sampling == 1.0  # type: ignore[arg-type]
    assert AgentConfig.build(**common, trace_sampling="5%").telemetry.trace_sampling == 0.05  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--trace-sampling '3'"):
        AgentConfig.build(**common, trace_sampling="3")  # type: ignore[arg-type]


def test_extract_reads_every_form_of_the_sampling_decision():
    def ctx(*headers: tuple[bytes, bytes]) -> TraceContext | None:
        return extract(list(headers))

    w3c = ctx((b"traceparent", f"00-{TRACE}-{PARENT}-00".encode()))
    assert w3c is not None and w3c.sampled is False
    b3 = [(b"x-b3-traceid", TRACE.encode()), (b"x-b3-spanid", PARENT.encode())]
    assert ctx(*b3).sampled is None  # type: ignore[union-attr]  # no decision: ours to make
    assert ctx(*b3, (b"x-b3-sampled", b"1")).sampled is True  # type: ignore[union-attr]
    assert ctx(*b3, (b"x-b3-sampled", b"0")).sampled is False  # type: ignore[union-attr]
    assert ctx(*b3, (b"x-b3-flags", b"1")).sampled is True  # type: ignore[union-attr]  # debug
    assert ctx((b"b3", f"{TRACE}-{PARENT}-d".encode())).sampled is True  # type: ignore[union-attr]
    assert ctx((b"b3", f"{TRACE}-{PARENT}".encode())).sampled is None  # type: ignore[union-attr]
    assert ctx((b"b3", b"0")) == TraceContext("", "", False)  # a decision without a trace
    assert ctx((b"x-b3-sampled", b"1")) == TraceContext("", "", True)
    assert ctx((b"b3", b"garbage")) is None


def test_decisions_follow_the_parent_and_otherwise_the_fraction():
    never = Tracer(service="s", node="n", endpoint=None, sampling=0.0)
    always = Tracer(service="s", node="n", endpoint=None, sampling=1.0)
    sampled, unsampled = TraceContext(TRACE, PARENT, True), TraceContext(TRACE, PARENT, False)
    undecided = TraceContext(TRACE, PARENT, None)
    assert [never.begin(_record(), p) for p in (None, sampled, unsampled, undecided)] == [
        False,
        True,
        False,
        False,
    ]
    assert [always.begin(_record(), p) for p in (None, sampled, unsampled, undecided)] == [
        True,
        True,
        False,
        True,
    ]
    record = _record()
    assert never.begin(record, TraceContext("", "", True)) is True  # "b3: 1" alone
    assert len(record.trace_id) == 32 and record.trace_id != TRACE and record.parent_span_id == ""


def test_the_fraction_is_drawn_from_the_trace_id_so_every_hop_agrees():
    half = [Tracer(service="s", node=f"n{i}", endpoint=None, sampling=0.5) for i in range(2)]
    rng = random.Random(7)
    agree = 0
    for _ in range(200):
        parent = TraceContext(f"{rng.getrandbits(128):032x}", PARENT, None)
        agree += half[0].begin(_record(), parent) == half[1].begin(_record(), parent)
    assert agree == 200
    # The low 64 bits of the trace id against fraction * 2**64, as TraceIdRatioBased.
    assert half[0].begin(_record(), TraceContext("f" * 16 + "0" * 16, PARENT, None)) is True
    assert half[0].begin(_record(), TraceContext("0" * 16 + "f" * 16, PARENT, None)) is False
    quarter = Tracer(service="s", node="n", endpoint=None, sampling=0.25)
    share = sum(quarter.begin(_record(), None) for _ in range(4000)) / 4000
    assert 0.19 < share < 0.31  # binomial: ±6 standard deviations


def test_unsampled_requests_encode_no_span(monkeypatch):
    """With an exporter configured, an unsampled hop never reaches the span encoder."""
    hub = Observability(
        service="frontend",
        node="n",
        trust_domain="t",
        metrics=AgentMetrics(),
        otlp_endpoint="http://127.0.0.1:9",
        trace_sampling=0.0,
    )
    tracer = hub.tracer
    assert tracer.enabled

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a span was encoded for an unsampled request")

    monkeypatch.setattr(tracing, "encode_record", forbidden)
    monkeypatch.setattr(tracing, "encode_span_fields", forbidden)
    from peermesh.net.http.headers import RequestHead

    head = RequestHead(b"GET", b"http", b"orders", b"/x", ((b"host", b"orders"),))
    import trio

    async def one() -> None:
        record, forwarded = hub.begin("outbound", head, source="frontend")
        assert not record.sampled
        assert dict(forwarded.headers)[b"traceparent"].endswith(b"-00")
        hub.end(record, 200, 0.001)
        await tracer.shutdown()

    trio.run(one)
    assert tracer.spans_recorded == 0
    assert len(tracer.buffer) == 0


def test_log_line_is_exactly_the_json_of_the_summary():
    rng = random.Random(3)
    odd = ['a"b\\c', "päth/ü", "tab\tnew\nline\x00", "emoji 🙂", "", "</script>"]
    for i in range(300):
        record = _record("inbound" if i % 2 else "outbound")
        record.started_wall = rng.uniform(0, 4e9)
        record.path = rng.choice(odd) + str(i)
        record.authority = rng.choice(odd)
        record.request_id = rng.choice(odd) or "r"
        record.status = rng.choice([0, 200, 499, 503])
        record.duration = rng.uniform(0, 3)
        record.request_bytes, record.response_bytes = rng.randrange(10**9), rng.randrange(10)
        record.grpc_status = rng.choice(["", "0", "other"])
        record.upstream = rng.choice(["", "10.0.0.1:15443"])
        record.route, record.subset = rng.choice([("", ""), ("r1", "v2")])
        record.authz_policy = rng.choice(["", "allow-frontend"])
        record.attempts = rng.randrange(4)
        expected = json.dumps(record.summary(), separators=(",", ":")).encode() + b"\n"
        assert record.log_line() == expected


def test_iso_time_matches_datetime_including_second_boundaries():
    rng = random.Random(5)
    stamps = [rng.uniform(0, 4e9) for _ in range(2000)]
    stamps += [s + d for s in (1e9, 1763700000.0) for d in (-5e-7, 0.0, 4.9e-7, 0.9995, 0.9999995)]
    for ts in stamps:
        want = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")
        assert iso_utc(ts) == want, ts


def test_mesh_wide_settings_override_the_agents_own_and_none_restores_them():
    import io

    sink = io.BytesIO()
    hub = Observability(
        service="frontend",
        node="n",
        trust_domain="t",
        metrics=AgentMetrics(),
        access_log=sink,
        trace_sampling=0.5,
    )
    assert hub.logging_requests and hub.tracer.sampling == 0.5
    hub.configure(access_log=False, trace_sampling=0.01)
    assert not hub.logging_requests and hub.tracer.sampling == 0.01
    hub.end(_record(), 200, 0.001)
    assert hub.access_log is not None and hub.access_log.pending == 0  # not logged
    hub.configure()  # the mesh setting is gone: the agent's own again
    assert hub.logging_requests and hub.tracer.sampling == 0.5
    hub.end(_record(), 200, 0.001)
    assert hub.access_log.pending == 1
    with pytest.raises(ValueError):
        hub.configure(trace_sampling=1.5)

    quiet = Observability(service="frontend", node="n", trust_domain="t", metrics=AgentMetrics())
    assert quiet.access_log is None and not quiet.logging_requests
    quiet.configure(access_log=True)  # an agent without --access-log logs to stdout
    assert quiet.logging_requests and quiet.access_log is not None
    assert quiet.access_log.sink == "-"
    quiet.configure(access_log=None)
    assert not quiet.logging_requests
