"""h2fast against the libraries it stands in for: same bytes decoded, same verdicts."""

from __future__ import annotations

import h2.exceptions
import h2.utilities
import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peermesh.net.http.h2fast import (
    FastDecoder,
    FastEncoder,
    check_received,
    encode_integer,
    huffman_encode,
    prepare_outbound,
)

NAMES = [
    b":method", b":scheme", b":authority", b":path", b":status", b":protocol", b"host",
    b"user-agent", b"accept", b"content-type", b"content-length", b"x-request-id",
    b"traceparent", b"authorization", b"cookie", b"te", b"connection", b"x-custom",
    b"X-Upper", b"bad name", b"", b"a:b", b"date", b"server",
]  # fmt: skip
VALUES = [
    b"", b"GET", b"CONNECT", b"/", b"/1k", b"https", b"orders", b"200", b"trailers",
    b"gzip", b" padded", b"tab\t", b"new\nline", b"nul\x00", b"x" * 300, b"caf\xc3\xa9",
]  # fmt: skip

header = st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES) | st.binary(max_size=40))
clean_value = st.binary(min_size=0, max_size=120).map(lambda b: b.strip(b" \t\r\n\x0b\x0c"))
clean_header = st.tuples(
    st.sampled_from([n for n in NAMES if n and n.islower() and b" " not in n]), clean_value
)


def _decode(decoder: hpack.Decoder, block: bytes) -> list[tuple[bytes, bytes]]:
    return [(bytes(n), bytes(v)) for n, v in decoder.decode(block, raw=True)]


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(st.lists(clean_header, max_size=12), min_size=1, max_size=30),
    sizes=st.lists(st.sampled_from([4096, 0, 100, 256, 8192, 4096]), max_size=30),
)
def test_fast_encoder_round_trips_through_hpack_decoder(blocks, sizes):
    encoder = FastEncoder()
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 1 << 16
    for i, headers in enumerate(blocks):
        if i < len(sizes) and sizes[i] != encoder.header_table_size:
            encoder.header_table_size = sizes[i]
        block = encoder.encode(headers)
        assert _decode(decoder, block) == [(bytes(n), bytes(v)) for n, v in headers]
        assert decoder.header_table_size == encoder.header_table_size


def test_fast_encoder_indexes_repeats_and_keeps_one_off_and_secret_values_out():
    encoder = FastEncoder()
    decoder = hpack.Decoder()
    first = [(b":method", b"GET"), (b"user-agent", b"curl/8"), (b"x-request-id", b"a" * 36)]
    block1 = encoder.encode(first)
    block2 = encoder.encode([*first[:2], (b"x-request-id", b"b" * 36)])
    assert len(block2) < len(block1)
    assert _decode(decoder, block1) == first
    assert _decode(decoder, block2)[2] == (b"x-request-id", b"b" * 36)
    # Credentials: literal never-indexed (0x1x), and never enter the dynamic table.
    secret = encoder.encode([(b"authorization", b"Bearer abc")])
    assert secret[0] & 0xF0 == 0x10
    assert all(n != b"authorization" for n, _, _, _ in encoder._entries)
    assert _decode(decoder, secret) == [(b"authorization", b"Bearer abc")]


def test_huffman_and_integers_match_hpack():
    coder = hpack.huffman.HuffmanEncoder(
        hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH
    )
    for data in [b"", b"a", b"www.example.com", bytes(range(256))]:
        assert huffman_encode(data) == coder.encode(data)
    for value in [0, 1, 30, 31, 126, 127, 128, 1337, 1 << 20]:
        for bits in (4, 5, 6, 7):
            assert encode_integer(value, bits, 0) == bytes(hpack.hpack.encode_integer(value, bits))


FLAGS = [(False, False), (True, False), (False, True)]  # (response, trailer)


def _h2_verdict(headers, response, trailer, client):
    flags = h2.utilities.HeaderValidationFlags(
        is_client=client, is_trailer=trailer, is_response_header=response, is_push_promise=False
    )
    try:
        list(h2.utilities.validate_headers(headers, flags))
    except h2.exceptions.ProtocolError as exc:
        return str(exc)
    return None


def _our_verdict(headers, response, trailer):
    try:
        check_received(headers, response=response, trailer=trailer)
    except h2.exceptions.ProtocolError as exc:
        return str(exc)
    return None


@settings(max_examples=600, deadline=None)
@given(headers=st.lists(header, max_size=8), kind=st.sampled_from(FLAGS))
def test_check_received_rejects_exactly_what_h2_rejects(headers, kind):
    response, trailer = kind
    ours = _our_verdict(headers, response, trailer)
    theirs = _h2_verdict(headers, response, trailer, client=response)
    assert (ours is None) == (theirs is None), (ours, theirs)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http")], ":authority or Host"),
        ([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"a")], "b':scheme'"),
        ([(b"X-A", b"1")], "uppercase header name"),
        ([(b"x", b" v")], "surrounded by whitespace"),
        ([(b"x", b"a\nb")], "Illegal character"),
        ([(b"connection", b"close")], "Connection-specific"),
        ([(b"te", b"gzip")], "Invalid value for TE"),
        ([(b":path", b"/"), (b":path", b"/")], "duplicate pseudo-header"),
        ([(b"x", b"1"), (b":method", b"GET")], "out of sequence"),
        ([(b":foo", b"1")], "custom pseudo-header"),
    ],
)
def test_check_received_gives_h2s_messages(headers, message):
    ours = _our_verdict(headers, False, False)
    theirs = _h2_verdict(headers, False, False, client=False)
    assert ours is not None and message in ours
    assert ours == theirs


@settings(max_examples=600, deadline=None)
@given(headers=st.lists(header, max_size=8), kind=st.sampled_from(FLAGS))
def test_prepare_outbound_matches_h2_normalise_and_validate(headers, kind):
    response, trailer = kind
    flags = h2.utilities.HeaderValidationFlags(
        is_client=not response,
        is_trailer=trailer,
        is_response_header=response,
        is_push_promise=False,
    )
    try:
        normalised = h2.utilities.normalize_outbound_headers(headers, flags, False)
        theirs: list | str = list(h2.utilities.validate_outbound_headers(normalised, flags))
    except (h2.exceptions.ProtocolError, IndexError) as exc:  # h2 trips on an empty name
        theirs = str(exc)
    if not isinstance(theirs, str) and any(
        c in bytes(f) for n, v in theirs for f in (n, v) for c in (b"\0", b"\r", b"\n")
    ):
        theirs = "refused: NUL, CR or LF in a field, which h2 would send"
    try:
        ours: list | str = prepare_outbound(headers, response=response, trailer=trailer)
    except h2.exceptions.ProtocolError as exc:
        ours = str(exc)
    if isinstance(theirs, str) or isinstance(ours, str):
        assert isinstance(theirs, str) and isinstance(ours, str), (ours, theirs)
    else:
        assert [(bytes(n), bytes(v)) for n, v in ours] == [(bytes(n), bytes(v)) for n, v in theirs]


def _decode_both(blocks: list[bytes], max_list: int = 1 << 16) -> tuple[object, object]:
    results = []
    for decoder in (hpack.Decoder(), FastDecoder()):
        decoder.max_header_list_size = max_list
        out: list = []
        try:
            for block in blocks:
                out.append([(bytes(n), bytes(v)) for n, v in decoder.decode(block, raw=True)])
        except hpack.HPACKError as exc:
            out.append(type(exc).__name__)
        results.append((out, list(decoder.header_table.dynamic_entries)))
    return results[0], results[1]


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(st.lists(clean_header, max_size=12), min_size=1, max_size=20),
    fast=st.booleans(),
)
def test_fast_decoder_matches_hpack_on_valid_blocks(blocks, fast):
    encoder = FastEncoder() if fast else hpack.Encoder()
    encoded = [encoder.encode(headers) for headers in blocks]
    theirs, ours = _decode_both(encoded)
    assert ours == theirs
    assert ours[0] == [[(bytes(n), bytes(v)) for n, v in h] for h in blocks]


@settings(max_examples=1000, deadline=None)
@given(
    blocks=st.lists(
        st.binary(max_size=40)
        | st.lists(clean_header, max_size=4).map(lambda h: hpack.Encoder().encode(h)),
        min_size=1,
        max_size=4,
    ),
    max_list=st.sampled_from([1 << 16, 100]),
)
def test_fast_decoder_accepts_and_rejects_what_hpack_does(blocks, max_list):
    theirs, ours = _decode_both(blocks, max_list)
    assert ours == theirs


def test_fast_decoder_keeps_never_indexed_marks():
    block = FastEncoder().encode([(b"authorization", b"secret")])
    (header,) = FastDecoder().decode(block, raw=True)
    assert isinstance(header, hpack.NeverIndexedHeaderTuple)
