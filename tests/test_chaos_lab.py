"""The chaos lab for real (root): the CI-sized scenario passes every invariant, and
``lab down`` after an interrupted run leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaos import lab
from chaos.netns import LabError, require_root

try:
    require_root()
    ROOT_REASON = ""
except LabError as exc:
    ROOT_REASON = str(exc)

REPO = Path(__file__).resolve().parent.parent
CI_SCENARIO = REPO / "chaos" / "scenarios" / "ci.yaml"
skip_without_root = pytest.mark.skipif(bool(ROOT_REASON), reason=ROOT_REASON or "root")


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


@pytest.mark.root
@skip_without_root
def test_ci_scenario_passes_every_invariant(tmp_path):
    from chaos.runner import run_scenario

    prefix = "pmtci"
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
        }, text
        assert passed
        history = report["history"]
        assert sum(e["acked"] for e in history["edits"]) == 4
        assert any(not c["ok"] for c in history["ca"])  # the minority refused
        assert any(c["ok"] for c in history["ca"])  # the majority issued
        assert (tmp_path / "report" / "ci.png").stat().st_size > 1000
    finally:
        lab.down(prefix=prefix, state_dir=tmp_path / "lab")
    assert not any(lab.leftovers(prefix).values())


@pytest.mark.root
@skip_without_root
def test_lab_down_after_an_interrupted_run_leaves_nothing_behind(tmp_path):
    prefix = "pmtdn"
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
