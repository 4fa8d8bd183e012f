"""Typed control messages: checked field reads, and RpcError's status from handler to caller."""

from __future__ import annotations

from enum import Enum

import pytest

from peermesh.core.codec import WireMessage, wire
from peermesh.core.errors import PeermeshError
from peermesh.core.wire import Fields, WireError
from peermesh.net.rpc import RpcError


def test_fields_read_each_type_with_its_bounds() -> None:
    f = Fields({"a": "x", "n": 3.0, "b": b"\x01", "l": [1, 2], "t": True, "m": {"k": 1}}, "msg")
    assert f.text("a") == "x"
    assert f.integer("n", minimum=0, maximum=5) == 3  # pycrdt's float form of an int
    assert f.blob("b") == b"\x01"
    assert f.items("l") == [1, 2]
    assert f.flag("t") is True
    assert f.fields("m").integer("k") == 1
    assert f.opt_text("missing") is None
    assert f.text("missing", default="d") == "d"


@pytest.mark.parametrize(
    ("raw", "read", "message"),
    [
        ([], lambda f: f, "msg: expected a map, got list"),
        ({}, lambda f: f.text("a"), "msg: field 'a' is missing"),
        ({"a": 1}, lambda f: f.text("a"), "msg.a: expected text, got int"),
        ({"a": "xx"}, lambda f: f.text("a", max_len=1), "msg.a: 2 characters, over 1"),
        ({"n": True}, lambda f: f.integer("n"), "msg.n: expected an integer, got bool"),
        ({"n": 10}, lambda f: f.integer("n", maximum=5), "msg.n: 10 is above 5"),
        ({"n": 10**400}, lambda f: f.number("n"), "msg.n: number out of range"),
        ({"n": float("nan")}, lambda f: f.number("n"), "msg.n: nan is not a finite number"),
        ({"l": [1, 2, 3]}, lambda f: f.items("l", max_items=2), "msg.l: 3 items, over 2"),
        ({"b": "text"}, lambda f: f.blob("b"), "msg.b: expected bytes, got str"),
    ],
)
def test_a_wrong_field_is_a_wire_error_naming_it(raw, read, message) -> None:
    with pytest.raises(WireError) as refused:
        read(Fields(raw, "msg"))
    assert str(refused.value) == message
    assert refused.value.status == 400
    assert refused.value.code == "bad-message"


def test_rpc_error_carries_status_and_a_code_derived_from_it() -> None:
    error = RpcError(403, "not an admin")
    assert (error.status, error.code, str(error)) == (403, "forbidden", "not an admin")
    assert RpcError(409, "x", code="already-enrolled").code == "already-enrolled"


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


class Inner(WireMessage, what="inner"):
    size: int = wire(minimum=0, maximum=9)


class Sample(WireMessage, what="sample"):
    name: str = wire(max_len=4)
    colour: Colour
    key: bytes = wire(length=2)
    inner: Inner
    tags: tuple[str, ...] = wire(default=(), max_len=2, item_len=3)
    where: tuple[str, int] | None = None
    label: str | None = wire(key="as", default=None)


def test_a_derived_codec_sends_fields_under_their_keys_and_reads_them_back() -> None:
    sample = Sample("ab", Colour.BLUE, b"xy", Inner(3), ("t",), ("h", 1), "l")
    wire_form = sample.to_wire()
    assert wire_form == {
        "name": "ab",
        "colour": "blue",
        "key": b"xy",
        "inner": {"size": 3},
        "tags": ["t"],
        "where": ["h", 1],
        "as": "l",
    }
    assert Sample.from_wire(wire_form) == sample


GOOD = {"name": "ab", "colour": "red", "key": b"xy", "inner": {"size": 1}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": None}, "sample: field 'name' is missing"),
        ({"name": "abcde"}, "sample.name: 5 characters, over 4"),
        ({"colour": "green"}, "sample.colour: 'green' is not one of red, blue"),
        ({"key": b"x"}, "sample.key: expected 2 bytes"),
        ({"inner": {"size": 10}}, "inner.size: 10 is above 9"),
        ({"tags": ["a", "b", "c"]}, "sample.tags: 3 items, over 2"),
        ({"tags": ["abcd"]}, "sample.tags[0]: 4 characters, over 3"),
        ({"where": ["h"]}, "sample.where: expected [str, int], got list"),
        ({"as": 5}, "sample.as: expected text, got int"),
    ],
)
def test_a_derived_codec_refuses_each_bad_field_by_name(change, message) -> None:
    with pytest.raises(WireError) as refused:
        Sample.from_wire({**GOOD, **change})
    assert str(refused.value) == message
    assert (refused.value.status, refused.value.code) == (400, "bad-message")


def test_an_error_class_declares_its_status_and_code_with_the_class() -> None:
    class Gone(PeermeshError, status=410, code="gone"):
        """A test error."""

    assert (Gone("x").status, Gone("x").code) == (410, "gone")
    with pytest.raises(TypeError, match="not an HTTP error status"):
        type("Bad", (PeermeshError,), {}, status=200)
    with pytest.raises(TypeError, match="not a lower-case token"):
        type("Bad", (PeermeshError,), {}, code="Not A Token")
