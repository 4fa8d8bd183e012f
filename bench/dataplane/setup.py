"""Set-up of the three ways to reach nginx: direct, peermesh agent pairs, HAProxy pair."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from bench._common import (
    ProcessGroup,
    free_port,
    http_ok,
    tcp_open,
    wait_until,
)
from bench.dataplane.model import (
    AUTHORITY,
    MAX_STREAMS,
    PATH,
    PAYLOAD,
    TRUST_DOMAIN,
    BenchError,
    Setup,
)

# --- set-up: certificates, configs, processes ----------------------------------------


# One agent pair per engine: (client-side node, server-side node).
NODES = (("node-a", "frontend"), ("node-b", "orders"), ("node-c", "frontend"), ("node-d", "orders"))
ENGINE_PAIRS = (
    ("peermesh", "nghttp2", "node-a", "node-b"),
    ("peermesh-h2", "h2", "node-c", "node-d"),
)


def make_certificates(work: Path) -> dict[str, Path]:
    """A dev CA and identities for each agent pair (frontend → orders), via the CLI."""
    python = [sys.executable, "-m", "peermesh", "dev-ca"]
    ca = work / "ca"
    run = [
        [*python, "init", "--dir", str(ca), "--trust-domain", TRUST_DOMAIN],
        *(
            [*python, "issue", "--ca-dir", str(ca), "--node", node, "--service", svc,
             "--data-dir", str(work / node)]
            for node, svc in NODES
        ),
    ]  # fmt: skip
    for args in run:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(args[2:5])} failed:\n{done.stderr.strip()}")
    dirs = {node: work / node for node, _ in NODES}
    for node, data in dirs.items():
        # HAProxy's `crt` wants certificate and key in one PEM file.
        combined = work / f"{node}-haproxy.pem"
        combined.write_bytes((data / "cert.pem").read_bytes() + (data / "key.pem").read_bytes())
        combined.chmod(0o600)
    return dirs


def nginx_config(work: Path, h1_port: int, h2_port: int) -> Path:
    """nginx, one worker, serving ``/1k`` on an HTTP/1.1 port and an h2c port."""
    root = work / "nginx"
    (root / "www").mkdir(parents=True)
    (root / "www" / PATH.lstrip("/")).write_bytes(os.urandom(PAYLOAD))
    temp = {k: root / k for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    conf = root / "nginx.conf"
    conf.write_text(
        f"""daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    default_type application/octet-stream;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    http2_max_concurrent_streams {MAX_STREAMS};
    server {{
        listen 127.0.0.1:{h1_port};
        listen 127.0.0.1:{h2_port} http2;
        root {root}/www;
        # The authority must arrive as "{AUTHORITY}" through every setup.
        location / {{ if ($host != "{AUTHORITY}") {{ return 421; }} }}
    }}
}}
"""
    )
    return conf


HAPROXY_COMMON = f"""global
    nbthread 1
    maxconn 4096
    tune.h2.max-concurrent-streams {MAX_STREAMS}
defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    http-reuse always
"""


def haproxy_configs(
    work: Path, front_port: int, inner_port: int, nginx_port: int
) -> tuple[Path, Path]:
    """HAProxy A (h2c in, mTLS h2 out) and HAProxy B (mTLS h2 in, HTTP/1.1 to nginx)."""
    bundle = work / "node-a" / "bundle.pem"
    tls = f"ca-file {bundle} verify required alpn h2 ssl-min-ver TLSv1.3"
    front = work / "haproxy-a.cfg"
    front.write_text(
        HAPROXY_COMMON
        + f"""frontend from_client
    bind 127.0.0.1:{front_port}
    default_backend to_peer
backend to_peer
    server b 127.0.0.1:{inner_port} ssl crt {work / "node-a-haproxy.pem"} {tls}
"""
    )
    inner = work / "haproxy-b.cfg"
    inner.write_text(
        HAPROXY_COMMON
        + f"""frontend from_peer
    bind 127.0.0.1:{inner_port} ssl crt {work / "node-b-haproxy.pem"} {tls}
    default_backend app
backend app
    server nginx 127.0.0.1:{nginx_port}
"""
    )
    return front, inner


def data_plane_only_flags() -> list[str]:
    """Flags that keep an agent to the data plane on loopback: no gossip, no mDNS.

    Asked from ``peermesh agent --help`` so the benchmark works before and after those
    options exist.
    """
    done = subprocess.run(
        [sys.executable, "-m", "peermesh", "agent", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    flags: list[str] = []
    if "--gossip " in done.stdout:
        flags += ["--gossip", "off"]
    if "--no-mdns" in done.stdout:
        flags.append("--no-mdns")
    return flags


def agent_args(
    name: str, service: str, data_dir: Path, ports: dict[str, int], *extra: str
) -> list[str]:
    """Command line of one peermesh agent on loopback."""
    return [
        sys.executable, "-m", "peermesh", "agent",
        "--name", name, "--service", service, "--data-dir", str(data_dir),
        "--trust-domain", TRUST_DOMAIN,
        "--outbound", f"127.0.0.1:{ports['outbound']}",
        "--inbound", f"127.0.0.1:{ports['inbound']}",
        "--admin", f"127.0.0.1:{ports['admin']}",
        "--drain-timeout", "2", "--log-level", "warning",
        *extra,
    ]  # fmt: skip


def wait_started(
    group: ProcessGroup, name: str, ready: object, what: str, timeout: float = 30.0
) -> None:
    """Wait for ``ready()``; a clear error with the log tail if the process dies first."""
    assert callable(ready)
    proc = group.procs[name]

    def check() -> bool:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}:\n{group.log_tail(name)}")
        return bool(ready())

    try:
        wait_until(check, what, timeout)
    except TimeoutError as exc:
        raise BenchError(f"{exc}\n{group.log_tail(name)}") from None


def start_everything(
    group: ProcessGroup, work: Path, tools: dict[str, str]
) -> tuple[dict[str, Setup], psutil.Process]:
    """nginx, two agents and two HAProxy; returns the setups and the nginx process."""
    dirs = make_certificates(work)
    h1_port, h2_port = free_port(), free_port()
    conf = nginx_config(work, h1_port, h2_port)
    nginx = group.start(
        "nginx",
        [tools["nginx"], "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "e.log")],
    )
    wait_started(group, "nginx", lambda: tcp_open(h1_port) and tcp_open(h2_port), "nginx")

    quiet = data_plane_only_flags()
    outbound_ports: dict[str, int] = {}
    for setup_name, engine, client_node, server_node in ENGINE_PAIRS:
        b_ports = {"outbound": free_port(), "inbound": free_port(), "admin": free_port()}
        a_ports = {"outbound": free_port(), "inbound": free_port(), "admin": free_port()}
        outbound_ports[setup_name] = a_ports["outbound"]
        engine_flag = ("--h2-engine", engine)
        b_name, a_name = f"agent-{server_node[-1]}", f"agent-{client_node[-1]}"
        group.start(
            b_name,
            agent_args(
                server_node, f"orders={h1_port},proto=h1", dirs[server_node], b_ports,
                *quiet, *engine_flag,
            ),
        )  # fmt: skip
        group.start(
            a_name,
            agent_args(
                client_node, "frontend=9", dirs[client_node], a_ports,
                "--peer", f"orders=127.0.0.1:{b_ports['inbound']}", *quiet, *engine_flag,
            ),
        )  # fmt: skip
        for name, ports in ((b_name, b_ports), (a_name, a_ports)):
            url = f"http://127.0.0.1:{ports['admin']}/readyz"
            wait_started(group, name, lambda url=url: http_ok(url), f"{name} /readyz")

    front_port, inner_port = free_port(), free_port()
    front_cfg, inner_cfg = haproxy_configs(work, front_port, inner_port, h1_port)
    for cfg in (front_cfg, inner_cfg):
        check = subprocess.run(
            [tools["haproxy"], "-c", "-q", "-f", str(cfg)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise BenchError(f"HAProxy rejects {cfg.name}:\n{check.stdout}{check.stderr}")
    group.start("haproxy-b", [tools["haproxy"], "-db", "-f", str(inner_cfg)])
    group.start("haproxy-a", [tools["haproxy"], "-db", "-f", str(front_cfg)])
    wait_started(group, "haproxy-b", lambda: tcp_open(inner_port), "HAProxy B")
    wait_started(group, "haproxy-a", lambda: tcp_open(front_port), "HAProxy A")

    def proc(name: str) -> psutil.Process:
        return psutil.Process(group.procs[name].pid)

    setups = {
        "direct": Setup("direct", h2_port),
        **{
            setup_name: Setup(
                setup_name,
                outbound_ports[setup_name],
                sidecars={"A": proc(f"agent-{a[-1]}"), "B": proc(f"agent-{b[-1]}")},
                proc_names={"A": f"agent-{a[-1]}", "B": f"agent-{b[-1]}"},
            )
            for setup_name, _engine, a, b in ENGINE_PAIRS
        },
        "haproxy": Setup(
            "haproxy",
            front_port,
            sidecars={"A": proc("haproxy-a"), "B": proc("haproxy-b")},
            proc_names={"A": "haproxy-a", "B": "haproxy-b"},
        ),
    }
    return setups, psutil.Process(nginx.pid)
