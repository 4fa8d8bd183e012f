"""Typed control messages: checked field reads, and RpcError's status from handler to caller."""

from __future__ import annotations

import pytest

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
