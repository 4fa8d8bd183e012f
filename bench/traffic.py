"""Traffic management costs: edit-to-routing propagation, and CPU with a realistic policy.

``python -m bench.traffic`` measures:

1. **Propagation**: a ``Route`` shifting ``reviews`` between subsets v1 and v2 is applied
   on the *server* agent's admin API; we time until the *client* agent routes by it
   (three answers in a row from the new subset), over ``--edits`` alternating edits.
2. **Policy cost**: agent CPU seconds per 1000 requests through two agents (h2load,
   closed loop) with no policy and with a realistic one: a Route with 3 rules, retries,
   a TrafficPolicy with subsets, and an AuthorizationPolicy with 10 rules.

Agents run as processes on loopback with gossip (labels advertised, one seed each) and
dev-CA certificates; the figures go to the ``traffic`` section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from bench._common import (
    ProcessGroup,
    busy_fraction,
    free_port,
    need_h2load,
    percentile,
    update_marked_section,
    wait_until,
)
from bench.agents import PY, Agents
from peermesh.net.admin_guard import ADMIN_HEADERS

TRUST_DOMAIN = "bench.mesh"
REALISTIC = "Route (3 rules, retries) + subsets + AuthorizationPolicy (10 rules)"


def _subsets() -> dict[str, Any]:
    return {
        "kind": "TrafficPolicy",
        "name": "reviews",
        "spec": {
            "host": "reviews",
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}},
            ],
        },
    }


def _route(subset: str) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": "reviews",
        "spec": {
            "host": "reviews",
            "http": [{"route": [{"destination": {"host": "reviews", "subset": subset}}]}],
        },
    }


def realistic_policy() -> list[dict[str, Any]]:
    """A route with 3 rules and retries, subsets, and an authorization policy with 10 rules."""
    route = {
        "kind": "Route",
        "name": "reviews",
        "spec": {
            "host": "reviews",
            "http": [
                {
                    "name": "beta",
                    "match": [{"headers": {"x-beta": {"exact": "yes"}}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                },
                {
                    "name": "admin",
                    "match": [{"uri": {"prefix": "/admin"}, "method": {"exact": "DELETE"}}],
                    "route": [{"destination": {"host": "reviews", "subset": "v1"}}],
                },
                {
                    "name": "default",
                    "route": [
                        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10},
                    ],
                    "retries": {"attempts": 2, "retryOn": "5xx,reset"},
                    "timeout": "5s",
                },
            ],
        },
    }
    rules = [
        {
            "from": [{"source": {"principals": [f"spiffe://{TRUST_DOMAIN}/svc/team-{i}"]}}],
            "to": [{"operation": {"methods": ["GET"], "paths": [f"/team-{i}/*"]}}],
        }
        for i in range(9)
    ]
    rules.append({"from": [{"source": {"principals": [f"spiffe://{TRUST_DOMAIN}/svc/frontend"]}}]})
    authz = {
        "kind": "AuthorizationPolicy",
        "name": "reviews-allow",
        "spec": {"service": "reviews", "action": "ALLOW", "rules": rules},
    }
    return [_subsets(), route, authz]


class Mesh:
    """A client agent (frontend) and two reviews backends (v1, v2), each with its app."""

    def __init__(self, work: Path, group: ProcessGroup) -> None:
        self.group = group
        self.agents = Agents(work, group, TRUST_DOMAIN)
        for node, service, version in (
            ("node-c", "frontend", ""),
            ("node-v1", "reviews", "v1"),
            ("node-v2", "reviews", "v2"),
        ):
            app = free_port()
            if version:
                group.start(
                    f"app-{version}",
                    [PY, "-m", "examples.service", "--name", service, "--port", str(app),
                     "--version", version],
                )  # fmt: skip
            flags = self.agents.gossip_flags(join="node-c" if version else None)
            if version:
                flags += ["--label", f"version={version}"]
            self.agents.start(node, service, app, *flags)
        self.agents.wait_ready()
        self.admin = self.agents.admin
        self.outbound = self.agents.outbound["node-c"]

    def apply(self, node: str, objects: list[dict[str, Any]]) -> None:
        body = json.dumps({"objects": objects}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin[node]}/v1/policy",
            data=body,
            method="PUT",
            headers={"content-type": "application/json", **ADMIN_HEADERS},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def version(self) -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.outbound}/", headers={"Host": "reviews"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.loads(response.read())["version"])

    def cpu(self) -> float:
        total = 0.0
        for node in ("node-c", "node-v1", "node-v2"):
            times = psutil.Process(self.group.procs[node].pid).cpu_times()
            total += times.user + times.system
        return total


def propagation(mesh: Mesh, edits: int) -> list[float]:
    mesh.apply("node-v1", [_subsets(), _route("v1")])
    wait_until(lambda: mesh.version() == "v1", "initial route")
    times: list[float] = []
    for i in range(edits):
        target = "v2" if i % 2 == 0 else "v1"
        started = time.perf_counter()
        mesh.apply("node-v1", [_route(target)])
        streak = 0
        while streak < 3:
            streak = streak + 1 if mesh.version() == target else 0
            if time.perf_counter() - started > 30:
                raise RuntimeError("the client never routed by the new policy")
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


def policy_cost(mesh: Mesh, h2load: str, requests: int) -> dict[str, float]:
    results: dict[str, float] = {}
    for label, objects in (("no policy", None), ("realistic policy", realistic_policy())):
        if objects is not None:
            mesh.apply("node-v1", objects)
            time.sleep(2)  # let anti-entropy reach the client agent before measuring
        before = mesh.cpu()
        started = time.perf_counter()
        done = subprocess.run(
            [h2load, "-t", "1", "-c", "4", "-m", "8", "-n", str(requests),
             "-H", ":authority: reviews", f"http://127.0.0.1:{mesh.outbound}/static"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        wall = time.perf_counter() - started
        if "succeeded" not in done.stdout:
            raise RuntimeError(f"h2load failed: {done.stdout}{done.stderr}")
        results[label] = (mesh.cpu() - before) / requests * 1000
        results[f"{label} req/s"] = requests / wall
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()
    h2load = need_h2load("bench.traffic")
    load = busy_fraction()
    with tempfile.TemporaryDirectory() as tmp, ProcessGroup(Path(tmp)) as group:
        mesh = Mesh(Path(tmp), group)
        prop = propagation(mesh, args.edits)
        cost = policy_cost(mesh, h2load, args.requests)
    p50, p99 = percentile(prop, 50), percentile(prop, 99)
    extra = (cost["realistic policy"] / cost["no policy"] - 1) * 100
    text = f"""## Traffic management (`python -m bench.traffic`)

Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; the machine was
{load:.0%} busy with other work when the run started (2 CPUs shared by the client, three
agents and two apps).

**Edit to routing**: a Route is applied on one agent's admin API (node-v1) and another
agent (the client's sidecar) must route by it: {len(prop)} edits, p50 **{p50:.0f} ms**,
p99 **{p99:.0f} ms**, max {prop[-1]:.0f} ms. The time includes the push to the peer,
validation, the journal fsync on both sides, the recompile and three confirming
requests.

**Policy cost** (CPU of all three agents per 1000 requests, h2load
`-c 4 -m 8 -n {args.requests}`):

| policy | CPU s / 1000 req | req/s |
|---|---:|---:|
| none | {cost["no policy"]:.3f} | {cost["no policy req/s"]:.0f} |
| {REALISTIC} | {cost["realistic policy"]:.3f} | {cost["realistic policy req/s"]:.0f} |

A realistic policy costs **{extra:+.1f}%** CPU per request (steering target: ≤ 10%).
"""
    print(text)
    if not args.no_write:
        update_marked_section("traffic", text)


if __name__ == "__main__":
    main()
