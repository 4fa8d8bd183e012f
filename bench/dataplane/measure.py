"""Sampling what the sidecars use: RSS (idle and peak), CPU seconds, and liveness."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Sequence

import psutil

from bench._common import ProcessGroup
from bench.dataplane.model import BenchError, Setup

# --- measuring ---------------------------------------------------------------------------


class RssSampler:
    """Samples the RSS of every sidecar every 20 ms in a thread; keeps the peaks."""

    def __init__(self, setups: Sequence[Setup], interval: float = 0.02) -> None:
        self.setups = setups
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for setup in self.setups:
                for role, proc in setup.sidecars.items():
                    with contextlib.suppress(psutil.Error):
                        rss = int(proc.memory_info().rss)
                        setup.peak_rss[role] = max(setup.peak_rss.get(role, 0), rss)
            self._stop.wait(self.interval)


def cpu_seconds(setup: Setup) -> dict[str, float]:
    """User+system CPU seconds used so far by each sidecar."""
    out: dict[str, float] = {}
    for role, proc in setup.sidecars.items():
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            out[role] = float(times.user + times.system)
    return out


def check_alive(group: ProcessGroup, setup: Setup) -> None:
    """Raise BenchError if nginx or one of the setup's sidecars has exited."""
    for role, name in [*setup.proc_names.items(), ("upstream", "nginx")]:
        proc = group.procs[name]
        if proc.poll() is not None:
            raise BenchError(
                f"{name} ({setup.name}, {role}) exited with {proc.returncode}; "
                f"last log lines:\n{group.log_tail(name)}"
            )


def measure_idle_rss(setups: Iterable[Setup]) -> None:
    """RSS of each sidecar after start, before any request."""
    for setup in setups:
        for role, proc in setup.sidecars.items():
            with contextlib.suppress(psutil.Error):
                setup.idle_rss[role] = int(proc.memory_info().rss)
