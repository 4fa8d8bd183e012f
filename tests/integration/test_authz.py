"""Authorization enforced on the inbound side with the caller's verified SPIFFE ID."""

from __future__ import annotations

import httpx

from peermesh.net.admin_guard import ADMIN_HEADERS
from tests.support.meshkit import eventually, two_agents

ORDERS_ALLOW_OTHERS = {
    "kind": "AuthorizationPolicy",
    "name": "orders-allow-billing",
    "spec": {
        "service": "orders",
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": ["spiffe://mesh.test/svc/billing"]}}]}],
    },
}
ORDERS_ALLOW_FRONTEND_GET = {
    "kind": "AuthorizationPolicy",
    "name": "orders-allow-frontend",
    "spec": {
        "service": "orders",
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"principals": ["spiffe://mesh.test/svc/frontend"]}}],
                "to": [{"operation": {"methods": ["GET"]}}],
            }
        ],
    },
}
ORDERS_DENY_ADMIN = {
    "kind": "AuthorizationPolicy",
    "name": "orders-deny-admin",
    "spec": {
        "service": "orders",
        "action": "DENY",
        "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}],
    },
}
DEFAULT_DENY = {
    "kind": "MeshConfig",
    "name": "default",
    "spec": {"defaultInboundPolicy": "DENY"},
}


async def test_allow_deny_default_and_live_change_without_reconnect(tmp_path):
    async with two_agents(tmp_path) as mesh, httpx.AsyncClient() as client:
        url = mesh.outbound_url
        ah, ap = mesh.client.addresses["admin"]  # edits go to the *client's* agent

        async def apply(*objects: dict) -> None:
            r = await client.put(
                f"http://{ah}:{ap}/v1/policy",
                json={"objects": list(objects)},
                headers=ADMIN_HEADERS,
            )
            assert r.status_code == 200, r.text

        async def get(path: str = "/", method: str = "GET") -> httpx.Response:
            return await client.request(method, url + path, headers={"host": "orders"})

        assert (await get()).status_code == 200  # mesh default: authenticated callers allowed
        await apply(ORDERS_ALLOW_OTHERS)
        await eventually(
            lambda: mesh.server.policy.get("AuthorizationPolicy", "orders-allow-billing")
        )
        denied = await get()
        assert denied.status_code == 403
        assert denied.headers["x-peermesh-error"] == "denied"
        assert "orders-allow-billing" in denied.text
        await apply(ORDERS_ALLOW_FRONTEND_GET, ORDERS_DENY_ADMIN)
        await eventually(lambda: mesh.server.policy.get("AuthorizationPolicy", "orders-deny-admin"))
        assert (await get()).status_code == 200  # allowed principal passes
        post = await get("/echo", "POST")
        assert post.status_code == 403  # method not in the ALLOW rule
        admin = await get("/admin/x")
        assert admin.status_code == 403 and "orders-deny-admin" in admin.text  # DENY first
        # Default deny when no ALLOW policy selects the service.
        for name in ("orders-allow-billing", "orders-allow-frontend", "orders-deny-admin"):
            r = await client.delete(
                f"http://{ah}:{ap}/v1/policy/AuthorizationPolicy/{name}", headers=ADMIN_HEADERS
            )
            assert r.status_code == 200
        await apply(DEFAULT_DENY)
        await eventually(lambda: mesh.server.policy.get("MeshConfig", "default") is not None)
        await eventually(
            lambda: mesh.server.policy.get("AuthorizationPolicy", "orders-deny-admin") is None
        )
        default = await get()
        assert default.status_code == 403 and "default" in default.text.lower()
        # Every decision above changed without a new connection between the agents.
        assert mesh.client.pool.dials == 1
        denials = mesh.server.metrics.authz_denials
        assert denials.labels("orders-deny-admin", "DENY")._value.get() == 1
