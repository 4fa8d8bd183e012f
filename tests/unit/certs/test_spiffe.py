"""SPIFFE ID parsing per SPIFFE-ID.md section 2, and X.509-SVID identity extraction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certs.spiffe import (
    InvalidSpiffeId,
    SpiffeId,
    validate_node_name,
    validate_service_name,
)

VALID = [
    ("spiffe://mesh.test", "mesh.test", ""),
    ("spiffe://mesh.test/svc/orders", "mesh.test", "/svc/orders"),
    ("spiffe://a-b_c.0/A/b.c/d-e_f", "a-b_c.0", "/A/b.c/d-e_f"),
    ("spiffe://td/...", "td", "/..."),
    ("spiffe://td/.hidden/x..y", "td", "/.hidden/x..y"),
    ("spiffe://td/" + "a" * 2036, "td", "/" + "a" * 2036),  # exactly 2048 characters
]

INVALID = [
    ("", "empty"),
    ("mesh.test/svc/orders", "does not start with 'spiffe://'"),
    ("https://mesh.test/svc/orders", "scheme 'https' is not 'spiffe'"),
    ("SPIFFE://mesh.test/svc/orders", "scheme must be lowercase"),
    ("spiffe:/mesh.test", "does not start with 'spiffe://'"),
    ("spiffe://", "no trust domain"),
    ("spiffe:///svc/orders", "no trust domain"),
    ("spiffe://Mesh.test/svc", "uppercase"),
    ("spiffe://mesh.test:8443/svc", "port"),
    ("spiffe://user@mesh.test/svc", "userinfo"),
    ("spiffe://user:pw@mesh.test/svc", "userinfo"),
    ("spiffe://mesh.test?x=1", "query"),
    ("spiffe://mesh.test/svc?x=1", "query"),
    ("spiffe://mesh.test#frag", "fragment"),
    ("spiffe://mesh.test/svc#frag", "fragment"),
    ("spiffe://mesh test/svc", "contains ' '"),
    ("spiffe://mesh.test/", "empty segment"),
    ("spiffe://mesh.test/svc/", "empty segment"),
    ("spiffe://mesh.test//svc", "empty segment"),
    ("spiffe://mesh.test/svc/./x", "'.' segment"),
    ("spiffe://mesh.test/svc/../x", "'..' segment"),
    ("spiffe://mesh.test/svc/a%2Fb", "percent-encoding"),
    ("spiffe://mesh.test/svc/a b", "contains ' '"),
    ("spiffe://mesh.test/svc/caf\u00e9", "contains"),
    ("spiffe://mesh.test/svc/a:b", "contains ':'"),
    ("spiffe://td/" + "a" * 2037, "2049 characters"),
    ("spiffe://" + "a" * 256, "trust domain is 256 characters"),
]


@pytest.mark.parametrize(("uri", "trust_domain", "path"), VALID)
def test_parse_accepts(uri: str, trust_domain: str, path: str) -> None:
    parsed = SpiffeId.parse(uri)
    assert parsed == SpiffeId(trust_domain, path)
    assert str(parsed) == uri


@pytest.mark.parametrize(("uri", "reason"), INVALID)
def test_parse_rejects_with_a_reason(uri: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeId, match=None) as caught:
        SpiffeId.parse(uri)
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_constructor_validates_too() -> None:
    with pytest.raises(InvalidSpiffeId, match="must be empty or start with '/'"):
        SpiffeId("mesh.test", "svc/orders")
    with pytest.raises(InvalidSpiffeId, match="uppercase"):
        SpiffeId("MESH", "")


def test_for_service_and_service_property() -> None:
    sid = SpiffeId.for_service("mesh.test", "orders")
    assert str(sid) == "spiffe://mesh.test/svc/orders"
    assert sid.service == "orders"
    assert SpiffeId.parse("spiffe://mesh.test/svc/orders/v2").service is None
    assert SpiffeId.parse("spiffe://mesh.test/ns/orders").service is None
    assert SpiffeId.parse("spiffe://mesh.test").service is None
    with pytest.raises(InvalidSpiffeId, match="service name"):
        SpiffeId.for_service("mesh.test", "Orders")
    with pytest.raises(InvalidSpiffeId, match="service name"):
        SpiffeId.for_service("mesh.test", "a/b")


@pytest.mark.parametrize("name", ["", "-x", "x-", "UP", "a/b", "a b", "x" * 64])
def test_bad_service_names(name: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        validate_service_name(name)


@pytest.mark.parametrize("name", ["", "a..b", ".a", "a.", "-a", "a-", "A", "a_b", "x" * 64])
def test_bad_node_names(name: str) -> None:
    with pytest.raises(ValueError):
        validate_node_name(name)


def test_good_node_names() -> None:
    for name in ("node-a", "n1.mesh.local", "a", "x" * 63):
        assert validate_node_name(name) == name


_td_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_seg_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
trust_domains = st.text(_td_chars, min_size=1, max_size=40)
segments = st.text(_seg_chars, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))
paths = st.lists(segments, max_size=6).map(lambda segs: "".join("/" + s for s in segs))


@given(trust_domains, paths)
def test_round_trip(trust_domain: str, path: str) -> None:
    sid = SpiffeId(trust_domain, path)
    assert SpiffeId.parse(str(sid)) == sid
    assert str(SpiffeId.parse(str(sid))) == str(sid)


@given(st.text(max_size=60))
def test_parse_never_crashes_and_accepts_only_round_trippable(text: str) -> None:
    try:
        sid = SpiffeId.parse(text)
    except InvalidSpiffeId:
        return
    assert str(sid) == text
