"""The CA's admin routes (``/v1/ca/*``, what ``peermesh ca`` and ``peermesh token`` call)."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any

import trio

from peermesh.ca import messages as m
from peermesh.ca.errors import CaForbidden, QuorumError
from peermesh.ca.flows.calls import MemberCalls
from peermesh.ca.flows.committee import CommitteeFlows
from peermesh.ca.flows.renewal import Renewal
from peermesh.ca.flows.tokens import TokenFlows
from peermesh.ca.node import CaNode, root_fingerprint
from peermesh.ca.rules import token_request
from peermesh.ca.state import CommitteeMember
from peermesh.core.durable import StorageFailed
from peermesh.core.errors import PeermeshError
from peermesh.net.admin import AdminResponse, AdminServer
from peermesh.net.rpc import Empty
from peermesh.net.tls import TlsError


def _refusal(exc: PeermeshError) -> AdminResponse:
    """A change refused by policy is 403; one the mesh cannot make now is 503; one this
    agent could not make durable (a full disk) is 507 with the reason and the way out."""
    if isinstance(exc, StorageFailed):
        return AdminResponse.json(exc.status, exc.to_dict())
    status = 403 if isinstance(exc, CaForbidden) else 503
    return AdminResponse.json(status, {"error": str(exc)})


@dataclass(eq=False)
class CaAdmin:
    """``/v1/ca/status``, ``token``, ``tokens``, ``enroll``, ``refresh`` and ``renew``."""

    node: CaNode
    calls: MemberCalls
    committee: CommitteeFlows
    tokens: TokenFlows
    renewal: Renewal

    def register(self, admin: AdminServer) -> None:
        admin.route("/v1/ca/status", self.status_route)
        admin.route("/v1/ca/token", self.token_route)
        admin.route("/v1/ca/tokens", self.tokens_route)
        admin.route("/v1/ca/enroll", self.enroll_route)
        admin.route("/v1/ca/refresh", self.refresh_route)
        admin.route("/v1/ca/renew", self.renew_route)

    async def status(self) -> dict[str, Any]:
        node = self.node
        committee = node.committee
        tls = node.ports.tls
        out: dict[str, Any] = {
            "node": node.name,
            "enabled": node.enabled,
            "phase": node.phase,
            "last_error": node.last_error,
            "signer": node.signer.identifier if node.signer else None,
            "certificate_not_after": tls.not_after.isoformat() if tls.loaded else None,
            "renewals": node.renewals,
            "bootstrap_listener": (
                f"{node.bootstrap_address[0]}:{node.bootstrap_address[1]}"
                if node.bootstrap_address
                else None
            ),
        }
        if committee is None:
            return out
        reachable: dict[str, bool] = {}

        async def probe(member: CommitteeMember) -> None:
            if member.node == node.name:
                reachable[member.node] = node.signer is not None
                return
            if not tls.loaded:
                reachable[member.node] = False
                return
            address = node.address_of(member)
            try:
                info = await self.calls.call(member.node, address, m.INFO, Empty(), timeout=2)
                reachable[member.node] = info.signer
            except PeermeshError:
                reachable[member.node] = False

        async with trio.open_nursery() as nursery:
            for member in committee.members:
                nursery.start_soon(probe, member)
        out.update(
            {
                "epoch": committee.epoch,
                "threshold": committee.threshold,
                "committee": [
                    {
                        "node": x.node,
                        "id": x.identifier,
                        "address": f"{x.address[0]}:{x.address[1]}",
                        "reachable": reachable.get(x.node, False),
                    }
                    for x in committee.members
                ],
                "reachable_signers": sum(reachable.values()),
                "group_public_key": committee.public.group_public_key.to_bytes().hex(),
            }
        )
        if committee.root_der is not None:
            out["root_fingerprint"] = root_fingerprint(committee.root_der)
            out["root_not_after"] = committee.root.not_valid_after_utc.isoformat()
        return out

    async def status_route(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        return AdminResponse.json(200, await self.status())

    async def tokens_route(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        node = self.node
        grants = node.ports.policy.compiled().join_tokens
        signer = node.signer is not None
        tokens = [
            {
                "id": g.token_id,
                "service": g.service,
                "expiresAt": (
                    None
                    if g.expires is None
                    else dt.datetime.fromtimestamp(g.expires, dt.UTC).isoformat(timespec="seconds")
                ),
                "expired": g.expires is not None and g.expires <= time.time(),
                "maxUses": g.max_uses,
                "usedHere": len(node.token_uses.get(g.token_id, ())) if signer else None,
                "source": g.source,
            }
            for g in sorted(grants.values(), key=lambda g: g.token_id)
        ]
        return AdminResponse.json(200, {"node": node.name, "signer": signer, "tokens": tokens})

    async def token_route(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        if method != b"POST":
            return AdminResponse.json(405, {"error": "POST /v1/ca/token {service, ttl, uses}"})
        try:
            service, ttl, uses = token_request(json.loads(body or b"{}"))
        except (ValueError, TypeError) as exc:
            return AdminResponse.json(400, {"error": str(exc)})
        try:
            token = await self.tokens.create(service, ttl, uses)
        except (CaForbidden, QuorumError, StorageFailed) as exc:
            return _refusal(exc)
        return AdminResponse.json(
            200,
            {
                "token": str(token),
                "id": token.token_id,
                "service": service,
                "ttl": ttl,
                "uses": uses,
            },
        )

    async def enroll_route(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        if method != b"POST":
            return AdminResponse.json(405, {"error": 'POST /v1/ca/enroll {"node": NAME}'})
        try:
            node = str(json.loads(body or b"{}")["node"])
        except (ValueError, KeyError, TypeError):
            return AdminResponse.json(400, {"error": 'POST /v1/ca/enroll {"node": NAME}'})
        try:
            return AdminResponse.json(200, await self.committee.enroll(node))
        except PeermeshError as exc:
            return _refusal(exc)

    async def refresh_route(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        if method != b"POST":
            return AdminResponse.json(405, {"error": "POST /v1/ca/refresh"})
        try:
            return AdminResponse.json(200, await self.committee.refresh())
        except PeermeshError as exc:
            return _refusal(exc)

    async def renew_route(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        """Renew now (after a suspected key leak, or to test issuance) instead of at half-life."""
        if method != b"POST":
            return AdminResponse.json(405, {"error": "POST /v1/ca/renew"})
        node = self.node
        tls = node.ports.tls
        if not tls.loaded or node.committee is None:
            return AdminResponse.json(503, {"error": f"{node.name} has no certificate to renew"})
        try:
            result = await self.renewal.renew()
        except (QuorumError, TlsError, OSError) as exc:
            return AdminResponse.json(503, {"error": f"renewal failed: {exc}"})
        return AdminResponse.json(
            200,
            {
                "identity": str(tls.identity),
                "not_after": tls.certificate.not_valid_after_utc.isoformat(),
                "signers": list(result.signers),
            },
        )
