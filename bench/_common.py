"""Helpers shared by the benchmarks in ``bench/``.

Processes that are always stopped, free loopback ports, facts about the machine, and
the writer that replaces one marked section of ``docs/benchmarks.md`` while leaving
every other section alone (each benchmark owns the text between its own markers).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from peermesh.agent.devmesh import free_port

__all__ = ["free_port"]

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS_DOC = REPO / "docs" / "benchmarks.md"
DOC_INTRO = (
    "# Benchmarks\n\n"
    "Figures measured by the scripts in `bench/`. Each script rewrites only the text between\n"
    "its own `<!-- bench:NAME:start -->` / `<!-- bench:NAME:end -->` markers; everything\n"
    "outside the markers is left as it is.\n"
)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child after fork
    """Ask Linux to SIGKILL this child if the benchmark itself is killed."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc_name, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ProcessGroup:
    """Child processes that are all stopped when the ``with`` block ends, however it ends."""

    def __init__(self, log_dir: Path, stop_timeout: float = 5.0) -> None:
        self.log_dir = log_dir
        self.stop_timeout = stop_timeout
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self, name: str, args: Sequence[str], *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` with stdout+stderr in ``<log_dir>/<name>.log``, in its own session."""
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # Ctrl-C reaches us; we stop children in order
                preexec_fn=_die_with_parent,
            )
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The last lines a process wrote, for error messages."""
        try:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop_all(self) -> None:
        """SIGTERM every child (newest first), wait, then SIGKILL what is left."""
        running = [p for p in reversed(self.procs.values()) if p.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5)


def wait_until(check: object, what: str, timeout: float = 20.0) -> None:
    """Poll ``check()`` until it returns true; TimeoutError naming ``what`` otherwise."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.05)


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values; NaN if empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def need_h2load(bench: str) -> str:
    """The path of h2load, or exit saying which package provides it."""
    path = shutil.which("h2load")
    if path is None:
        raise SystemExit(f"{bench} needs h2load (apt-get install nghttp2-client)")
    return path


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_total() -> str:
    """Total memory as ``N.N GiB``."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return "unknown"


def cpu_clock() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over CPUs."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def own_cpu_seconds() -> float:
    """CPU seconds used by this process and every child it has waited for."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def busy_fraction(seconds: float = 1.0) -> float:
    """Share of all CPU time spent busy over ``seconds`` (system-wide, from /proc/stat)."""
    try:
        busy0, total0 = cpu_clock()
        time.sleep(seconds)
        busy1, total1 = cpu_clock()
    except (OSError, ValueError, IndexError):
        return math.nan
    total = total1 - total0
    return (busy1 - busy0) / total if total > 0 else math.nan


def command_version(args: Sequence[str], pattern: str = r"\d+\.\d+(\.\d+)?") -> str:
    """First match of ``pattern`` in what ``args`` prints (stdout or stderr), or "?"."""
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(0) if match else "?"


def update_marked_section(name: str, body: str, path: Path = BENCHMARKS_DOC) -> None:
    """Replace the text between ``<!-- bench:NAME:start -->`` and ``...:end -->`` in ``path``.

    The file is created with a short intro when missing; the section is appended when
    its markers are not there yet. Nothing outside the markers changes.
    """
    start = f"<!-- bench:{name}:start -->"
    end = f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else DOC_INTRO
    i, j = text.find(start), text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + block + text[j + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
