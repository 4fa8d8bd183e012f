"""CA RPC messages decode with checks; CA errors carry status and code; refusals keep a reason."""

from __future__ import annotations

from typing import Any

import pytest

from certs import frost
from certs.ed25519_group import Scalar
from peermesh.ca import channel_messages as cm
from peermesh.ca import messages as m
from peermesh.ca.dkgrelay import RunSpec
from peermesh.ca.errors import (
    CaError,
    ChannelRefused,
    QuorumError,
    RelayError,
    RosterError,
    SignerRefused,
    TokenError,
)
from peermesh.ca.flows.issue import signer_error
from peermesh.ca.state import CaStateError
from peermesh.core.errors import PeermeshError
from peermesh.core.wire import WireError
from peermesh.net.rpc import RpcError

KEY = bytes(range(32))


def _spec() -> RunSpec:
    return RunSpec("dkg", b"s" * 32, 2, {"a": (1, KEY), "b": (2, KEY), "c": (3, KEY)})


@pytest.mark.parametrize(
    "message",
    [
        m.SignAuth(m.AuthKind.RENEW),
        m.SignAuth(m.AuthKind.BOOTSTRAP, node="node-1"),
        m.SignAuth(m.AuthKind.JOIN, token_id="ab" * 6, secret="cd" * 16, service="orders"),
        m.SignRequest({"message": b"tbs", "commitments": []}, m.SignAuth(m.AuthKind.ROOT)),
        m.TokenCheckRequest("ab" * 6),
        m.TokenCheckRequest("ab" * 6, b"update"),
        m.TokenCheckReply(True, b"sv"),
        m.AdoptedReply(False),
        m.InfoReply("node-1", "orders", KEY, True, 3),
        m.InfoReply("node-1", "orders", KEY, False, None),
        m.DkgBegin(_spec()),
        m.DkgMessages(({"kind": "x"},)),
        m.DkgDeliver(b"s" * 32, ({"kind": "x"},)),
        m.DkgProgress((), True, None),
        m.DkgProgress((), False, "aborted"),
        m.DkgSession(b"s" * 32),
        m.Ok(),
        cm.RosterMessage(({"node": "a"},)),
        cm.RootMessage(b"der"),
        cm.JoinInfo(b"der", "mesh.test"),
        cm.JoinRequest("ab" * 6, "cd" * 16, b"csr"),
    ],
)
def test_messages_round_trip(message: Any) -> None:
    assert type(message).from_wire(message.to_wire()) == message


def test_signature_messages_round_trip() -> None:
    shares, _public = frost.trusted_dealer_keygen(3, 2)
    commitments = frost.commit(shares[2], frost.MemoryNonceStore())
    reply = m.CommitReply.from_wire(m.CommitReply(commitments, 4).to_wire())
    assert reply.commitments.to_wire() == commitments.to_wire() and reply.epoch == 4
    share = frost.SignatureShare(3, Scalar.ONE + Scalar.ONE)
    assert m.SignReply.from_wire(m.SignReply(share).to_wire()).share.to_wire() == share.to_wire()


def test_dkg_begin_takes_a_bare_spec_or_one_with_its_committee() -> None:
    spec = _spec()
    assert m.DkgBegin.from_wire(spec.to_wire()).spec == spec
    assert m.DkgBegin.from_wire({"spec": spec.to_wire()}).spec == spec


@pytest.mark.parametrize(
    ("kind", "raw", "names"),
    [
        (m.SignRequest, {"auth": {"kind": "renew"}}, "package"),
        (m.SignRequest, {"package": {}, "auth": {"kind": "mint"}}, "'mint' is not one of"),
        (m.SignRequest, {"package": {}, "auth": "renew"}, "ca/sign auth: expected a map"),
        (m.TokenCheckRequest, {"update": b"x"}, "ca/token/check needs {id, update?}"),
        (m.InfoReply, {"node": "a", "service": "b", "identity_key": b"k"}, "32 bytes"),
        (m.DkgBegin, {"spec": {"purpose": "dkg"}}, "run spec is malformed"),
        (m.DkgDeliver, {"messages": []}, "field 'session' is missing"),
        (m.DkgSession, {"session": "text"}, "ca/dkg/finish.session: expected bytes"),
        (m.CommitReply, {"commitments": 5}, "ca/commit reply.commitments"),
        (m.CommitteeMessage, {"epoch": 1}, "committee state is malformed"),
        (cm.JoinRequest, {"token_id": "x"}, "field 'csr' is missing"),
        (cm.JoinReply, {"cert": b"c", "committee": {}, "gossip_keys": ["k"]}, "gossip_keys"),
        (cm.RootMessage, [], "root: expected a map"),
    ],
)
def test_malformed_bodies_are_refused_by_name(kind: Any, raw: Any, names: str) -> None:
    with pytest.raises(WireError) as refused:
        kind.from_wire(raw)
    assert names in str(refused.value)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (QuorumError("2 of 3"), 503, "no-quorum"),
        (TokenError("used up"), 403, "join-token"),
        (RosterError("expects 3"), 400, "bootstrap-roster"),
        (RelayError("silent"), 400, "dkg-relay"),
        (CaStateError("corrupt"), 500, "ca-state"),
        (ChannelRefused(401, "bad MAC"), 401, "bootstrap-refused"),
    ],
)
def test_ca_errors_carry_status_and_code(error: CaError, status: int, code: str) -> None:
    assert isinstance(error, PeermeshError)
    assert (error.status, error.code) == (status, code)


def test_a_signer_refusal_keeps_the_signers_reason_not_the_call_text() -> None:
    remote = RpcError(403, "ca/sign refused by h:1 (403): node-2 refuses", reason="node-2 refuses")
    refused = signer_error(remote)
    assert isinstance(refused, SignerRefused) and str(refused) == "node-2 refuses"
    unavailable = signer_error(RpcError(503, "ca/sign to h:1: unreachable"))
    assert not isinstance(unavailable, SignerRefused)
    assert str(unavailable) == "ca/sign to h:1: unreachable"
