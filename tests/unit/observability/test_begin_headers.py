"""The head ``Observability.begin`` forwards is the incoming one with this hop's context.

``tracing.extract`` and ``tracing.inject`` are the reference: begin reads the headers
once and must forward exactly what extracting the context and injecting this hop's span
would give, plus an ``x-request-id`` when the request had none.
"""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh.net.http.headers import RequestHead
from peermesh.observability.context import RequestRecord
from peermesh.observability.hub import Observability
from peermesh.observability.metrics import AgentMetrics
from peermesh.observability.tracing import extract, inject

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
names = st.sampled_from(
    (b"traceparent", b"tracestate", b"b3", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-sampled",
     b"x-b3-flags", b"x-request-id", b"accept", b"user-agent")
)  # fmt: skip
values = st.one_of(
    st.sampled_from(
        (b"", b"1", b"0", b"d", b"vendor=a,other=b", TRACE.encode(), b"00f067aa0ba902b7",
         f"00-{TRACE}-00f067aa0ba902b7-01".encode(), f"00-{TRACE}-00f067aa0ba902b7-00".encode(),
         f"{TRACE}-00f067aa0ba902b7-1".encode())
    ),
    st.binary(max_size=12),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(names, values), max_size=8))
def test_begin_forwards_what_extract_and_inject_give(headers):
    obs = Observability(
        service="frontend", node="node-a", trust_domain="t.test", metrics=AgentMetrics()
    )
    head = RequestHead(b"GET", b"http", b"orders", b"/", tuple(headers))

    async def begin() -> tuple[RequestRecord, RequestHead]:
        return obs.begin("outbound", head, source="frontend")

    record, forwarded = trio.run(begin)
    parent = extract(headers)
    # Every new trace is sampled at the default fraction (1.0); a caller's decision wins.
    sampled = parent.sampled if parent is not None and parent.sampled is not None else True
    state = parent.tracestate if parent is not None else ""
    expected = inject(headers, record.trace_id, record.span_id, sampled, state)
    if not any(name == b"x-request-id" for name, _ in headers):
        expected.append((b"x-request-id", record.request_id.encode()))
    assert list(forwarded.headers) == expected
    if parent is not None and parent.trace_id:
        assert record.trace_id == parent.trace_id


@pytest.mark.parametrize(
    ("traceparent", "sampled"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01", True),
        (f" 00-{TRACE.upper()}-00F067AA0BA902B7-00 ", False),  # padded, uppercase
        (f"00-{TRACE}-00f067aa0ba902b7-03-future", True),  # a later version's fields
        (f"ff-{TRACE}-00f067aa0ba902b7-01", None),  # version ff is invalid
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),  # all-zero trace id
        (f"00-{TRACE}-{'0' * 16}-01", None),  # all-zero parent id
        (f"00-{TRACE[:-1]}-00f067aa0ba902b7-01", None),  # short trace id
    ],
)
def test_a_traceparent_is_continued_only_when_valid(traceparent, sampled):
    parent = extract([(b"traceparent", traceparent.encode())])
    if sampled is None:
        assert parent is None
    else:
        assert parent is not None
        assert (parent.trace_id, parent.parent_span_id) == (TRACE, "00f067aa0ba902b7")
        assert parent.sampled is sampled
