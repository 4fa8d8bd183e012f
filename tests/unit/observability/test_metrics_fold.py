"""The per-request series kept in plain numbers scrape exactly as prometheus_client's own.

A reference registry is fed through the children's ``inc`` and ``observe``, one call per
request; the agent's metrics are fed through ``record_request`` and ``record_bytes``. At
every scrape (several during one sequence) the two expositions must be the same text.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh.observability.metrics import DURATION_BUCKETS, AgentMetrics

_CREATED = re.compile(rb"^\S+_created\{?.*$\n", re.MULTILINE)

seconds = st.one_of(
    st.sampled_from((0.0, *DURATION_BUCKETS, 60.0)),
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
)
request = st.tuples(
    st.sampled_from(("outbound", "inbound")),
    st.sampled_from(("frontend", "plaintext")),
    st.sampled_from(("orders", "unknown")),
    st.sampled_from(("", "v2")),
    st.sampled_from((200, 403, 499, 503)),
    st.sampled_from(("", "0", "14")),
    seconds,
    st.integers(min_value=0, max_value=1 << 40),
    st.integers(min_value=0, max_value=3),
)
# A request, or a scrape between requests.
steps = st.lists(st.one_of(request, st.just(None)), max_size=60)


def _reference(ref: AgentMetrics, step: tuple) -> None:  # type: ignore[type-arg]
    direction, source, destination, subset, status, grpc, secs, sent, received = step
    ref.requests.labels(direction, source, destination, subset, str(status), grpc).inc()
    ref.duration.labels(direction, destination, subset).observe(secs)
    if sent or received:
        request_child = ref.request_bytes.labels(direction, source, destination)
        response_child = ref.response_bytes.labels(direction, source, destination)
        if sent:
            request_child.inc(sent)
        if received:
            response_child.inc(received)


def _exposition(metrics: AgentMetrics) -> bytes:
    return _CREATED.sub(b"", metrics.exposition())


@settings(max_examples=150, deadline=None)
@given(steps)
def test_folded_series_scrape_as_prometheus_client_counts_them(sequence):
    agent, ref = AgentMetrics(), AgentMetrics()
    for step in [*sequence, None]:
        if step is None:
            assert _exposition(agent) == _exposition(ref)
            continue
        direction, source, destination, subset, status, grpc, secs, sent, received = step
        agent.record_request(
            direction, source, destination, status, secs, subset=subset, grpc_status=grpc
        )
        if sent or received:
            agent.record_bytes(direction, source, destination, sent, received)
        _reference(ref, step)


def test_a_scrape_after_n_requests_shows_n_and_the_tally_agrees():
    metrics = AgentMetrics()
    for n in range(1, 4):
        for _ in range(100):
            metrics.record_request("inbound", "frontend", "orders", 200, 0.003)
        get = metrics.registry.get_sample_value
        labels = {"direction": "inbound", "source_service": "frontend"}
        total = get(
            "peermesh_requests_total",
            {**labels, "destination_service": "orders", "destination_subset": "",
             "response_code": "200", "grpc_status": ""},
        )  # fmt: skip
        assert total == 100 * n
        count = get(
            "peermesh_request_duration_seconds_count",
            {"direction": "inbound", "destination_service": "orders", "destination_subset": ""},
        )
        assert count == 100 * n
    metrics.record_request("inbound", "plaintext", "orders", 200, 0.001)
    assert metrics.tally[("inbound", "orders", 200)] == 301
    assert metrics.tally[("outbound", "orders", 200)] == 0
