"""The chaos lab: N namespaces, one agent and one example service per host.

The mesh is bootstrapped through the threshold CA (``--bootstrap-expect N`` and a
shared bootstrap token, no CA key anywhere) and agents find each other by mDNS only
(no ``--join``). Everything the lab starts or writes is recorded in a JSON state
file (``<state-dir>/lab.json``) so that ``lab down`` can undo it, also after the
process that built the lab crashed: processes are found by namespace
(``ip netns pids``), nft tables and veth links vanish with their namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chaos.clockskew import faketime_env, parse_offset, verify
from chaos.netns import DEFAULT_SUBNET, Host, Lab, lab_namespaces, require_root, run, teardown

TRUST_DOMAIN = "chaos.lab"
DEFAULT_SERVICES = ("web", "orders", "orders", "pay", "pay")
REPO = Path(__file__).resolve().parent.parent
STATE_FILE = "lab.json"


def default_services(count: int) -> list[str]:
    return [DEFAULT_SERVICES[i % len(DEFAULT_SERVICES)] for i in range(count)]


@dataclass
class HostState:
    """One lab host: its namespace, address, service and the processes running there."""

    name: str
    netns: str
    address: str
    service: str
    node: str
    data_dir: str
    agent_pid: int = 0
    app_pid: int = 0
    clock_offset: float = 0.0  # seconds the agent's wall clock is skewed (libfaketime)

    @property
    def host(self) -> Host:
        return Host(name=self.name, netns=self.netns, address=self.address)


@dataclass
class LabState:
    """What ``lab up`` made; saved as JSON so ``lab down``/``status`` work from any process."""

    prefix: str
    state_dir: str
    token_file: str
    hosts: list[HostState] = field(default_factory=list)
    created: float = 0.0

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / STATE_FILE

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.path)

    @classmethod
    def load(cls, state_dir: str | Path) -> LabState:
        data = json.loads((Path(state_dir) / STATE_FILE).read_text())
        hosts = [HostState(**h) for h in data.pop("hosts")]
        return cls(hosts=hosts, **data)

    def by_name(self, name: str) -> HostState:
        for h in self.hosts:
            if name in (h.name, h.node):
                return h
        raise KeyError(f"no lab host named {name!r} (hosts: {[h.name for h in self.hosts]})")

    def log(self, name: str) -> Path:
        return Path(self.state_dir) / "logs" / name


def admin(host: Host, method: str, path: str, body: Any = None, timeout: float = 5) -> Any:
    """Call a host's admin API (127.0.0.1:15000 inside its namespace); {} on failure."""
    return admin_status(host, method, path, body, timeout)[1]


# The agent's admin API refuses mutations without it (a browser cannot send it cross-site).
ADMIN_HEADER_LINE = "X-Peermesh-Request: 1"


def admin_status(
    host: Host, method: str, path: str, body: Any = None, timeout: float = 5
) -> tuple[int, Any]:
    args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", str(timeout)]
    args += ["-X", method, f"http://127.0.0.1:15000{path}", "-H", ADMIN_HEADER_LINE]
    if body is not None:
        args += ["-H", "content-type: application/json", "-d", json.dumps(body)]
    try:
        out = subprocess.run(
            host.command(*args), capture_output=True, text=True, timeout=timeout + 5
        )
    except subprocess.TimeoutExpired:
        return 0, {}
    text, _, code = out.stdout.rpartition("\n")
    try:
        status = int(code)
    except ValueError:
        status = 0
    try:
        return status, json.loads(text)
    except ValueError:
        return status, {}


def _spawn(host: Host, argv: Sequence[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            host.command(*argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(REPO),
            env=env,
            start_new_session=True,  # survives the lab CLI; lab down finds it by namespace
        )
    return proc.pid


def agent_argv(lab: LabState, h: HostState) -> list[str]:
    return [
        sys.executable, "-m", "peermesh", "agent", "--name", h.node,
        "--service", f"{h.service}=8080", "--data-dir", h.data_dir,
        "--trust-domain", TRUST_DOMAIN,
        "--inbound", f"{h.address}:15443", "--gossip", f"{h.address}:15946",
        "--advertise", h.address, "--gossip-profile", "local",
        "--bootstrap-expect", str(len(lab.hosts)), "--bootstrap-token-file", lab.token_file,
        "--drain-timeout", "1", "--log-level", "warning",
    ]  # fmt: skip


def agent_command(lab: LabState, h: HostState) -> list[str]:
    """The agent's argv, under ``env`` + libfaketime when its clock is skewed."""
    skew = faketime_env(h.clock_offset)
    argv = agent_argv(lab, h)
    return ["env", *(f"{k}={v}" for k, v in skew.items()), *argv] if skew else argv


def start_agent(lab: LabState, h: HostState) -> None:
    h.agent_pid = _spawn(h.host, agent_command(lab, h), lab.log(f"{h.node}.log"))
    lab.save()


def start_app(lab: LabState, h: HostState) -> None:
    argv = [sys.executable, "-m", "examples.service", "--name", h.service, "--port", "8080"]
    h.app_pid = _spawn(h.host, argv, lab.log(f"{h.name}-{h.service}.log"))
    lab.save()


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own child, not yet reaped) is dead for the lab
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def signal_agent(lab: LabState, name: str, sig: signal.Signals) -> HostState:
    h = lab.by_name(name)
    if alive(h.agent_pid):
        os.kill(h.agent_pid, sig)
    return h


def kill_agent(lab: LabState, name: str) -> HostState:
    h = signal_agent(lab, name, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(h.agent_pid) and time.monotonic() < deadline:
        try:
            os.waitpid(h.agent_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return h


def restart_agent(lab: LabState, name: str) -> HostState:
    h = lab.by_name(name)
    if alive(h.agent_pid):
        os.kill(h.agent_pid, signal.SIGCONT)
        os.kill(h.agent_pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while alive(h.agent_pid) and time.monotonic() < deadline:
            try:
                os.waitpid(h.agent_pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
        if alive(h.agent_pid):
            kill_agent(lab, name)
    start_agent(lab, h)
    return h


def set_clock(lab: LabState, name: str, seconds: float) -> HostState:
    """Restart the host's agent with its wall clock offset by ``seconds`` (0: real clock).

    Refuses (ClockSkewError) before touching the agent when libfaketime is missing or
    does not offset a process's wall clock (and only that) as expected. A killed agent
    is not brought back: the offset is recorded and applies when it is restarted.
    """
    h = lab.by_name(name)
    seconds = parse_offset(seconds)
    if seconds == h.clock_offset and alive(h.agent_pid):
        return h  # already so: no restart
    verify(seconds)
    h.clock_offset = seconds
    lab.save()
    if not alive(h.agent_pid):
        return h
    return restart_agent(lab, name)


def ready(h: HostState) -> bool:
    status, _ = admin_status(h.host, "GET", "/readyz", timeout=2)
    return status == 200


def members(h: HostState, timeout: float = 2) -> dict[str, Any]:
    data = admin(h.host, "GET", "/v1/members", timeout=timeout)
    return data if isinstance(data, dict) else {}


def alive_members(h: HostState) -> set[str]:
    return {m["name"] for m in members(h).get("members", []) if m.get("state") == "alive"}


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> float:
    """Poll until ``predicate()``; returns seconds taken; TimeoutError names ``what``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - start


def up(
    count: int,
    *,
    prefix: str = "pmchaos",
    state_dir: str | Path = "chaos-lab",
    services: Sequence[str] | None = None,
    timeout: float = 120,
) -> LabState:
    """Build the lab, start everything, wait for CA bootstrap and mDNS/gossip convergence."""
    require_root()
    if count < 1 or count > 50:
        raise ValueError("--hosts must be between 1 and 50")
    services = list(services) if services else default_services(count)
    if len(services) != count:
        raise ValueError(f"{len(services)} services given for {count} hosts")
    state_path = Path(state_dir).resolve()
    down(prefix=prefix, state_dir=state_path)
    if state_path.exists():  # a fresh lab: no identity, share or log of an old one
        for old in state_path.iterdir():
            if old.name.startswith("node-") or old.name in ("logs", "pids", "traffic"):
                shutil.rmtree(old, ignore_errors=True)
            elif old.name in ("bootstrap.token", "chaos.log"):
                old.unlink()
    state_path.mkdir(parents=True, exist_ok=True)
    (state_path / "logs").mkdir(exist_ok=True)
    token = state_path / "bootstrap.token"
    subprocess.run(
        [sys.executable, "-m", "peermesh", "keygen", "bootstrap-token", "--out", str(token)],
        check=True, capture_output=True, cwd=str(REPO),
    )  # fmt: skip
    lab = LabState(prefix=prefix, state_dir=str(state_path), token_file=str(token))
    lab.created = time.time()
    lab.save()  # before any namespace exists: a crash from here on is recoverable
    hosts = Lab(prefix=prefix, subnet=DEFAULT_SUBNET).up(count)
    for host, service in zip(hosts, services, strict=True):
        node = f"node-{host.name[1:]}"
        data_dir = state_path / node
        data_dir.mkdir(exist_ok=True)
        lab.hosts.append(
            HostState(host.name, host.netns, host.address, service, node, str(data_dir))
        )
    lab.save()
    for h in lab.hosts:
        start_app(lab, h)
        start_agent(lab, h)
    wait_ready(lab, timeout)
    return lab


def wait_ready(lab: LabState, timeout: float = 120) -> float:
    """Until every agent is ready and sees every other alive."""
    nodes = {h.node for h in lab.hosts}
    return wait_for(
        lambda: all(ready(h) and alive_members(h) == nodes for h in lab.hosts),
        timeout,
        "lab ready (CA bootstrapped, every agent sees all alive)",
    )


def status(lab: LabState) -> list[dict[str, Any]]:
    rows = []
    for h in lab.hosts:
        m = members(h)
        rows.append(
            {
                "host": h.name,
                "node": h.node,
                "address": h.address,
                "service": h.service,
                "agent_pid": h.agent_pid,
                "agent_alive": alive(h.agent_pid),
                "app_pid": h.app_pid,
                "app_alive": alive(h.app_pid),
                "ready": ready(h),
                "clock_offset": h.clock_offset,
                "members_digest": m.get("digest"),
                "alive_members": sorted(
                    x["name"] for x in m.get("members", []) if x.get("state") == "alive"
                ),
            }
        )
    return rows


def down(*, prefix: str = "pmchaos", state_dir: str | Path | None = None) -> list[str]:
    """Remove every namespace, link, nft table and process of the lab (idempotent).

    Works from the state file when there is one, and from the prefix otherwise (a lab
    whose state file was lost still goes). Returns what was removed.
    """
    require_root()
    removed: list[str] = []
    pids: list[int] = []
    if state_dir is not None and (Path(state_dir) / STATE_FILE).exists():
        try:
            lab = LabState.load(state_dir)
            prefix = lab.prefix
            pids = [p for h in lab.hosts for p in (h.agent_pid, h.app_pid)]
            pids += _extra_pids(Path(state_dir))
        except (ValueError, KeyError, TypeError):
            pass
    namespaces = lab_namespaces(prefix)
    removed += namespaces
    # Processes first (SIGCONT so a stopped one can die), then namespaces: deleting a
    # namespace removes its veth end (and so the pair) and its nft tables with it.
    for pid in pids:
        if alive(pid) and _in_lab(pid, prefix):
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
            removed.append(f"pid {pid}")
    teardown(prefix)
    # A veth whose namespace half is gone but whose root-namespace half survived
    # (crash between 'link add' and 'set netns') is removed by name.
    links = run("ip", "-o", "link", "show", check=False).stdout.splitlines()
    for line in links:
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(prefix) and name[len(prefix) : len(prefix) + 1].isdigit():
                run("ip", "link", "delete", name, check=False)
                removed.append(f"link {name}")
    if state_dir is not None and (Path(state_dir) / STATE_FILE).exists():
        (Path(state_dir) / STATE_FILE).unlink()
    return removed


def _extra_pids(state_dir: Path) -> list[int]:
    """Load generators and runners recorded by ``chaos run`` (``pids/*.pid``)."""
    out = []
    for f in (state_dir / "pids").glob("*.pid") if (state_dir / "pids").exists() else []:
        try:
            out.append(int(f.read_text().strip()))
        except ValueError:
            pass
    return out


def _in_lab(pid: int, prefix: str) -> bool:
    """Only signal processes that live in one of this lab's namespaces."""
    try:
        mine = os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return False
    for netns in lab_namespaces(prefix):
        try:
            if os.stat(f"/run/netns/{netns}").st_ino == mine:
                return True
        except OSError:
            continue
    return False


def leftovers(prefix: str) -> dict[str, list[str]]:
    """What of a lab is still there (for tests and ``lab status`` after ``down``)."""
    links = [
        line.split(":")[1].strip().split("@")[0]
        for line in run("ip", "-o", "link", "show", check=False).stdout.splitlines()
        if len(line.split(":")) > 1
    ]
    procs = []
    for netns in lab_namespaces(prefix):
        procs += run("ip", "netns", "pids", netns, check=False).stdout.split()
    return {
        "namespaces": lab_namespaces(prefix),
        "links": [
            n for n in links if n.startswith(prefix) and n[len(prefix) : len(prefix) + 1].isdigit()
        ],
        "processes": procs,
    }


def signal_pid(pid: int, sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal a process the lab started (no error if it is gone)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
