"""The nghttp2 engine on its own: two engines in memory, no sockets (sans-IO).

hyperframe and hpack only craft malformed input the engine must refuse.
"""

from __future__ import annotations

import hpack
import pytest
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
)

from peermesh.net.http.h2engine import EngineError, Ev, Event, Header
from peermesh.net.http.h2select import nghttp2_available

if not nghttp2_available():
    pytest.skip(
        "nghttp2 engine not built (needs libnghttp2-dev, then make)", allow_module_level=True
    )

from peermesh.net.http.nghttp2.engine import NgEngine, NgProtocolError

REQ = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/up"), (b":authority", b"svc")]
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"svc")]
CANCEL, REFUSED = 8, 7


def pair() -> tuple[NgEngine, NgEngine]:
    c, s = NgEngine(client_side=True), NgEngine(client_side=False)
    pump(c, s)
    return c, s


def pump(c: NgEngine, s: NgEngine) -> tuple[list[Event], list[Event]]:
    """Move bytes both ways until both are quiet; collect events."""
    cev: list[Event] = []
    sev: list[Event] = []
    for _ in range(100):
        a = c.data_to_send()
        cev += c.pop_events()
        if a:
            sev += s.receive(a)
        b = s.data_to_send()
        sev += s.pop_events()
        if b:
            cev += c.receive(b)
        if not a and not b:
            break
    return cev, sev


def resets(raw: bytes) -> dict[int, int]:
    """RST_STREAM codes by stream in what an engine sent; asserts there was no GOAWAY."""
    out = {}
    while raw:
        frame, length = Frame.parse_frame_header(memoryview(raw[:9]))
        frame.parse_body(memoryview(raw[9 : 9 + length]))
        raw = raw[9 + length :]
        assert not isinstance(frame, GoAwayFrame)
        if isinstance(frame, RstStreamFrame):
            out[frame.stream_id] = frame.error_code
    return out


def goaway_codes(raw: bytes) -> list[int]:
    codes = []
    while raw:
        frame, length = Frame.parse_frame_header(memoryview(raw[:9]))
        frame.parse_body(memoryview(raw[9 : 9 + length]))
        raw = raw[9 + length :]
        if isinstance(frame, GoAwayFrame):
            codes.append(frame.error_code)
    return codes


def kinds(evs: list[Event], sid: int) -> list[int]:
    return [e[0] for e in evs if len(e) > 1 and e[1] == sid and e[0] is not Ev.WINDOW]


def test_request_body_response_informational_and_trailers() -> None:
    c, s = pair()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [*REQ, (b"content-type", b"text/plain")])
    c.send_data(sid, b"hello ")
    c.send_data(sid, b"world", end_stream=True)
    _, sev = pump(c, s)
    req = [e for e in sev if e[0] is Ev.REQUEST]
    assert req and req[0][2][0] == (b":method", b"POST") and req[0][3] is False
    assert b"".join(e[2] for e in sev if e[0] is Ev.DATA) == b"hello world"
    assert Ev.END in kinds(sev, sid)
    s.send_headers(sid, [(b":status", b"100")])
    s.send_headers(sid, [(b":status", b"200"), (b"content-type", b"text/plain")])
    s.send_data(sid, b"resp-body")
    s.send_headers(sid, [(b"grpc-status", b"0"), (b"x-trailer", b"yes")], end_stream=True)
    cev, _ = pump(c, s)
    assert kinds(cev, sid) == [
        Ev.INFORMATIONAL,
        Ev.RESPONSE,
        Ev.DATA,
        Ev.TRAILERS,
        Ev.END,
        Ev.CLOSED,
    ]
    trailers = next(e for e in cev if e[0] is Ev.TRAILERS)
    assert trailers[2] == [(b"grpc-status", b"0"), (b"x-trailer", b"yes")]


def test_flow_control_never_lets_more_than_the_window_through() -> None:
    c, s = pair()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, REQ)
    total = 4 << 20
    c.send_data(sid, b"x" * total, end_stream=True)  # queued in C; nghttp2 paces it
    _, sev = pump(c, s)
    unacked = [e[3] for e in sev if e[0] is Ev.DATA]
    received = sum(unacked)
    assert received == 1 << 20  # exactly the 1 MiB stream window
    assert c.local_flow_control_window(sid) == 0
    rounds = 0
    while received < total:
        take = 256 << 10  # the reader takes 256 KiB; only then does credit go back
        while take > 0 and unacked:
            n = unacked.pop(0)
            s.acknowledge_received_data(n, sid)
            take -= n
        _, sev = pump(c, s)
        new = [e[3] for e in sev if e[0] is Ev.DATA]
        received += sum(new)
        unacked += new
        assert sum(unacked) <= 1 << 20
        rounds += 1
        assert rounds < 1000
    assert Ev.END in kinds(sev, sid)


def test_reset_both_ways_and_after_queued_data() -> None:
    c, s = pair()
    a = c.get_next_available_stream_id()
    c.send_headers(a, REQ)
    c.send_data(a, b"z" * 1000)
    c.reset_stream(a, CANCEL)  # head and body queued before the reset go out first
    cev, sev = pump(c, s)
    assert [e[0] for e in sev if e[1:2] == (a,)][:3] == [Ev.REQUEST, Ev.DATA, Ev.RESET]
    assert (Ev.RESET, a, CANCEL) in sev and (Ev.CLOSED, a, CANCEL) in cev
    b = c.get_next_available_stream_id()
    c.send_headers(b, GET, end_stream=True)
    pump(c, s)
    s.reset_stream(b, REFUSED)
    cev, _ = pump(c, s)
    assert (Ev.RESET, b, REFUSED) in cev
    with pytest.raises(EngineError):
        s.send_data(b, b"late")


def test_graceful_goaway_refuses_later_streams_on_the_client() -> None:
    c, s = pair()
    first = c.get_next_available_stream_id()
    c.send_headers(first, REQ)
    pump(c, s)
    s.send_graceful_goaway(first)
    goaway = s.data_to_send()
    late = c.get_next_available_stream_id()
    c.send_headers(late, GET, end_stream=True)  # sent before the client sees the GOAWAY
    sev = s.receive(c.data_to_send())
    assert not [e for e in sev if e[0] is Ev.REQUEST]
    cev = c.receive(goaway + s.data_to_send())
    assert (Ev.GOAWAY, 0, first, b"") in cev
    assert (Ev.CLOSED, late, REFUSED) in cev
    c.send_data(first, b"rest", end_stream=True)
    pump(c, s)
    s.send_headers(first, [(b":status", b"200")], end_stream=True)
    cev, _ = pump(c, s)
    assert kinds(cev, first) == [Ev.RESPONSE, Ev.END, Ev.CLOSED]


def test_garbage_instead_of_the_preface_is_a_protocol_error() -> None:
    s = NgEngine(client_side=False)
    s.data_to_send()
    with pytest.raises(NgProtocolError):
        s.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_oversized_frame_closes_the_connection_with_frame_size_error() -> None:
    c, s = pair()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, REQ)
    pump(c, s)
    with pytest.raises(NgProtocolError):
        s.receive(DataFrame(sid, data=b"q" * 70000).serialize())
    goaway = [e for e in c.receive(s.data_to_send()) if e[0] is Ev.GOAWAY]
    assert goaway and goaway[0][1] == 6  # FRAME_SIZE_ERROR


@pytest.mark.parametrize(
    "extra",
    [[(b"X-Upper", b"v")], [(b"host", b"other")], [(b"connection", b"close")]],
    ids=["uppercase-name", "host-not-authority", "connection-specific"],
)
def test_invalid_header_block_resets_its_stream_as_h2_does(extra: list[Header]) -> None:
    _, s = pair()
    encoder = hpack.Encoder()
    block = encoder.encode(GET + extra)
    flags = ["END_HEADERS", "END_STREAM"]
    events = s.receive(HeadersFrame(1, data=block, flags=flags).serialize())
    assert not [e for e in events if e[0] is Ev.REQUEST]  # never reaches the session
    assert resets(s.data_to_send()) == {1: 1}  # RST_STREAM PROTOCOL_ERROR, no GOAWAY
    assert s.stream_faults == ["malformed"]
    events = s.receive(HeadersFrame(3, data=encoder.encode(GET), flags=flags).serialize())
    assert [e[:2] for e in events if e[1] == 3] == [(Ev.REQUEST, 3), (Ev.END, 3)]


@pytest.mark.parametrize(
    ("head", "trailers"),
    [
        ([(b":status", b"200"), (b"te", b"gzip")], None),
        ([(b":status", b"200"), (b"x-a", b" leading-space")], None),
        ([(b":status", b"200"), (b":status", b"200")], None),
        ([(b"x-a", b"1"), (b":status", b"200")], None),
        ([(b":status", b"200"), (b":path", b"/")], None),
        ([(b":status", b"200"), (b"keep-alive", b"1")], None),
        ([(b":status", b"200")], [(b":path", b"/x")]),
        ([(b":status", b"200")], [(b"connection", b"close")]),
    ],
    ids=[
        "te-not-trailers",
        "value-whitespace",
        "duplicate-status",
        "pseudo-after-regular",
        "request-pseudo",
        "connection-specific",
        "pseudo-in-trailers",
        "connection-in-trailers",
    ],
)
def test_a_malformed_response_or_trailers_resets_its_stream(
    head: list[Header], trailers: list[Header] | None
) -> None:
    """Received responses rely on nghttp2's own RFC 9113 field checks (no second pass)."""
    c, s = pair()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, GET, end_stream=True)
    pump(c, s)
    s.send_headers(sid, head, end_stream=trailers is None)
    if trailers is not None:
        s.send_data(sid, b"x")
        s.send_headers(sid, trailers, end_stream=True)
    cev, _ = pump(c, s)
    assert Ev.END not in kinds(cev, sid)
    assert Ev.TRAILERS not in kinds(cev, sid)
    closes = [e for e in cev if e[0] is Ev.CLOSED and e[1] == sid]
    assert closes and closes[0][2] == 1  # PROTOCOL_ERROR
    assert c.stream_faults


def test_header_list_over_our_limit_resets_its_stream() -> None:
    _, s = pair()
    encoder = hpack.Encoder()
    big = [(b"x-big", b"v" * 4000)]  # indexed once, then one byte per repeat
    block = encoder.encode(GET + big * 20, huffman=False)
    flags = ["END_HEADERS", "END_STREAM"]
    assert len(block) < 16000
    assert s.receive(HeadersFrame(1, data=block, flags=flags).serialize()) == [(Ev.CLOSED, 1, 11)]
    assert resets(s.data_to_send()) == {1: 11}  # ENHANCE_YOUR_CALM, no GOAWAY
    assert s.stream_faults == ["headers-too-large"]
    # The block was decoded whole: the next one's reference to the table still resolves.
    events = s.receive(HeadersFrame(3, data=encoder.encode(GET + big), flags=flags).serialize())
    request = [e for e in events if e[0] is Ev.REQUEST]
    assert request and (b"x-big", b"v" * 4000) in request[0][2]


def test_stream_over_the_limit_is_refused_alone() -> None:
    c, s = NgEngine(client_side=True), NgEngine(client_side=False, max_concurrent_streams=2)
    pump(c, s)
    assert c.remote_max_concurrent_streams == 2  # what the wire says, not nghttp2's own
    encoder = hpack.Encoder()
    for sid in (1, 3, 5):
        s.receive(HeadersFrame(sid, data=encoder.encode(GET), flags=["END_HEADERS"]).serialize())
    assert resets(s.data_to_send()) == {5: REFUSED}
    assert s.stream_faults == ["refused"]
    s.receive(DataFrame(1, data=b"", flags=["END_STREAM"]).serialize())
    s.send_headers(1, [(b":status", b"204")], end_stream=True)
    s.data_to_send()
    events = s.receive(HeadersFrame(7, data=encoder.encode(GET), flags=["END_HEADERS"]).serialize())
    assert [e[1] for e in events if e[0] is Ev.REQUEST] == [7]  # stream 1 closed: room


def test_credentials_are_never_indexed() -> None:
    c, _ = pair()
    sid = c.get_next_available_stream_id()
    secret = hpack.NeverIndexedHeaderTuple(b"x-secret", b"s")
    headers = [*REQ, (b"authorization", b"Bearer abc"), (b"cookie", b"a=1"), secret]
    c.send_headers(sid, [*headers, (b"x-plain", b"p")], end_stream=True)
    raw = c.data_to_send()
    pos = 0
    while True:
        frame, length = Frame.parse_frame_header(memoryview(raw[pos : pos + 9]))
        frame.parse_body(memoryview(raw[pos + 9 : pos + 9 + length]))
        pos += 9 + length
        if frame.type == 0x1:
            break
    assert isinstance(frame, HeadersFrame)
    got = {bytes(h[0]): type(h).__name__ for h in hpack.Decoder().decode(frame.data, raw=True)}
    for name in (b"authorization", b"cookie", b"x-secret"):
        assert got[name] == "NeverIndexedHeaderTuple"
    assert got[b"x-plain"] == "HeaderTuple"


def test_ping_and_peer_settings() -> None:
    c, s = pair()
    c.ping(b"pmkeepal")
    cev, _ = pump(c, s)
    assert (Ev.PING_ACK, b"pmkeepal") in cev
    assert c.remote_max_concurrent_streams == 1000
    assert c.max_outbound_frame_size == 1 << 16
    i = c.get_next_available_stream_id()
    c.send_headers(i, REQ)
    c.send_data(i, b"w" * 200000, end_stream=True)
    sizes = [e[3] for e in s.receive(c.data_to_send()) if e[0] is Ev.DATA]
    assert max(sizes) == 1 << 16  # DATA frames use the peer's 64 KiB, not nghttp2's 16 KiB


def _split_feed(engine: NgEngine, raw: bytes, cut: int) -> list[Event]:
    events = engine.receive(raw[:cut]) + engine.receive(raw[cut:])
    engine.data_to_send()
    return events + engine.pop_events()


LONG_HEAD = [(b":status", b"200"), (b"content-type", b"text/plain"), (b"x-long", b"v" * 300)]


def test_a_response_head_split_across_reads_arrives_whole() -> None:
    """nghttp2 decodes a header block as its bytes arrive, so a read may end inside it,
    after frames of other streams whose events the same read reports."""

    def answered() -> tuple[NgEngine, list[int], bytes]:
        c, s = pair()
        sids = []
        for _ in range(2):
            sids.append(c.get_next_available_stream_id())
            c.send_headers(sids[-1], GET, end_stream=True)
        pump(c, s)
        for sid in sids:
            s.send_headers(sid, LONG_HEAD)
            s.send_data(sid, b"body", end_stream=True)
        return c, sids, s.data_to_send()

    _c, (first, second), raw = answered()
    for cut in range(1, len(raw)):
        c, _sids, raw = answered()
        evs = _split_feed(c, raw, cut)
        for sid in (first, second):
            assert [e for e in evs if e[0] is Ev.RESPONSE and e[1] == sid] == [
                (Ev.RESPONSE, sid, LONG_HEAD, False)
            ], cut
            assert b"".join(e[2] for e in evs if e[0] is Ev.DATA and e[1] == sid) == b"body"
            assert kinds(evs, sid)[-2:] == [Ev.END, Ev.CLOSED]
        assert c.stream_faults == []


def test_a_request_head_split_across_reads_arrives_whole() -> None:
    request = [*GET, (b"cookie", b"c" * 200), (b"x-trace", b"t" * 100)]
    c, _s = pair()
    sids = []
    for _ in range(2):
        sids.append(c.get_next_available_stream_id())
        c.send_headers(sids[-1], request, end_stream=True)
    raw = c.data_to_send()
    for cut in range(1, len(raw)):
        _c, s2 = pair()
        evs = _split_feed(s2, raw, cut)
        assert [e for e in evs if e[0] is Ev.REQUEST] == [
            (Ev.REQUEST, sid, request, True) for sid in sids
        ], cut
        assert s2.stream_faults == []
