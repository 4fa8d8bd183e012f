"""Admin API for policy (``/v1/policy/...`` on the loopback admin port), JSON in and out.

| method | path | does |
| --- | --- | --- |
| GET | /v1/policy[?kind=K] | every winning object |
| GET | /v1/policy/KIND/NAME | one object |
| GET | /v1/policy/KIND/NAME/history | every edit of it, which won |
| PUT | /v1/policy | ``{"objects": [...]}``: validate all, apply together |
| POST | /v1/policy/diff | ``{"objects": [...]}``: what ``PUT`` would change |
| DELETE | /v1/policy/KIND/NAME | delete (a tombstone version) |
| GET | /v1/policy/status | version and digests here and at every peer |

Validation errors come back as ``400`` with the structured ``PolicyError.to_dict()``. Edits
(PUT, DELETE) on an agent whose identity MeshConfig ``admins`` does not list get ``403``
(records it signed would never be in effect); before the agent has a certificate they get
``503`` "no identity yet". An edit that cannot be made durable (a full or failing disk)
gets ``507`` with the reason and nothing of it is kept; the same edit succeeds once
space returns.

``CommitteeChange`` records are written only by the CA when it changes the
committee (through :meth:`PolicyAdmin.apply`, not these routes): a PUT, DELETE or peer
edit naming one gets ``400``, so the audit trail holds only what the CA did.

Where the admin set is anchored in the root key (threshold-CA mode), a ``PUT`` whose
MeshConfig changes ``admins`` first has the signer committee endorse the change (the
:class:`Endorser` handle); only then is the record written. Without a quorum the edit
gets ``503`` with the reason and a hint, a signer's refusal ``403``, and nothing is
written either way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import trio

from peermesh.core.durable import StorageFailed
from peermesh.core.endpoint import Endpoint
from peermesh.core.errors import PeermeshError
from peermesh.net.admin import AdminResponse
from peermesh.net.rpc import Empty, RpcError
from peermesh.policy.anchor import AdminEndorsement
from peermesh.policy.authority import AUTHORITY_KIND, Authority
from peermesh.policy.errors import EndorsementRequired, NoIdentity, NotAdmin, PolicyError
from peermesh.policy.messages import MAX_OBJECTS_PER_REQUEST, STATUS, EditReply
from peermesh.policy.model import COMMITTEE_CHANGE, KINDS, PolicyObject
from peermesh.policy.records import content_hash
from peermesh.policy.replicator import PolicyReplicator
from peermesh.policy.store import PolicyStore
from peermesh.policy.validate import MAX_OBJECT_BYTES, canonical_json, check_object


class Endorser(Protocol):
    """Has the signer committee endorse an admin-set change (the threshold CA does).

    Raises a ``PeermeshError``: 503 without a quorum, 403 when signers refuse.
    """

    async def endorse_admin_set(
        self, previous: frozenset[str], epoch: int, admins: frozenset[str], version: str
    ) -> AdminEndorsement:
        """``version``: the content hash of the MeshConfig version to be written."""


class PolicyAdmin:
    """Serves the policy routes of the admin API."""

    def __init__(
        self,
        store: PolicyStore,
        replicator: PolicyReplicator,
        known_services: Callable[[], Collection[str]],
        endorser: Endorser | None = None,
    ) -> None:
        self.store = store
        self.replicator = replicator
        self.known_services = known_services
        self.endorser = endorser

    async def handle(self, method: bytes, path: str, body: bytes) -> AdminResponse:
        parts = urlsplit(path)
        segments = [s for s in parts.path.split("/") if s][2:]  # drop "v1", "policy"
        query = parse_qs(parts.query)
        try:
            if segments == ["status"] and method == b"GET":
                return AdminResponse.json(200, await self.status())
            if segments == ["diff"] and method == b"POST":
                return self.diff(_objects_from(body))
            if not segments:
                if method == b"GET":
                    kind = query.get("kind", [None])[0]
                    if kind is not None and kind not in KINDS:
                        return _error(404, f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
                    return AdminResponse.json(200, {"objects": self._list(kind)})
                if method == b"PUT":
                    return await self.apply_endorsed(_objects_from(body), source="admin API")
            if len(segments) in (2, 3):
                kind, name = segments[0], segments[1]
                if kind not in KINDS:
                    return _error(404, f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
                if len(segments) == 3 and segments[2] == "history" and method == b"GET":
                    entries = self.store.history(kind, name)
                    if not entries:
                        return _error(404, f"{kind}/{name} has no history here")
                    return AdminResponse.json(200, {"history": [e.to_dict() for e in entries]})
                if len(segments) == 2 and method == b"GET":
                    obj = self.store.get(kind, name)
                    if obj is None:
                        return _error(404, f"{kind}/{name} does not exist")
                    return AdminResponse.json(200, obj.to_dict())
                if len(segments) == 2 and method == b"DELETE":
                    if kind == COMMITTEE_CHANGE:
                        raise _BadRequest(_RECORD_ONLY)
                    if self.store.get(kind, name) is None:
                        return _error(404, f"{kind}/{name} does not exist")
                    report = self.store.delete([(kind, name)], now=time.time())
                    self.replicator.spread(report.update)
                    return AdminResponse.json(
                        200, {"deleted": f"{kind}/{name}", "version": report.version}
                    )
            return _error(404, f"no policy route for {method.decode()} {parts.path}")
        except PolicyError as exc:
            return AdminResponse.json(exc.status, exc.to_dict())
        except (_BadRequest, NotAdmin, NoIdentity) as exc:
            return _error(exc.status, str(exc))
        except EndorsementRequired as exc:
            return AdminResponse.json(exc.status, exc.to_dict())
        except StorageFailed as exc:
            return AdminResponse.json(exc.status, exc.to_dict())

    def _list(self, kind: str | None) -> list[dict[str, Any]]:
        return [obj.to_dict() for obj in self.store.objects(kind)]

    def apply(self, objects: Sequence[Mapping[str, Any]], *, source: str) -> AdminResponse:
        """Validate every object, then write them together (or nothing).

        Answers 403 (this agent's identity is not a MeshConfig admin) or 503 (no identity
        yet) without raising; raises :class:`PolicyError` for invalid objects.
        """
        try:
            return AdminResponse.json(200, self._apply(objects, source=source).to_wire())
        except (NotAdmin, NoIdentity) as exc:
            return _error(exc.status, str(exc))
        except EndorsementRequired as exc:
            return AdminResponse.json(exc.status, exc.to_dict())

    async def apply_endorsed(
        self, objects: Sequence[Mapping[str, Any]], *, source: str
    ) -> AdminResponse:
        """:meth:`apply`, first having the committee endorse an admin-set change in it."""
        config = _mesh_config_of(objects)
        admins = frozenset(getattr(config.spec, "admins", ())) if config else None
        if (
            config is None
            or admins is None
            or self.endorser is None
            or not self.store.needs_endorsement(admins)
        ):
            return self.apply(objects, source=source)
        version = content_hash(canonical_json(config))
        try:
            author = self.store.check_author()
        except (NotAdmin, NoIdentity) as exc:
            return _error(exc.status, str(exc))
        if author is not None:
            parsed, problems = zip(*(check_object(o) for o in objects), strict=True)
            errors = [p for ps in problems for p in ps]
            if errors:
                raise PolicyError.collect(errors)
            Authority.check_lockout(author, [p for p in parsed if p is not None], ())
        previous, epoch = self.store.admins, self.store.admin_epoch + 1
        try:
            endorsement = await self.endorser.endorse_admin_set(previous, epoch, admins, version)
        except PeermeshError as exc:
            body = exc.to_dict()
            body["error"] = f"the signer committee did not endorse this admin-set change: {exc}"
            if exc.status >= 500:
                body.setdefault(
                    "hint",
                    "changing MeshConfig admins needs t reachable signers; retry once a"
                    " quorum is up (`peermesh ca status` shows the reachable signers)",
                )
            return AdminResponse.json(exc.status, body)
        try:
            reply = self._apply(objects, source=source, endorsement=endorsement)
        except (NotAdmin, NoIdentity) as exc:
            return _error(exc.status, str(exc))
        except EndorsementRequired as exc:
            return AdminResponse.json(exc.status, exc.to_dict())
        return AdminResponse.json(200, reply.to_wire())

    def _apply(
        self,
        objects: Sequence[Mapping[str, Any]],
        *,
        source: str,
        endorsement: AdminEndorsement | None = None,
    ) -> EditReply:
        report = self.store.apply(
            objects,
            now=time.time(),
            known_services=self.known_services(),
            endorsement=endorsement,
        )
        self.replicator.spread(report.update)
        return EditReply(
            version=report.version,
            changed=report.changed,
            unchanged=report.unchanged,
            edits=report.edits,
            warnings=report.warnings,
            source=source,
        )

    def apply_from_peer(self, objects: Sequence[Any], principal: str) -> EditReply:
        """A MeshConfig admin's edit arriving over mTLS (``policy/edit``).

        The records are signed by *this* agent, so this agent's identity must be an admin
        too (403 otherwise), and it must have an identity (503).
        """
        try:
            return self._apply(_checked_list(objects), source=principal)
        except NotAdmin as exc:
            raise RpcError(
                exc.status, f"this agent cannot write effective policy: {exc}", code=exc.code
            ) from None
        except (NoIdentity, EndorsementRequired) as exc:
            raise RpcError(exc.status, str(exc), code=exc.code) from None

    def diff(self, objects: Sequence[Mapping[str, Any]]) -> AdminResponse:
        """What applying ``objects`` would change, without changing anything."""
        changes: list[dict[str, Any]] = []
        errors: list[PolicyError] = []
        for item in objects:
            obj, problems = check_object(item)
            errors.extend(problems)
            if obj is None:
                continue
            current = self.store.get(obj.kind, obj.name)
            if current is None:
                changes.append({"object": obj.key, "change": "create", "after": obj.to_dict()})
            elif canonical_json(current) != canonical_json(obj):
                changes.append(
                    {
                        "object": obj.key,
                        "change": "update",
                        "before": current.to_dict(),
                        "after": obj.to_dict(),
                    }
                )
            else:
                changes.append({"object": obj.key, "change": "unchanged"})
        if errors:
            raise PolicyError.collect(errors)
        return AdminResponse.json(200, {"changes": changes})

    async def status(self) -> dict[str, Any]:
        """Our version/digest and every reachable peer's, so convergence is visible."""
        here = self.replicator.local_status()
        peers: list[dict[str, Any]] = []

        async def ask(peer: Any) -> None:
            endpoint = Endpoint(service="", host=peer.host, port=peer.port, node=peer.node)
            try:
                theirs = await self.replicator.control.call(endpoint, STATUS, Empty(), timeout=3.0)
                peers.append({"node": peer.node, **theirs.to_wire(), "reachable": True})
            except RpcError as exc:
                peers.append({"node": peer.node, "reachable": False, "error": str(exc)})

        async with trio.open_nursery() as nursery:
            for peer in self.replicator.peers():
                nursery.start_soon(ask, peer)
        peers.sort(key=lambda p: p["node"])
        converged = all(p.get("digest") == here["digest"] for p in peers if p["reachable"])
        return {
            "here": here,
            "peers": peers,
            "converged_with_reachable_peers": converged,
            "replication": {
                "pushes_sent": self.replicator.pushes_sent,
                "pushes_failed": self.replicator.pushes_failed,
                "syncs": self.replicator.syncs,
                "bytes_sent": self.replicator.sync_bytes_sent,
                "bytes_received": self.replicator.sync_bytes_received,
                "refused_updates": self.replicator.refused,
                "last_refusal": self.replicator.last_refusal,
            },
        }


class _BadRequest(PeermeshError, ValueError):
    """A request body that is not ``{"objects": [...]}`` (or too big to look at)."""

    default_status = 400
    default_code = "bad-request"


def _objects_from(body: bytes) -> list[Mapping[str, Any]]:
    if len(body) > MAX_OBJECTS_PER_REQUEST * MAX_OBJECT_BYTES:
        raise _BadRequest("request body too large")
    try:
        data = json.loads(body or b"null")
    except ValueError as exc:
        raise _BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
        raise _BadRequest('body must be {"objects": [ {kind, name, spec}, ... ]}')
    return _checked_list(data["objects"])


_RECORD_ONLY = (
    f"{COMMITTEE_CHANGE} objects record committee changes and are written only by the CA"
    " when it makes one (`peermesh ca enroll`, `peermesh ca refresh`)"
)


def _checked_list(objects: Sequence[Any]) -> list[Mapping[str, Any]]:
    if len(objects) > MAX_OBJECTS_PER_REQUEST:
        raise _BadRequest(f"at most {MAX_OBJECTS_PER_REQUEST} objects per request")
    for i, item in enumerate(objects):
        if not isinstance(item, dict):
            raise _BadRequest(f"objects[{i}] is a {type(item).__name__}, not an object")
        if item.get("kind") == COMMITTEE_CHANGE:
            raise _BadRequest(f"objects[{i}]: {_RECORD_ONLY}")
    return list(objects)


def _mesh_config_of(objects: Sequence[Mapping[str, Any]]) -> PolicyObject | None:
    """The (last) MeshConfig in ``objects``, if it is valid; else None."""
    for item in reversed(objects):
        if item.get("kind") == AUTHORITY_KIND:
            obj, problems = check_object(item)
            return None if obj is None or problems else obj
    return None


def _error(status: int, message: str) -> AdminResponse:
    return AdminResponse.json(status, {"error": message})
