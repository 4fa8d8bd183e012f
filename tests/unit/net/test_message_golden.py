"""Every control message decodes the bytes older agents sent and encodes them unchanged.

``message_wire.golden`` holds one encoded example per message (and per shape: optional
fields set and unset), captured from the hand-written codecs the derived ones replaced.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import msgpack
import pytest

from peermesh.core.errors import PeermeshError

GOLDEN = Path(__file__).with_name("message_wire.golden")


def _cases() -> list[tuple[str, bytes]]:
    lines = GOLDEN.read_text().splitlines()
    return [
        (name, bytes.fromhex(encoded))
        for name, encoded in (line.split() for line in lines if line and not line.startswith("#"))
    ]


def _message_class(name: str) -> Any:
    module, cls = name.rsplit(".", 1)
    return getattr(importlib.import_module(f"peermesh.{module}"), cls)


@pytest.mark.parametrize(("name", "encoded"), _cases())
def test_known_bytes_decode_and_encode_unchanged(name: str, encoded: bytes) -> None:
    cls = _message_class(name)
    decoded = cls.from_wire(msgpack.unpackb(encoded, raw=False))
    assert isinstance(decoded, cls)
    assert msgpack.packb(decoded.to_wire(), use_bin_type=True) == encoded


def test_every_message_kind_has_known_bytes() -> None:
    names = {name for name, _ in _cases()}
    assert len(names) == 41


_WRONG = [None, 7, 2**70, 1.5, True, "x", "x" * 5000, b"x" * 70_000, [], [b"a"], {"a": 1}]


@pytest.mark.parametrize(("name", "encoded"), _cases())
def test_a_wrong_field_is_refused_with_the_modules_own_error(name: str, encoded: bytes) -> None:
    cls = _message_class(name)
    raw = msgpack.unpackb(encoded, raw=False)
    bodies = [*_WRONG]
    if isinstance(raw, dict):
        bodies += [{**raw, key: wrong} for key in raw for wrong in _WRONG]
    refused = 0
    for body in bodies:
        try:
            cls.from_wire(body)
        except PeermeshError as exc:
            assert exc.status in (400, 500), (body, exc)
            refused += 1
    assert refused or name.endswith(("Empty", "Opaque", "PingRequest"))


def test_a_golden_item_from_an_agent_without_denied_counts_decodes_as_none_denied() -> None:
    from peermesh.observability.messages import GoldenItem

    older = bytes.fromhex(
        "87a9646972656374696f6ea7696e626f756e64a6736f75726365a3776562ab64657374696e6174696f6ea66f7264657273a5636f756e740aa66572726f727301a46869737482a22d3102a13308a677696e646f773c"
    )
    item = GoldenItem.from_wire(msgpack.unpackb(older, raw=False))
    assert (item.count, item.errors, item.denied, item.limited) == (10, 1, 0, 0)
