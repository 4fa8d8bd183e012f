"""The gossip wire format: round trips, refusal of bad datagrams, keyring rotation, keyfiles."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossip.codec import (
    KEY_SIZE,
    MAX_DATAGRAM,
    SEALED_OVERHEAD,
    Codec,
    DropReason,
    KeyfileError,
    Keyring,
    decode_meta,
    decode_state,
    encode_message,
    encode_state,
    format_keyfile,
    generate_gossip_key,
    key_id,
    load_keyring,
    parse_keyfile,
    save_keyring,
)
from gossip.errors import GossipConfigError, GossipError, MetadataError
from gossip.messages import (
    Ack,
    Alive,
    Compound,
    Dead,
    IndirectPing,
    MemberState,
    Message,
    Nack,
    NodeMeta,
    Ping,
    PushPullEntry,
    PushPullState,
    Service,
    Suspect,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
KEY_C = bytes(range(2, 34))

# --- strategies ------------------------------------------------------------------------

names = st.text(min_size=1, max_size=24)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
ports = st.integers(min_value=0, max_value=65535)
labels = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
metas = st.builds(
    NodeMeta.create,
    st.lists(st.text(min_size=1, max_size=15), min_size=1, max_size=3),
    gossip_port=ports,
    inbound_port=ports,
    services=st.dictionaries(st.text(min_size=1, max_size=8), labels, max_size=3),
    version=u64,
)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ping, u32, st.none() | names, st.booleans()),
    st.builds(IndirectPing, u32, names, st.tuples(st.text(max_size=15), ports), st.booleans()),
    st.builds(Ack, u32),
    st.builds(Nack, u32),
    st.builds(Alive, names, u64, metas),
    st.builds(Suspect, names, u64, names),
    st.builds(Dead, names, u64, names),
)


def sealed(name: str, *keys: bytes, epoch: int = 1) -> Codec:
    return Codec(name, keyring=Keyring(keys or (KEY_A,)), epoch=epoch)


# --- round trips -------------------------------------------------------------------------


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=0, max_size=6))
def test_sealed_round_trip(msgs: list[Message]) -> None:
    tx, rx = sealed("alice"), sealed("bob")
    data = tx.encode(msgs)
    assert len(data) <= MAX_DATAGRAM
    assert rx.decode(data) == Compound("alice", tuple(msgs))


@settings(max_examples=100)
@given(st.lists(messages, min_size=1, max_size=6))
def test_insecure_round_trip(msgs: list[Message]) -> None:
    tx, rx = Codec("alice", insecure=True), Codec("bob", insecure=True)
    assert rx.decode(tx.encode(msgs)) == Compound("alice", tuple(msgs))


@settings(max_examples=50)
@given(names, st.lists(st.builds(PushPullEntry, names, u64, st.sampled_from(MemberState), metas)))
def test_push_pull_state_round_trip(sender: str, entries: list[PushPullEntry]) -> None:
    state = PushPullState(sender, tuple(entries))
    assert decode_state(encode_state(state)) == state


def test_metadata_keeps_services_and_labels() -> None:
    meta = NodeMeta.create(
        "10.0.0.7",
        services={"orders": {"version": "v2", "zone": "a"}, "pay": {}},
        version=3,
    )
    rx = Codec("bob", insecure=True)
    got = rx.decode(Codec("alice", insecure=True).encode([Alive("alice", 9, meta)]))
    assert isinstance(got, Compound)
    alive = got.messages[0]
    assert isinstance(alive, Alive)
    assert alive.meta.services_map() == {"orders": {"version": "v2", "zone": "a"}, "pay": {}}
    orders = alive.meta.service("orders")
    assert orders == Service("orders", (("version", "v2"), ("zone", "a")))
    assert orders.label("version") == "v2"
    assert alive.meta.gossip_addr == ("10.0.0.7", 15946)
    assert alive.meta.with_services({"orders": {"version": "v3"}}).version == 4


def test_budget_fills_a_datagram_without_exceeding_it() -> None:
    tx = sealed("alice")
    one = encode_message(Dead("some-node-name", 12345, "another-node"))
    parts = [one] * (tx.budget // len(one))
    data = tx.seal(parts)
    assert len(data) <= MAX_DATAGRAM
    assert len(sealed("bob").decode(data).messages) == len(parts)  # type: ignore[union-attr]


def test_encoding_too_much_is_a_caller_error() -> None:
    tx = sealed("alice")
    with pytest.raises(ValueError, match="exceeds"):
        tx.encode([Dead("x" * 200, 1, "y" * 200)] * 10)


# --- refusal of bad datagrams --------------------------------------------------------------


def only_drop(codec: Codec, reason: DropReason) -> None:
    """Exactly one datagram was dropped, for ``reason``, and nothing was accepted."""
    assert codec.drops[reason] == 1, codec.drops
    assert codec.dropped == 1
    assert codec.accepted == 0


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_random_bytes_are_dropped_never_raised(data: bytes) -> None:
    for rx in (sealed("bob"), Codec("bob", insecure=True)):
        result = rx.decode(data)
        assert isinstance(result, DropReason)
        assert rx.dropped == 1


@settings(max_examples=100)
@given(st.binary(max_size=600))
def test_random_plaintext_bodies_are_dropped(body: bytes) -> None:
    rx = Codec("bob", insecure=True)
    result = rx.decode(b"\x02" + body)
    if not isinstance(result, DropReason):  # astronomically unlikely, but then it is valid
        assert isinstance(result, Compound)


def test_truncated_msgpack_is_malformed() -> None:
    tx, rx = Codec("alice", insecure=True), Codec("bob", insecure=True)
    data = tx.encode([Ping(1, "bob"), Suspect("carol", 3, "alice")])
    assert rx.decode(data[:-3]) == DropReason.MALFORMED
    only_drop(rx, DropReason.MALFORMED)


def test_truncated_sealed_datagram_fails_authentication() -> None:
    data = sealed("alice").encode([Ping(1, "bob")])
    rx = sealed("bob")
    assert rx.decode(data[:-1]) == DropReason.AUTH_FAILED
    assert rx.decode(data[:10]) == DropReason.TRUNCATED
    assert rx.decode(b"") == DropReason.TRUNCATED


def test_wrong_key_fails_authentication() -> None:
    data = sealed("alice", KEY_A).encode([Ping(1, "bob")])
    rx = sealed("bob", KEY_B)
    assert rx.decode(data) == DropReason.AUTH_FAILED
    only_drop(rx, DropReason.AUTH_FAILED)


def test_tampered_header_fails_authentication() -> None:
    data = bytearray(sealed("alice").encode([Ping(1, "bob")]))
    data[2] ^= 1  # the key id is associated data
    assert sealed("bob").decode(bytes(data)) == DropReason.AUTH_FAILED


def test_replay_is_dropped_and_reordering_is_not() -> None:
    tx, rx = sealed("alice"), sealed("bob")
    first, second, third = (tx.encode([Ping(i, "bob")]) for i in range(3))
    assert isinstance(rx.decode(first), Compound)
    assert isinstance(rx.decode(third), Compound)
    assert isinstance(rx.decode(second), Compound)  # late but new: accepted
    assert rx.decode(second) == DropReason.REPLAYED
    assert rx.decode(first) == DropReason.REPLAYED
    assert rx.drops[DropReason.REPLAYED] == 2


def test_replay_window_and_restart_epochs() -> None:
    rx = sealed("bob")
    old_life = sealed("alice", epoch=100)
    stale = old_life.encode([Ping(1, "bob")])
    for _ in range(rx.replay_window + 1):
        old_life.encode([Ping(2, "bob")])
    assert isinstance(rx.decode(old_life.encode([Ping(3, "bob")])), Compound)
    assert rx.decode(stale) == DropReason.REPLAYED  # fell out of the window
    new_life = sealed("alice", epoch=200)  # restarted: a larger epoch, seq starts over
    assert isinstance(rx.decode(new_life.encode([Ping(1, "bob")])), Compound)
    assert rx.decode(old_life.encode([Ping(4, "bob")])) == DropReason.REPLAYED


def test_oversized_datagram_is_dropped() -> None:
    rx = sealed("bob")
    assert rx.decode(b"\x01" + os.urandom(MAX_DATAGRAM)) == DropReason.OVERSIZED
    only_drop(rx, DropReason.OVERSIZED)


def test_mode_mismatch_is_refused_both_ways() -> None:
    plain = Codec("alice", insecure=True).encode([Ping(1, "bob")])
    secret = sealed("alice").encode([Ping(1, "bob")])
    strict, lax = sealed("bob"), Codec("bob", insecure=True)
    assert strict.decode(plain) == DropReason.PLAINTEXT_REFUSED
    assert lax.decode(secret) == DropReason.ENCRYPTED_REFUSED


def test_reflected_and_unknown_version_are_dropped() -> None:
    tx = sealed("alice")
    assert tx.decode(tx.encode([Ping(1, "alice")])) == DropReason.REFLECTED
    assert tx.decode(b"\x7f" + bytes(40)) == DropReason.UNKNOWN_VERSION


def test_schema_violations_are_malformed() -> None:
    rx = Codec("bob", insecure=True)
    bad_bodies = [
        ["alice", 1, 1, [[4, "carol", -1, b""]]],  # negative incarnation
        ["alice", 1, 1, [[4, "carol", 1, b"not metadata"]]],
        ["alice", 1, 1, [[0, 2**40, "bob"]]],  # sequence out of range
        ["alice", 1, 1, [[9, 1]]],  # unknown tag
        ["alice", 1, 1, [[True, 1]]],  # a bool is not a tag
        ["alice", 1, 1, [[5, "carol", 1]]],  # short
        ["alice", 1, 1, "not a list"],
        ["", 1, 1, []],  # no sender
    ]
    for body in bad_bodies:
        assert rx.decode(b"\x02" + msgpack.packb(body)) == DropReason.MALFORMED, body
    assert rx.drops[DropReason.MALFORMED] == len(bad_bodies)


def test_every_drop_reason_explains_itself() -> None:
    for reason in DropReason:
        assert len(reason.explanation) > 20


# --- keyring rotation --------------------------------------------------------------------


def test_rotation_without_restart() -> None:
    ring_tx, ring_rx = Keyring([KEY_A]), Keyring([KEY_A])
    tx = Codec("alice", keyring=ring_tx, epoch=1)
    rx = Codec("bob", keyring=ring_rx, epoch=1)

    # Step 1: the receiver installs the new key as primary; the old one still opens.
    ring_rx.add(KEY_B, primary=True)
    assert ring_rx.primary == KEY_B
    assert isinstance(rx.decode(tx.encode([Ping(1, "bob")])), Compound)
    # Step 2: the sender switches too; both keys open on the receiver.
    ring_tx.add(KEY_B)
    ring_tx.use(KEY_B)
    assert isinstance(rx.decode(tx.encode([Ping(2, "bob")])), Compound)
    straggler = Codec("carol", keyring=Keyring([KEY_A]), epoch=1)
    late = straggler.encode([Ping(3, "bob")])
    assert isinstance(rx.decode(straggler.encode([Ping(4, "bob")])), Compound)
    # Step 3: the old key is removed: its datagrams are now dropped as retired.
    ring_rx.remove(KEY_A)
    assert rx.decode(late) == DropReason.RETIRED_KEY
    assert rx.drops[DropReason.RETIRED_KEY] == 1
    # A key never installed is a plain authentication failure, not "retired".
    assert rx.decode(sealed("dave", KEY_C).encode([Ping(5, "bob")])) == DropReason.AUTH_FAILED


def test_keyring_refuses_bad_operations() -> None:
    ring = Keyring([KEY_A, KEY_B])
    assert ring.keys == (KEY_A, KEY_B)
    with pytest.raises(ValueError, match="primary"):
        ring.remove(KEY_A)
    with pytest.raises(ValueError, match="not installed"):
        ring.use(KEY_C)
    with pytest.raises(ValueError, match="32 random bytes"):
        ring.add(b"short")
    with pytest.raises(ValueError, match="at least one key"):
        Keyring([])
    ring.add(KEY_C)
    ring.remove(KEY_C)
    assert ring.is_retired(key_id(KEY_C))
    ring.add(KEY_C)  # re-installing a retired key un-retires it
    assert not ring.is_retired(key_id(KEY_C))


def test_codec_needs_a_key_or_an_explicit_insecure_mode() -> None:
    with pytest.raises(ValueError, match="insecure"):
        Codec("alice")
    with pytest.raises(ValueError, match="either"):
        Codec("alice", keyring=Keyring([KEY_A]), insecure=True)
    with pytest.raises(ValueError, match="node name"):
        Codec("", insecure=True)


# --- keyfiles ------------------------------------------------------------------------------


def test_generated_keys_are_random_aes256_keys() -> None:
    a, b = generate_gossip_key(), generate_gossip_key()
    assert len(a) == KEY_SIZE and a != b
    assert SEALED_OVERHEAD == 33


def test_keyfile_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "gossip.key"
    save_keyring(path, Keyring([KEY_B, KEY_A]))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = load_keyring(path)
    assert ring.keys == (KEY_B, KEY_A)
    assert ring.primary == KEY_B
    save_keyring(path, [KEY_C])  # replaces atomically
    assert load_keyring(path).keys == (KEY_C,)


def test_keyfile_errors_say_where_and_what_to_do(tmp_path: Path) -> None:
    text = format_keyfile([KEY_A])
    assert parse_keyfile(text + "\n# a comment\n\n") == [KEY_A]
    with pytest.raises(KeyfileError, match="line 1 is not base64"):
        parse_keyfile("not base64 at all!\n")
    with pytest.raises(KeyfileError, match="holds 3 bytes"):
        parse_keyfile("YWJj\n")
    with pytest.raises(KeyfileError, match="keygen gossip"):
        parse_keyfile("# only comments\n")
    bad = tmp_path / "bad.key"
    bad.write_text("YWJj\n")
    with pytest.raises(KeyfileError, match=str(bad)):
        load_keyring(bad)


def test_gossip_errors_share_one_root_and_carry_codes(tmp_path: Path) -> None:
    bad = tmp_path / "gossip.key"
    bad.write_text("not base64!\n")
    with pytest.raises(GossipError) as caught:
        load_keyring(bad)
    assert isinstance(caught.value, KeyfileError) and isinstance(caught.value, ValueError)
    assert caught.value.code == "gossip-keyfile"
    with pytest.raises(GossipConfigError) as config:
        Keyring([])
    assert config.value.code == "gossip-config"
    with pytest.raises(MetadataError):
        decode_meta(b"\x01")
