"""The two HTTP/2 engines, fed the same client frames, must end in the same state.

``h2`` is the reference: hypothesis writes frame sequences (well formed, and with
malformed frames mixed in), both server engines read them frame by frame or in reads
cut anywhere (inside a header block too), and the test compares which streams opened,
ended and were reset by the peer, and whether the connection died of a protocol error.
Known, documented difference kept out of the generator: nghttp2 answers a RST_STREAM
or WINDOW_UPDATE on a stream that was never opened (idle) with a connection error,
where h2 ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import hpack
import pytest
from hyperframe.frame import (
    DataFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peermesh.net.http.h2engine import EngineError, EngineName, Ev, H2Engine
from peermesh.net.http.h2select import new_engine, nghttp2_available

pytestmark = pytest.mark.skipif(not nghttp2_available(), reason="nghttp2 engine not built")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"svc")]
POST = [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/x"), (b":authority", b"svc")]
BAD_HEADERS = [
    [*GET, (b"X-Upper", b"1")],  # uppercase name
    GET[:2] + GET[3:],  # no :path
    [*GET, (b"connection", b"close")],  # connection-specific
    [(b"x-first", b"1"), *GET],  # pseudo-header after a regular one
    [*GET, (b":custom", b"1")],  # unknown pseudo-header
    [*GET, (b"te", b"gzip")],  # te other than trailers
]


@dataclass
class Outcome:
    opened: set[int] = field(default_factory=set)
    ended: set[int] = field(default_factory=set)
    reset_by_peer: dict[int, int] = field(default_factory=dict)
    body: dict[int, int] = field(default_factory=dict)
    connection_error: bool = False
    #: Streams the engine refused on their own (the h2 engine's per-stream faults).
    stream_faults: int = field(default=0, compare=False)


def chunked(frames: list[bytes], cuts: list[int]) -> list[bytes]:
    """The same bytes, cut where ``cuts`` say (reads end anywhere, inside frames too)."""
    raw = b"".join(frames)
    at = sorted({c % len(raw) for c in cuts if c % len(raw)}) if raw else []
    return [raw[a:b] for a, b in zip([0, *at], [*at, len(raw)], strict=True)]


def run(name: EngineName, frames: list[bytes]) -> Outcome:
    engine: H2Engine = new_engine(name, client_side=False, max_concurrent_streams=100)
    engine.data_to_send()
    out = Outcome()
    try:
        for raw in [PREFACE + SettingsFrame(0).serialize(), *frames]:
            for event in engine.receive(raw):
                tag = event[0]
                if tag == Ev.REQUEST:
                    out.opened.add(event[1])
                elif tag == Ev.END:
                    out.ended.add(event[1])
                elif tag == Ev.RESET:
                    # h2 reports a second RST_STREAM on a closed stream too; nghttp2 drops it
                    out.reset_by_peer.setdefault(event[1], event[2])
                elif tag == Ev.DATA and event[2]:  # h2 also reports empty DATA frames
                    out.body[event[1]] = out.body.get(event[1], 0) + len(event[2])
            engine.data_to_send()
            out.stream_faults += len(engine.stream_faults)
            engine.stream_faults.clear()
    except EngineError:
        out.connection_error = True
    return out


@st.composite
def scripts(draw: st.DrawFn) -> list[bytes]:
    encoder = hpack.Encoder()
    frames: list[bytes] = []
    opened: list[int] = []  # streams we sent HEADERS on, in order
    ended: set[int] = set()  # ... and those we ended (END_STREAM or RST_STREAM)
    next_sid = 1
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(
            st.sampled_from(
                ["headers", "headers", "data", "data", "rst", "window", "ping", "extension", "bad"]
            )
        )
        end = draw(st.booleans())
        if kind == "headers" or not opened:
            block = encoder.encode(draw(st.sampled_from([GET, POST])))
            flags = ["END_HEADERS", *(["END_STREAM"] if end else [])]
            frames.append(HeadersFrame(next_sid, data=block, flags=flags).serialize())
            opened.append(next_sid)
            if end:
                ended.add(next_sid)
            next_sid += 2 * draw(st.integers(1, 2))  # ids may skip, never go back
            continue
        sid = draw(st.sampled_from(opened))
        if kind == "data":
            if sid in ended:
                continue
            size = draw(st.integers(0, 3000))
            flags = ["END_STREAM"] if end else []
            frames.append(DataFrame(sid, data=b"d" * size, flags=flags).serialize())
            if end:
                ended.add(sid)
        elif kind == "rst":
            code = draw(st.sampled_from([0, 1, 2, 7, 8]))
            frames.append(RstStreamFrame(sid, error_code=code).serialize())
            ended.add(sid)
        elif kind == "window":
            target = draw(st.sampled_from([0, sid]))
            frames.append(WindowUpdateFrame(target, window_increment=1000).serialize())
        elif kind == "ping":
            frames.append(PingFrame(0, opaque_data=b"12345678").serialize())
        elif kind == "extension":  # unknown frame types are ignored (RFC 9113 §4.1)
            frames.append(b"\x00\x00\x03\xfa\x00" + sid.to_bytes(4, "big") + b"ext")
        else:
            frames.append(draw(malformed(encoder, next_sid, sid)))
            break  # after a connection error nothing more is read
    return frames


def malformed(encoder: hpack.Encoder, new_sid: int, open_sid: int) -> st.SearchStrategy[bytes]:
    headers_flags = ["END_HEADERS", "END_STREAM"]
    return st.one_of(
        st.sampled_from(BAD_HEADERS).map(
            lambda h: HeadersFrame(new_sid, data=encoder.encode(h), flags=headers_flags).serialize()
        ),
        st.just(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"),  # DATA on stream 0
        st.just(
            HeadersFrame(new_sid + 1, data=encoder.encode(GET), flags=headers_flags).serialize()
        ),
        st.just(WindowUpdateFrame(0, window_increment=0).serialize()),
        st.just(b"\x00\x00\x01\x03\x00\x00\x00\x00" + bytes([open_sid]) + b"\x00"),  # RST len 1
        st.just(b"\x00\x00\x09\x04\x00\x00\x00\x00\x00" + b"\x00" * 9),  # SETTINGS len 9
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scripts(), st.lists(st.integers(1, 1 << 16), max_size=8))
def test_nghttp2_ends_where_h2_ends(frames: list[bytes], cuts: list[int]) -> None:
    reads = chunked(frames, cuts) if cuts else frames
    reference = run(EngineName.H2, reads)
    candidate = run(EngineName.NGHTTP2, reads)
    if cuts and reference.connection_error:
        # What the engines report from the read that killed the connection differs
        # (nghttp2 reports nothing from it, and hands over DATA bytes as they arrive
        # where h2 waits for whole frames): only the verdict is compared.
        assert candidate.connection_error
        return
    assert candidate == reference
    assert candidate.stream_faults == reference.stream_faults
