"""Faults and probes on a running lab, shared by the CLI and the scenario runner.

Every action is appended, with a wall-clock timestamp, to ``<state-dir>/chaos.log``.
Every fault has an undo: ``heal`` removes partitions, loss and delay and restores skewed
clocks; ``cont`` resumes a stopped agent; ``restart`` brings a killed one back;
``clock-skew HOST 0`` restores one clock.

Clock skew (``chaos/clockskew.py``): the host's agent is restarted under libfaketime
with its wall clock offset (monotonic clocks untouched); a plain ``restart`` keeps the
skew, as a host with a wrong clock would.

Delay: this kernel has no netem, so ``delay SERVICE 50ms`` is applied through the mesh
itself: a Route ``chaos-delay-SERVICE`` with ``fault.delay`` (100 %) is PUT on one
agent's admin API and replicates like any policy; ``heal`` (or ``undelay``) deletes it.
The delay is added by the calling sidecars before the request leaves, so it delays
requests to that service, not gossip or control traffic.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaos import faults
from chaos.clockskew import format_offset
from chaos.lab import (
    REPO,
    LabState,
    admin_status,
    kill_agent,
    restart_agent,
    set_clock,
    signal_agent,
)
from chaos.netns import Host

ROUTE_PREFIX = "chaos-"


def log(lab: LabState, event: str, **fields: Any) -> None:
    line = {"t": time.time(), "iso": time.strftime("%H:%M:%S"), "event": event, **fields}
    with (Path(lab.state_dir) / "chaos.log").open("a") as f:
        f.write(json.dumps(line) + "\n")


def parse_groups(lab: LabState, spec: str | Sequence[Sequence[str]]) -> list[list[str]]:
    """``"h1,h2 / h3"`` (or a list of lists) -> host names, checked against the lab."""
    if isinstance(spec, str):
        groups = [[n.strip() for n in g.split(",") if n.strip()] for g in spec.split("/")]
    else:
        groups = [list(g) for g in spec]
    names = [lab.by_name(n).name for g in groups for n in g]
    if len(groups) < 2 or len(set(names)) != len(names):
        raise ValueError(f"a partition needs ≥ 2 disjoint groups, got {spec!r}")
    return [[lab.by_name(n).name for n in g] for g in groups]


def partition(lab: LabState, groups: list[list[str]], oneway: bool = False) -> None:
    hosts = [[lab.by_name(n).host for n in g] for g in groups]
    if oneway:  # the first group stops hearing the others; they still hear it
        others = [h for g in hosts[1:] for h in g]
        for h in hosts[0]:
            faults.block(h, others, oneway=True)
    else:
        faults.partition(hosts)
    log(lab, "partition", groups=groups, oneway=oneway)


def loss(lab: LabState, percent: float, hosts: Sequence[str] | None = None) -> list[str]:
    names = [lab.by_name(n).name for n in hosts] if hosts else [h.name for h in lab.hosts]
    for n in names:
        faults.loss(lab.by_name(n).host, percent)
    log(lab, "loss", percent=percent, hosts=names)
    return names


def delay_route(service: str, ms: float) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": f"{ROUTE_PREFIX}delay-{service}",
        "spec": {
            "host": service,
            "http": [
                {
                    "route": [{"destination": {"host": service}}],
                    "fault": {"delay": {"fixedDelay": f"{ms:g}ms", "percentage": {"value": 100}}},
                }
            ],
        },
    }


def delay(lab: LabState, service: str, ms: float, via: str | None = None) -> None:
    host = lab.by_name(via).host if via else lab.hosts[0].host
    status, reply = admin_status(host, "PUT", "/v1/policy", {"objects": [delay_route(service, ms)]})
    if status != 200:
        raise RuntimeError(f"delay route refused by {host.name}: {status} {reply}")
    log(lab, "delay", service=service, ms=ms, via=host.name)


def undelay(lab: LabState) -> None:
    services = sorted({h.service for h in lab.hosts})
    for h in lab.hosts:
        for svc in services:
            admin_status(h.host, "DELETE", f"/v1/policy/Route/{ROUTE_PREFIX}delay-{svc}", timeout=2)
    log(lab, "undelay")


def heal(lab: LabState, *, network_only: bool = False) -> list[str]:
    """Undo partitions and loss; unless ``network_only``, also delay and clock skew.

    Returns the hosts whose clock was restored (their agents were restarted).
    """
    faults.heal([h.host for h in lab.hosts])
    restored = []
    if not network_only:
        undelay(lab)
        for h in lab.hosts:
            if h.clock_offset:
                clock_skew(lab, h.name, 0.0)
                restored.append(h.name)
    log(lab, "heal", clocks_restored=restored)
    return restored


def kill(lab: LabState, name: str) -> None:
    kill_agent(lab, name)
    log(lab, "kill", host=name)


def stop(lab: LabState, name: str) -> None:
    signal_agent(lab, name, signal.SIGSTOP)
    log(lab, "stop", host=name)


def cont(lab: LabState, name: str) -> None:
    signal_agent(lab, name, signal.SIGCONT)
    log(lab, "cont", host=name)


def restart(lab: LabState, name: str) -> None:
    restart_agent(lab, name)
    log(lab, "restart", host=name)


def clock_skew(lab: LabState, name: str, seconds: float) -> None:
    """Restart ``name``'s agent with its wall clock ``seconds`` off (0 restores it)."""
    h = lab.by_name(name)
    before = h.clock_offset
    set_clock(lab, name, seconds)
    log(lab, "clock-skew", host=h.name, offset=format_offset(seconds) if seconds else "0",
        was=format_offset(before) if before else "0", pid=h.agent_pid)  # fmt: skip


def edit_route(name: str, service: str) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": name,
        "spec": {"host": service, "http": [{"route": [{"destination": {"host": service}}]}]},
    }


def policy_edit(lab: LabState, host_name: str, name: str, service: str) -> tuple[bool, str]:
    """PUT one Route; acknowledged = 200 with the object in ``changed``."""
    h = lab.by_name(host_name)
    status, reply = admin_status(
        h.host, "PUT", "/v1/policy", {"objects": [edit_route(name, service)]}
    )
    acked = status == 200 and f"Route/{name}" in (reply.get("changed") or [])
    log(lab, "policy-edit", host=h.name, name=name, status=status, acked=acked)
    return acked, f"{status} {json.dumps(reply)[:200]}"


def token_create(lab: LabState, host_name: str, service: str) -> tuple[bool, str]:
    """A threshold operation: refused unless t signers are reachable and take the token."""
    h = lab.by_name(host_name)
    argv = [sys.executable, "-m", "peermesh", "token", "create", "--service", service]
    try:
        proc = subprocess.run(
            h.host.command(*argv), capture_output=True, text=True, timeout=60, cwd=str(REPO)
        )
        ok, message = proc.returncode == 0, (proc.stdout + proc.stderr).strip()
    except subprocess.TimeoutExpired:
        ok, message = False, "token create: no answer within 60 s"
    log(lab, "token-create", host=h.name, ok=ok, message=message[:300])
    return ok, message


def policy_names(host: Host) -> list[str] | None:
    status, reply = admin_status(host, "GET", "/v1/policy", timeout=3)
    if status != 200:
        return None
    return sorted(o["name"] for o in reply.get("objects", []))


def policy_digest(host: Host) -> str | None:
    """The agent's own policy digest and state-vector digest (asks peers: slow when cut)."""
    status, reply = admin_status(host, "GET", "/v1/policy/status", timeout=5)
    if status != 200:
        return None
    here = reply.get("here", {})
    return f"{here.get('digest')}/{here.get('state_vector_digest')}"


def policy_content_digest(host: Host, timeout: float = 1.5) -> str | None:
    """A digest of the objects an agent serves (local only, fast even when cut off)."""
    status, reply = admin_status(host, "GET", "/v1/policy", timeout=timeout)
    if status != 200:
        return None
    text = json.dumps(reply.get("objects", []), sort_keys=True)
    return "content:" + hashlib.sha256(text.encode()).hexdigest()[:16]
