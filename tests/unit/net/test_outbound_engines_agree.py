"""Both engines prepare the same outbound header blocks the same way, or refuse them alike.

``h2fast.prepare_outbound`` (what the ``h2`` engine uses) is the reference. The nghttp2
engine checks a block with nothing to normalise in C and hands every other block to the
reference; hypothesis writes blocks, well formed and malformed (uppercase names, padding,
connection-specific fields, TE values, pseudo-headers out of order, repeated or unknown,
Host against :authority, an empty :path, non-bytes fields, NUL, CR and LF in values), and
the test compares the normalised block (never-indexed marks included) or the refusal.
"""

from __future__ import annotations

from typing import Any

import pytest
from hpack import NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh.net.http.h2conn import reference_engine
from peermesh.net.http.h2engine import EngineError, EngineName, Ev
from peermesh.net.http.h2fast import prepare_outbound
from peermesh.net.http.h2select import new_engine, nghttp2_available

pytestmark = pytest.mark.skipif(not nghttp2_available(), reason="nghttp2 engine not built")

REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/x"),
           (b":authority", b"svc"), (b"accept", b"*/*")]  # fmt: skip
RESPONSE = [(b":status", b"200"), (b"content-type", b"text/plain"), (b"content-length", b"2")]
TRAILERS = [(b"grpc-status", b"0"), (b"grpc-message", b"ok")]
KINDS = {"request": (False, False), "response": (True, False), "trailer": (False, True)}

names = st.one_of(
    st.sampled_from(
        (b":method", b":scheme", b":path", b":authority", b":status", b":protocol", b":custom",
         b":Method", b"host", b"Host", b"te", b"TE", b"connection", b"proxy-connection",
         b"keep-alive", b"transfer-encoding", b"Upgrade", b"x-a", b"X-Upper", b" x-pad",
         b"x-pad\t", b"", b"authorization", b"cookie", b"x\x00nul")
    ),
    st.binary(max_size=6),
    st.sampled_from(("x-str", ":path", 7)),
)  # fmt: skip
values = st.one_of(
    st.sampled_from(
        (b"", b"trailers", b"Trailers", b"gzip", b" padded ", b"svc", b"other", b"GET",
         b"CONNECT", b"/", b"200", b"101", b"a\x00b", b"a\r\nb", b"\x0bv", b"v\x0c")
    ),
    st.binary(max_size=6),
    st.sampled_from(("str-value", 7, "svc")),
)  # fmt: skip
field = st.tuples(names, values, st.booleans()).map(
    lambda t: NeverIndexedHeaderTuple(t[0], t[1]) if t[2] else (t[0], t[1])
)


@st.composite
def blocks(draw: st.DrawFn) -> list[Any]:
    """A template block of some kind, with fields inserted, dropped, swapped or replaced."""
    block: list[Any] = list(draw(st.sampled_from((REQUEST, RESPONSE, TRAILERS, []))))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(("insert", "drop", "swap", "replace")))
        at = draw(st.integers(0, len(block)))
        if op == "insert":
            block.insert(at, draw(field))
        elif block and at < len(block):
            if op == "drop":
                del block[at]
            elif op == "swap":
                other = draw(st.integers(0, len(block) - 1))
                block[at], block[other] = block[other], block[at]
            else:
                block[at] = draw(field)
    return block


def outcome(prepare: Any, block: list[Any], response: bool, trailer: bool) -> Any:
    try:
        out = prepare(block, response=response, trailer=trailer)
    except EngineError as exc:
        return ("refused", str(exc))
    return [(n, v, isinstance(h, NeverIndexedHeaderTuple)) for h in out for n, v in (h,)]


@settings(max_examples=1500, deadline=None)
@given(blocks(), st.sampled_from(sorted(KINDS)), st.booleans())
def test_both_engines_prepare_or_refuse_every_block_alike(block, kind, client_side):
    response, trailer = KINDS[kind]
    ng = new_engine(EngineName.NGHTTP2, client_side=client_side, max_concurrent_streams=10)
    reference = outcome(prepare_outbound, block, response, trailer)
    assert outcome(ng.prepare_outbound, block, response, trailer) == reference
    h2 = reference_engine(client_side=client_side, max_concurrent_streams=10)
    assert outcome(h2.prepare_outbound, block, response, trailer) == reference


@pytest.mark.parametrize("value", [b"a\x00b", b"a\rb", b"a\nb", b"a\r\nx-injected: 1"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_nul_cr_or_lf_inside_a_field_is_refused_by_both_engines(value, kind):
    """RFC 9113 8.2.1 forbids them; nghttp2's name-NUL-value blob would even split at a
    NUL into fields nobody wrote."""
    response, trailer = KINDS[kind]
    block = [*{"request": REQUEST, "response": RESPONSE, "trailer": TRAILERS}[kind],
             (b"x-bad", value)]  # fmt: skip
    for engine in (
        new_engine(EngineName.NGHTTP2, client_side=not response, max_concurrent_streams=10),
        reference_engine(client_side=not response, max_concurrent_streams=10),
    ):
        with pytest.raises(EngineError, match="NUL, CR or LF"):
            engine.prepare_outbound(block, response=response, trailer=trailer)


def _serve(server: Any, data: bytes) -> list[Any]:
    return [e for e in server.receive(data) if e[0] == Ev.REQUEST]


@pytest.mark.parametrize(
    "block",
    [
        REQUEST,
        [*REQUEST, NeverIndexedHeaderTuple(b"x-secret", b"s")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"Host", b"svc"),
         (b"connection", b"keep-alive"), (b"x-a", b" padded ")],
    ],
)  # fmt: skip
def test_a_prepared_block_goes_out_as_prepared(block):
    """The block checked in C is the one submitted, the same as after normalisation."""
    server = reference_engine(client_side=False, max_concurrent_streams=10)
    client = new_engine(EngineName.NGHTTP2, client_side=True, max_concurrent_streams=10)
    server.receive(client.data_to_send())
    client.receive(server.data_to_send())
    prepared = client.prepare_outbound(block, response=False, trailer=False)
    client.send_headers(client.get_next_available_stream_id(), prepared, end_stream=True)
    (request,) = _serve(server, client.data_to_send())
    expected = prepare_outbound(block, response=False, trailer=False)
    assert [tuple(h) for h in request[2]] == [tuple(h) for h in expected]
