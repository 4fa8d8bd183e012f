"""The chaos lab for real (root): the CI-sized scenario passes every invariant, and
``lab down`` after an interrupted run leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from chaos import lab
from tests.support.root import NEEDS_ROOT, ROOT_REASON

REPO = Path(__file__).resolve().parents[2]
CI_SCENARIO = REPO / "chaos" / "scenarios" / "ci.yaml"
F = TypeVar("F", bound=Callable[..., object])


def needs_root(test: F) -> F:
    """NEEDS_ROOT on one test: this file also holds a test of running without root."""
    for mark in NEEDS_ROOT:
        test = mark(test)
    return test


def unique_prefix(tag: str) -> str:
    """A lab prefix of this test process only: concurrent runs of this file (the machine
    is shared) must not tear down each other's labs (``lab up`` first removes its prefix)."""
    return f"{tag}{os.getpid() % 10000:04d}"  # ≤ 10 characters, as netns names need


def chaos_cli(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "chaos", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.25)


def nft_tables(netns: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "tables"],
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout


def test_without_root_every_command_says_so_and_fails(tmp_path):
    if ROOT_REASON:
        commands = [chaos_cli("lab", "status"), chaos_cli("partition", "h1", "/", "h2")]
    elif shutil.which("setpriv"):
        nobody = "65534"
        commands = [
            chaos_cli("--state-dir", str(tmp_path), "lab", "status", user=nobody),
            chaos_cli("--state-dir", str(tmp_path), "lab", "down", user=nobody),
            chaos_cli("--state-dir", str(tmp_path), "kill", "h1", user=nobody),
        ]
    else:
        pytest.skip("root, and no setpriv to drop privileges with")
    for proc in commands:
        assert proc.returncode != 0, proc
        assert "root" in proc.stderr, proc.stderr


@needs_root
def test_ci_scenario_passes_every_invariant(tmp_path):
    from chaos.runner import run_scenario

    prefix = unique_prefix("pmci")
    try:
        passed, text = run_scenario(
            CI_SCENARIO, state_dir=tmp_path / "lab", out_dir=tmp_path / "report", prefix=prefix
        )
        print(text)
        report = json.loads((tmp_path / "report" / "ci.json").read_text())
        assert {v["name"]: v["passed"] for v in report["invariants"]} == {
            "no lost writes": True,
            "convergence": True,
            "availability": True,
            "failure handling": True,
            "security under faults": True,
            "clock skew noticed": True,  # not exercised here: no clock-skew step
        }, text
        assert passed
        history = report["history"]
        assert sum(e["acked"] for e in history["edits"]) == 4
        assert any(not c["ok"] for c in history["ca"])  # the minority refused
        assert any(c["ok"] for c in history["ca"])  # the majority issued
        assert (tmp_path / "report" / "ci.png").stat().st_size > 1000
        availability = next(v for v in report["invariants"] if v["name"] == "availability")
        # The data plane itself notices the cut (PING deadline): a fast 503 comes while
        # membership is still learning, not only after it.
        (first,) = availability["details"]["partition_to_first_fast_503"]
        assert first["seconds"] is not None, text
    finally:
        lab.down(prefix=prefix, state_dir=tmp_path / "lab")
    assert not any(lab.leftovers(prefix).values())


@needs_root
def test_lab_down_after_an_interrupted_run_leaves_nothing_behind(tmp_path):
    prefix = unique_prefix("pmdn")
    state = tmp_path / "lab"
    runner = subprocess.Popen(
        [sys.executable, "-m", "chaos", "--prefix", prefix, "--state-dir", str(state),
         "run", str(CI_SCENARIO), "--out", str(tmp_path / "report")],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    pids: list[int] = []
    try:
        # Interrupt it mid-way: traffic flows and the partition's nft tables are in place.
        wait(lambda: (state / "pids" / "loadgen-2.pid").exists(), 90, "traffic never started")
        wait(lambda: "pmchaos" in nft_tables(f"{prefix}-h3"), 30, "partition never applied")
        saved = json.loads((state / "lab.json").read_text())
        pids = [p for h in saved["hosts"] for p in (h["agent_pid"], h["app_pid"])]
        pids += [int(f.read_text()) for f in (state / "pids").glob("loadgen-*.pid")]
        assert all(lab.alive(p) for p in pids)
        assert lab.leftovers(prefix)["namespaces"]
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
    first = chaos_cli("--prefix", prefix, "--state-dir", str(state), "lab", "down")
    assert first.returncode == 0, first.stdout + first.stderr
    again = chaos_cli("--prefix", prefix, "--state-dir", str(state), "lab", "down")
    assert again.returncode == 0, again.stdout + again.stderr  # idempotent
    left = lab.leftovers(prefix)
    assert left == {"namespaces": [], "links": [], "processes": []}
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    assert not [p for p in pids if lab.alive(p)]
    # No veth of the lab anywhere, and nft tables died with their namespaces.
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"{prefix}1a" not in links and f"{prefix}1b" not in links
    assert "pmchaos" not in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                           text=True).stdout  # fmt: skip


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(x.decode().split("=", 1) for x in raw if b"=" in x)


def _clock_check(h: lab.HostState) -> str:
    """``h``'s "peers reachable" and "clock skew" checks, as 'PEERS | CLOCK'."""
    reply = lab.admin(h.host, "GET", "/v1/mesh/check", timeout=8)
    checks = {c["name"]: c["detail"] for c in reply.get("checks", [])}
    return f"{checks.get('peers reachable', '')} | {checks.get('clock skew', '')}"


def wait_check(h: lab.HostState, pattern: str, what: str, timeout: float = 40) -> None:
    """Poll ``h``'s "clock skew" check until it matches; fail showing its last answer."""
    deadline = time.monotonic() + timeout
    last = _clock_check(h)
    while re.search(pattern, last) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s; last answer {last!r}")
        time.sleep(0.5)
        last = _clock_check(h)


@needs_root
def test_clock_skew_restarts_the_agent_under_libfaketime_and_the_mesh_notices(tmp_path):
    """2 hosts: skew h2 +30 s (its agent restarts under libfaketime, same data dir and
    ports), it keeps serving and replicating, h1's `check` names it; 0 restores it."""
    from chaos import actions
    from chaos.clockskew import FaketimeMissing, find_library

    try:
        find_library()
    except FaketimeMissing as exc:
        pytest.skip(str(exc))
    prefix = unique_prefix("pmsk")
    try:
        state = lab.up(2, prefix=prefix, state_dir=tmp_path / "lab", services=["web", "orders"])
        h1, h2 = state.hosts
        before = h2.agent_pid
        actions.clock_skew(state, "h2", 30)
        assert h2.agent_pid != before and lab.alive(h2.agent_pid)
        lab.wait_ready(state, 60)  # past 'ip netns exec' and 'env': the agent's own environ
        env = _environ(h2.agent_pid)
        assert env["FAKETIME"] == "+30s" and env["FAKETIME_DONT_FAKE_MONOTONIC"] == "1"
        assert "faketime" in env["LD_PRELOAD"]
        assert "FAKETIME" not in _environ(h1.agent_pid)
        assert lab.LabState.load(tmp_path / "lab").by_name("h2").clock_offset == 30
        # `check` fans out to the members it sees alive at that moment: poll for it
        wait_check(h1, r"node-2 \+(29\.[5-9]|30\.[0-4])s", "h1 names node-2 +30 s")
        wait_check(h2, r"node-1 -(29\.[5-9]|30\.[0-4])s", "h2 names node-1 -30 s")
        # mTLS to the skewed agent, and policy written on it, keep working
        status, _ = lab.admin_status(h2.host, "PUT", "/v1/policy", {"objects": [
            actions.edit_route("chaos-edit-skewed", "orders")]})  # fmt: skip
        assert status == 200
        wait(lambda: "chaos-edit-skewed" in (actions.policy_names(h1.host) or []), 30,
             "an edit on the skewed agent never reached h1")  # fmt: skip
        curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                "-H", "Host: orders", "http://127.0.0.1:15001/"]  # fmt: skip
        codes = [subprocess.run(h1.host.command(*curl), capture_output=True, text=True).stdout
                 for _ in range(5)]  # fmt: skip
        assert codes == ["200"] * 5, f"h1 -> orders (on the skewed h2): {codes}"
        actions.clock_skew(state, "h2", 0)
        lab.wait_ready(state, 60)
        assert "FAKETIME" not in _environ(h2.agent_pid)
        # (with the peer asked: "clocks agree" with nobody to compare would prove nothing)
        wait_check(h1, r"^1/1 peer.*\| clocks agree", "h1 no longer names node-2")
        wait_check(h2, r"^1/1 peer.*\| clocks agree", "h2 no longer names node-1")
    finally:
        lab.down(prefix=prefix, state_dir=tmp_path / "lab")
    assert not any(lab.leftovers(prefix).values())
