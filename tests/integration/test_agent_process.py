"""Agents as real processes: graceful SIGTERM drain, and huge bodies in bounded memory."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from gossip.codec import generate_gossip_key, save_keyring
from tests.support.meshkit import free_port, process, python, wait_http_ok
from tests.support.pki import TRUST_DOMAIN, make_mesh_pki

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


@dataclass
class ProcMesh:
    client: subprocess.Popen[bytes]
    server: subprocess.Popen[bytes]
    app: subprocess.Popen[bytes]
    outbound: int
    inbound: int
    admin_client: int
    admin_server: int


def _agent_args(
    name: str, service: str, data_dir: Path, outbound: int, inbound: int, admin: int, *extra: str
) -> list[str]:
    return python(
        "-m", "peermesh", "agent",
        "--name", name,
        "--service", service,
        "--data-dir", str(data_dir),
        "--trust-domain", TRUST_DOMAIN,
        "--outbound", f"127.0.0.1:{outbound}",
        "--inbound", f"127.0.0.1:{inbound}",
        "--admin", f"127.0.0.1:{admin}",
        "--log-level", "warning",
        *(extra or ("--gossip", "off")),
    )  # fmt: skip


@contextmanager
def proc_mesh(tmp_path: Path, *, gossip: bool = False) -> Iterator[ProcMesh]:
    dirs = make_mesh_pki(tmp_path)
    app_port, out_port, in_port, admin_a, admin_b = (free_port() for _ in range(5))
    server_extra: tuple[str, ...] = ()
    client_extra: tuple[str, ...] = ("--peer", f"orders=127.0.0.1:{in_port}", "--gossip", "off")
    if gossip:
        key = tmp_path / "gossip.key"
        save_keyring(key, [generate_gossip_key()])
        common = ("--gossip-key-file", str(key), "--gossip-profile", "local", "--no-mdns",
                  "--advertise", "127.0.0.1")  # fmt: skip
        server_extra = ("--gossip", f"127.0.0.1:{free_port()}", *common)
        client_extra = ("--gossip", f"127.0.0.1:{free_port()}", "--join",
                        f"127.0.0.1:{in_port}", *common)  # fmt: skip
    with ExitStack() as stack:
        app = stack.enter_context(
            process(python("-m", "examples.service", "--name", "orders", "--port", str(app_port)))
        )
        server = stack.enter_context(
            process(
                _agent_args(
                    "node-b",
                    f"orders={app_port}",
                    dirs["node-b"],
                    free_port(),
                    in_port,
                    admin_b,
                    *server_extra,
                )
            )
        )
        client = stack.enter_context(
            process(
                _agent_args(
                    "node-a", "frontend=9", dirs["node-a"], out_port, free_port(), admin_a,
                    *client_extra,
                )
            )
        )  # fmt: skip
        wait_http_ok(f"http://127.0.0.1:{admin_a}/readyz")
        wait_http_ok(f"http://127.0.0.1:{admin_b}/readyz")
        if gossip:
            _wait(lambda: _alive_members(admin_a) == {"node-a", "node-b"})
        yield ProcMesh(client, server, app, out_port, in_port, admin_a, admin_b)


def _status(admin_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/v1/status", timeout=5) as r:
        return json.loads(r.read())


def _alive_members(admin_port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/v1/members", timeout=5) as r:
        members = json.loads(r.read())["members"]
    return {m["name"] for m in members if m["state"] == "alive"}


def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.parametrize("side", ["server", "client"])
def test_sigterm_drains_in_flight_and_exits_zero(tmp_path, side):
    with proc_mesh(tmp_path) as mesh:
        curl = subprocess.Popen(
            ["curl", "-sS", "--max-time", "30", "-H", "Host: orders",
             f"http://127.0.0.1:{mesh.outbound}/slow/1500"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        _wait(lambda: _status(mesh.admin_server)["connections"]["inbound"]["streams"] >= 1)
        target = mesh.server if side == "server" else mesh.client
        port = mesh.inbound if side == "server" else mesh.outbound
        target.send_signal(signal.SIGTERM)
        _wait(lambda: _refuses_connections(port))
        out, _ = curl.communicate(timeout=30)
        assert curl.returncode == 0
        assert json.loads(out)["slept_ms"] == "1500"
        assert target.wait(timeout=30) == 0


@pytest.mark.parametrize("side", ["server", "client"])
def test_sigterm_with_gossip_on_finishes_every_in_flight_request(tmp_path, side):
    """Leaving the mesh must not reset streams already open on the leaving member."""
    with proc_mesh(tmp_path, gossip=True) as mesh:
        cmd = ["curl", "-sS", "--max-time", "30", "-H", "Host: orders",
               f"http://127.0.0.1:{mesh.outbound}/slow/2000"]  # fmt: skip
        curls = [subprocess.Popen(cmd, stdout=subprocess.PIPE) for _ in range(3)]
        _wait(lambda: _status(mesh.admin_server)["connections"]["inbound"]["streams"] >= 3)
        target = mesh.server if side == "server" else mesh.client
        target.send_signal(signal.SIGTERM)
        outcomes = [curl.communicate(timeout=30)[0] for curl in curls]
        assert [curl.returncode for curl in curls] == [0, 0, 0], outcomes
        assert [json.loads(out)["slept_ms"] for out in outcomes] == ["2000"] * 3, outcomes
        assert target.wait(timeout=30) == 0


def _peak_rss(procs: list[psutil.Process], stop: threading.Event, peaks: dict[int, int]) -> None:
    while not stop.is_set():
        for p in procs:
            try:
                peaks[p.pid] = max(peaks.get(p.pid, 0), p.memory_info().rss)
            except psutil.Error:
                pass
        time.sleep(0.05)


@pytest.mark.slow
def test_512mib_upload_and_download_in_bounded_memory(tmp_path):
    size = 512 << 20
    with proc_mesh(tmp_path) as mesh:
        agents = [psutil.Process(mesh.client.pid), psutil.Process(mesh.server.pid)]
        # Warm up connections so the baseline includes TLS and h2 state.
        subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-H", "Host: orders", f"http://127.0.0.1:{mesh.outbound}/"],
            check=True,
        )  # fmt: skip
        baseline = {p.pid: p.memory_info().rss for p in agents}
        peaks: dict[int, int] = {}
        stop = threading.Event()
        sampler = threading.Thread(target=_peak_rss, args=(agents, stop, peaks))
        sampler.start()
        try:
            upload = subprocess.run(
                f"head -c {size} /dev/zero | curl -sS --max-time 300 -T - -H 'Host: orders' "
                f"http://127.0.0.1:{mesh.outbound}/upload",
                shell=True, check=True, capture_output=True,
            )  # fmt: skip
            download = subprocess.run(
                ["curl", "-sS", "--max-time", "300", "-o", "/dev/null", "-w", "%{size_download}",
                 "-H", "Host: orders", f"http://127.0.0.1:{mesh.outbound}/bytes/{size}"],
                check=True, capture_output=True,
            )  # fmt: skip
        finally:
            stop.set()
            sampler.join()
        assert json.loads(upload.stdout)["size"] == size
        assert int(download.stdout) == size
        for pid, base in baseline.items():
            growth = peaks[pid] - base
            assert growth < 64 << 20, f"agent {pid} RSS grew by {growth / 2**20:.1f} MiB"
