"""Protocol detection on captured connections: HTTP stays HTTP, anything else is TCP."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from peermesh.proxy.tunnel import DETECT_TIMEOUT, classify, detect


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"GET / HTTP/1.1\r\n", "h1"),
        (b"POST ", "h1"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "h2c"),
        (b"PRI * HTTP/2", None),
        (b"GE", None),
        (b"*1\r\n$4\r\nPING\r\n", "tcp"),  # redis
        (b"\x16\x03\x01\x02\x00", "tcp"),  # a TLS ClientHello
        (b"GETX", "tcp"),
        (b"\x00\xff garbage", "tcp"),
    ],
)
def test_classify(data: bytes, kind: str | None) -> None:
    assert classify(data) == kind


async def test_bytes_split_across_reads_are_still_http(autojump_clock):
    app, agent = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def dribble() -> None:
            for piece in (b"G", b"E", b"T /x HTTP/1.1\r\n"):
                await app.send_all(piece)
                await trio.sleep(0.1)

        nursery.start_soon(dribble)
        kind, data = await detect(agent)
    assert kind == "h1" and data.startswith(b"GET ")


async def test_a_silent_client_is_taken_for_a_server_first_protocol(autojump_clock):
    _app, agent = trio.testing.memory_stream_pair()
    started = trio.current_time()
    kind, data = await detect(agent)
    assert (kind, data) == ("tcp", b"")
    assert trio.current_time() - started == pytest.approx(DETECT_TIMEOUT)


async def test_an_undecided_prefix_then_silence_is_tcp(autojump_clock):
    app, agent = trio.testing.memory_stream_pair()
    await app.send_all(b"PO")
    assert await detect(agent) == ("tcp", b"PO")


async def test_a_client_that_closes_at_once(autojump_clock):
    app, agent = trio.testing.memory_stream_pair()
    await app.aclose()
    assert await detect(agent) == ("closed", b"")
