"""Hypothesis drives every admin route and every control method of a real agent with hostile
bodies; afterwards the agent still serves and its policy and membership are as before.

The agents run in the test's trio loop on loopback sockets; control calls go over the
agents' own mTLS HTTP/2 pool (dev-CA identities), admin calls over plain HTTP/1.1. The
examples are generated in a worker thread, each one sent with ``trio.from_thread.run``.
"""

from __future__ import annotations

import json
import socket
import subprocess

import httpx
import msgpack
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peermesh.agent import Agent
from peermesh.core.endpoint import Endpoint
from peermesh.net.admin_guard import ADMIN_HEADERS
from peermesh.net.rpc.router import CONTENT_TYPE, PREFIX
from tests.support.meshkit import eventually, gossip_mesh, lone_agent

NODES = {"node-1": "web", "node-2": "orders"}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
_json_values = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_wire_values = st.recursive(
    _leaf | st.binary(max_size=64),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_deep = st.integers(min_value=1, max_value=20_000)
_huge = st.sampled_from(
    [b"1e999", b"-1e999", b"9" * 5000, b"18446744073709551616", b"NaN", b"Infinity", b"-0.0"]
)


def _json_body(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


#: Random bytes, deep nesting, huge numbers, JSON of the wrong shape.
admin_bodies = st.one_of(
    st.binary(max_size=512),
    _deep.map(lambda n: b"[" * n + b"]" * n),
    _deep.map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    _huge.map(lambda n: b'{"objects": [' + n + b'], "service": ' + n + b', "address": ' + n + b"}"),
    _json_values.map(_json_body),
    _json_values.map(lambda v: _json_body({"objects": [v], "service": v, "node": v, "address": v})),
)
#: The same for msgpack: random bytes, nested fixarrays, extreme numbers, wrong types.
rpc_bodies = st.one_of(
    st.binary(max_size=512),
    _deep.map(lambda n: b"\x91" * n + b"\xc0"),
    st.sampled_from([2**64 - 1, -(2**63), float("inf"), float("nan"), 1e308]).map(
        lambda n: msgpack.packb({"update": n, "sv": n, "state": n, "service": n})
    ),
    _wire_values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
)


def _state(agent: Agent) -> tuple[str, frozenset[tuple[str, str]]]:
    assert agent.membership is not None
    members = frozenset((m.name, m.state.name) for m in agent.membership.swim.members())
    return agent.policy.digest(), members


async def _raw_rpc(caller: Agent, target: Agent, method: str, body: bytes) -> int:
    """One control call with ``body`` as its exact bytes, over ``caller``'s mTLS pool."""
    host, port = target.addresses["inbound"]
    endpoint = Endpoint(service="", host=host, port=port)
    session = await caller.pool.session_for(endpoint, expect=None)
    stream = await session.open_stream(
        [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", endpoint.address.encode()),
            (b":path", (PREFIX + method).encode()),
            (b"content-type", CONTENT_TYPE),
            (b"content-length", str(len(body)).encode()),
        ]
    )
    try:
        await stream.send_data(body, end_stream=True)
        headers = await stream.receive_headers()
        while await stream.receive_data():
            pass
    finally:
        if not stream.closed:
            stream.reset()
    return next(int(v) for n, v in headers if n == b":status")


async def test_hostile_bodies_on_every_route_and_method_leave_the_agent_as_it_was(tmp_path):
    async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=30) as client:
        caller, target = await gossip_mesh(tmp_path, nursery, NODES)
        await eventually(
            lambda: target.membership is not None and target.membership.swim.num_live == 2
        )
        before = _state(target)
        host, port = target.addresses["admin"]
        base = f"http://{host}:{port}"
        routes = sorted(prefix for prefix, _ in target.admin._routes)
        methods = target.control.methods
        statuses: dict[str, set[int]] = {}

        async def admin(route: str, verb: str, body: bytes) -> None:
            r = await client.request(verb, base + route, content=body, headers=ADMIN_HEADERS)
            statuses.setdefault(route, set()).add(r.status_code)
            assert r.status_code < 600
            assert (await client.get(base + "/healthz")).status_code == 200

        async def rpc(method: str, body: bytes) -> None:
            status = await _raw_rpc(caller, target, method, body)
            statuses.setdefault(method, set()).add(status)
            assert status < 600

        @FUZZ
        @given(
            route=st.sampled_from(routes),
            verb=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
            body=admin_bodies,
        )
        def fuzz_admin(route: str, verb: str, body: bytes) -> None:
            trio.from_thread.run(admin, route, verb, body)

        @FUZZ
        @given(method=st.sampled_from(methods), body=rpc_bodies)
        def fuzz_rpc(method: str, body: bytes) -> None:
            trio.from_thread.run(rpc, method, body)

        # Every route and method at least once, whatever the generator draws.
        for route in routes:
            await admin(route, "POST", b"[" * 50_000 + b"]" * 50_000)
        for method in methods:
            await rpc(method, b"\x91" * 50_000 + b"\xc0")
        await trio.to_thread.run_sync(fuzz_admin)
        await trio.to_thread.run_sync(fuzz_rpc)

        # Alive, serving, and exactly as before; every route and method was driven.
        assert set(statuses) >= set(routes) | set(methods), set(routes) | set(methods) - set(
            statuses
        )
        assert (await client.get(base + "/readyz")).status_code == 200
        assert _state(target) == before
        print("statuses seen:", {k: sorted(v) for k, v in sorted(statuses.items())})
        nursery.cancel_scope.cancel()


def _internal_errors(agent: Agent, component: str) -> float:
    value = agent.metrics.registry.get_sample_value(
        "peermesh_internal_errors_total", {"component": component}
    )
    return value or 0.0


async def test_a_failing_route_method_datagram_or_exchange_is_isolated_and_counted(tmp_path):
    """Bugs we do not know of yet, injected: each costs one answer, never the agent."""

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected fault")

    async def boom_async(*args: object, **kwargs: object) -> None:
        boom()

    async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=30) as client:
        caller, target = await gossip_mesh(tmp_path, nursery, NODES)
        assert target.membership is not None and target.replicator is not None
        await eventually(lambda: target.membership.swim.num_live == 2)  # type: ignore[union-attr]
        host, port = target.addresses["admin"]
        base = f"http://{host}:{port}"
        # An admin route.
        target.admin.route("/v1/boom", boom_async)
        r = await client.get(base + "/v1/boom")
        assert r.status_code == 500 and "logged the traceback" in r.json()["error"]
        assert _internal_errors(target, "admin") == 1
        # A control method, called over mTLS by the other agent.
        served = target.control._handlers["ping"]
        served.handler, real = boom_async, served.handler
        assert await _raw_rpc(caller, target, "ping", msgpack.packb({})) == 500
        served.handler = real
        assert _internal_errors(target, "control") == 1
        # A gossip datagram the core chokes on: dropped, and membership goes on.
        swim = target.membership.swim
        real_handle = swim.handle_datagram
        swim.handle_datagram = boom  # type: ignore[method-assign]
        await eventually(lambda: _internal_errors(target, "gossip") >= 1)
        swim.handle_datagram = real_handle  # type: ignore[method-assign]
        # A policy exchange with a peer.
        real_sync = target.replicator.sync_with
        target.replicator.sync_with = boom_async  # type: ignore[method-assign]
        await eventually(lambda: _internal_errors(target, "replicator") >= 1)
        target.replicator.sync_with = real_sync  # type: ignore[method-assign]
        # Everything still works: admin, control, gossip, policy replication.
        assert (await client.get(base + "/readyz")).status_code == 200
        assert await _raw_rpc(caller, target, "ping", msgpack.packb({})) == 200
        route = {
            "kind": "Route",
            "name": "after",
            "spec": {"host": "web", "http": [{"route": [{"destination": {"host": "web"}}]}]},
        }
        caller_admin = "http://{}:{}".format(*caller.addresses["admin"])
        r = await client.put(
            caller_admin + "/v1/policy", json={"objects": [route]}, headers=ADMIN_HEADERS
        )
        assert r.status_code == 200, r.text
        await eventually(lambda: target.policy.get("Route", "after") is not None)
        assert target.membership.swim.num_live == 2
        metrics = (await client.get(base + "/metrics")).text
        assert 'peermesh_internal_errors_total{component="gossip"}' in metrics
        nursery.cancel_scope.cancel()


def test_a_listener_that_cannot_open_still_stops_the_agent_clearly(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        admin = taken.getsockname()[1]
        cmd, _ = lone_agent(tmp_path, admin)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"cannot listen for admin on 127.0.0.1:{admin}" in done.stderr
    assert "Traceback" not in done.stderr
