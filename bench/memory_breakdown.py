"""Where an idle agent's memory goes: mappings, imports and Python allocations.

``python -m bench.memory --breakdown`` starts a lone agent the way the idle rows of
``bench.memory`` do (``--gossip off``, no certificate) three times and measures it three
ways once it has been idle for ``IDLE_SECONDS``:

1. **Mappings**: ``/proc/PID/smaps`` of a plain agent grouped by what is mapped (the
   malloc heap, anonymous memory, thread stacks, each shared library), with Rss, Pss
   and private pages.
2. **Imports**: the agent command wrapped by this module's ``probe imports`` mode, which
   reads the process's RSS before and after every module it loads and charges the
   difference to the innermost module being loaded (so a package's figure is what its
   own modules and extensions cost, not the packages they pull in), grouped by top-level
   package; then what the agent added after its imports (objects, buffers, threads).
3. **Python allocations**: the agent wrapped by ``probe tracemalloc``, which starts
   ``tracemalloc`` before anything is imported and snapshots it at idle, grouped by the
   file that allocated.

The probes are told to report by ``SIGUSR1`` so the figures are the idle agent's, not
those of its shutdown.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

KIB = 1024
MIB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent
_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$")
TRUST_DOMAIN = "bench.mesh"
IDLE_SECONDS = 8.0
_THREAD_STACK_KIB = 8192  # glibc's default pthread stack (RLIMIT_STACK); Python keeps it


# --- in the agent's process ------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _group(module: str) -> str:
    """peermesh and gossip by subpackage (which part of ours costs what), others by
    top-level package."""
    parts = module.split(".")
    if parts[0] in ("peermesh", "gossip", "certs") and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


class _ImportMeter:
    """Charges RSS growth to the innermost module being created or executed."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.last = _rss_bytes()
        self.start = self.last
        self.rss: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self.modules: dict[str, int] = defaultdict(int)
        self.order: list[str] = []
        self.clock = time.perf_counter()

    def _charge(self) -> None:
        now, clock = _rss_bytes(), time.perf_counter()
        owner = self.stack[-1] if self.stack else "(between imports)"
        self.rss[owner] += now - self.last
        self.seconds[owner] += clock - self.clock
        self.last, self.clock = now, clock

    def enter(self, module: str) -> None:
        self._charge()
        group = _group(module)
        if group not in self.modules:
            self.order.append(group)
        self.stack.append(group)

    def leave(self) -> None:
        self._charge()
        self.stack.pop()


class _MeteredLoader:
    """A loader that measures the one it wraps; every other attribute is the original's
    (resource readers, ``get_source``), so the imported modules behave as without it."""

    def __init__(self, loader: Any, name: str, meter: _ImportMeter) -> None:
        self._loader, self._name, self._meter = loader, name, meter

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._loader, attr)

    def create_module(self, spec: Any) -> ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        if create is None:
            return None
        self._meter.enter(self._name)
        try:
            module: ModuleType | None = create(spec)
            return module
        finally:
            self._meter.leave()

    def exec_module(self, module: ModuleType) -> None:
        self._meter.enter(self._name)
        self._meter.modules[_group(self._name)] += 1
        try:
            self._loader.exec_module(module)
        finally:
            self._meter.leave()


class _MeteringFinder:
    def __init__(self, meter: _ImportMeter) -> None:
        self.meter = meter

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = cast(Any, _MeteredLoader(spec.loader, name, self.meter))
                return spec
        return None


def _malloc_info() -> dict[str, int]:
    """glibc's ``mallinfo2``: bytes the heap holds (arena + mmapped) and bytes in use."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                         "fsmblks", "uordblks", "fordblks", "keepcost")
        ]  # fmt: skip

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return {"arena": info.arena, "mmapped": info.hblkhd, "in_use": info.uordblks,
            "free": info.fordblks}  # fmt: skip


def _idle_facts() -> dict[str, Any]:
    import gc
    import threading

    return {
        "idle_rss": _rss_bytes(),
        "loaded": len(sys.modules),
        "threads": [t.name for t in threading.enumerate()],
        "malloc": _malloc_info(),
        "pymalloc_blocks": sys.getallocatedblocks(),
        "gc_frozen": gc.get_freeze_count(),
    }


def probe(argv: list[str]) -> None:
    """``python -m bench.memory_breakdown probe (imports|tracemalloc) OUT AGENT-ARGS...``:
    run the agent command measured; write the figures to OUT on ``SIGUSR1``."""
    mode, out, agent_args = argv[0], Path(argv[1]), argv[2:]
    if mode == "tracemalloc":
        import tracemalloc

        tracemalloc.start(1)

        def report(*_: object) -> None:
            snapshot = tracemalloc.take_snapshot()
            stats = snapshot.statistics("filename")
            out.write_text(json.dumps({
                "traced": sum(s.size for s in stats),
                "files": [(str(s.traceback[0].filename), s.size, s.count) for s in stats],
                **_idle_facts(),
            }))  # fmt: skip

    else:
        meter = _ImportMeter()
        sys.meta_path.insert(0, cast(Any, _MeteringFinder(meter)))

        def report(*_: object) -> None:
            meter._charge()
            out.write_text(json.dumps({
                "start": meter.start, "rss": meter.rss, "seconds": meter.seconds,
                "modules": meter.modules, "order": meter.order, **_idle_facts(),
            }))  # fmt: skip

    signal.signal(signal.SIGUSR1, report)
    from peermesh.cli import main

    main(["agent", *agent_args], prog_name="peermesh")


# --- reading the mappings --------------------------------------------------------------


@dataclass(frozen=True)
class Mapping:
    name: str
    rss: int  # KiB
    pss: int
    private: int


def _mapping_name(perms: str, path: str, size_kib: int) -> str:
    if not path:
        if size_kib == _THREAD_STACK_KIB and "w" in perms:
            return "thread stacks (anonymous, 8 MiB each)"
        return "anonymous (pymalloc arenas, large malloc blocks)"
    if path == "[heap]":
        return "[heap] (malloc, brk)"
    if path.startswith("["):
        return path
    name = Path(path).name
    if "site-packages/" in path:
        package = path.split("site-packages/", 1)[1].split("/", 1)[0]
        return name if package == name else f"{package}: {name}"
    return name


def mappings(pid: int) -> list[Mapping]:
    """``/proc/PID/smaps`` summed per mapped object, largest RSS first."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    current = sums["?"]
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        header = _MAPPING.match(line)
        if header:
            start, _, end = line.split(" ", 1)[0].partition("-")
            size = (int(end, 16) - int(start, 16)) // KIB
            current = sums[_mapping_name(header[1], header[2].strip(), size)]
            continue
        key, _, value = line.partition(":")
        if key == "Rss":
            current[0] += int(value.split()[0])
        elif key == "Pss":
            current[1] += int(value.split()[0])
        elif key in ("Private_Clean", "Private_Dirty"):
            current[2] += int(value.split()[0])
    found = [Mapping(name, *values) for name, values in sums.items() if values[0]]
    return sorted(found, key=lambda m: -m.rss)


# --- the report ------------------------------------------------------------------------


def _mib(kib: float) -> str:
    return f"{kib / KIB:.1f}"


def mapping_rows(found: Sequence[Mapping], top: int = 12) -> list[str]:
    rows = [f"| {m.name} | {_mib(m.rss)} | {_mib(m.pss)} | {_mib(m.private)} |"
            for m in found[:top]]  # fmt: skip
    rest = found[top:]
    if rest:
        rows.append(
            f"| {len(rest)} other mappings | {_mib(sum(m.rss for m in rest))} "
            f"| {_mib(sum(m.pss for m in rest))} | {_mib(sum(m.private for m in rest))} |"
        )
    rows.append(
        f"| **total** | **{_mib(sum(m.rss for m in found))}** "
        f"| **{_mib(sum(m.pss for m in found))}** | **{_mib(sum(m.private for m in found))}** |"
    )
    return rows


def import_rows(data: dict[str, Any], top: int = 25) -> list[str]:
    charged = {k: v for k, v in data["rss"].items() if k != "(between imports)"}
    total = sum(charged.values())
    ranked = sorted(charged, key=lambda k: -charged[k])
    rows = [
        f"| {name} | {data['modules'].get(name, 0)} | {charged[name] / MIB:.2f} "
        f"| {data['seconds'].get(name, 0.0) * 1000:.0f} |"
        for name in ranked[:top]
    ]
    rest = ranked[top:]
    if rest:
        rows.append(
            f"| {len(rest)} other packages | {sum(data['modules'].get(n, 0) for n in rest)} "
            f"| {sum(charged[n] for n in rest) / MIB:.2f} "
            f"| {sum(data['seconds'].get(n, 0.0) for n in rest) * 1000:.0f} |"
        )
    after = data["rss"].get("(between imports)", 0)
    rows.append(f"| **all imports** | **{sum(data['modules'].values())}** "
                f"| **{total / MIB:.1f}** | |")  # fmt: skip
    rows.append(f"| not during an import (the agent's objects, buffers, threads) | | "
                f"{after / MIB:.1f} | |")  # fmt: skip
    return rows


def _short(path: str) -> str:
    """A file as a reader finds it: the package path, ours from the repository root."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if path.startswith(f"{REPO}/"):
        return path.removeprefix(f"{REPO}/")
    if "/lib/python3" in path:
        return "stdlib " + path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return path


def tracemalloc_rows(data: dict[str, Any], top: int = 30) -> list[str]:
    files = data["files"]
    rows = [f"| {_short(name)} | {size / KIB:.0f} | {count} |" for name, size, count in files[:top]]
    rest = files[top:]
    rows.append(f"| {len(rest)} other files | {sum(f[1] for f in rest) / KIB:.0f} "
                f"| {sum(f[2] for f in rest)} |")  # fmt: skip
    rows.append(f"| **traced in all** | **{data['traced'] / KIB:.0f}** | |")
    return rows


def facts(data: dict[str, Any]) -> str:
    malloc = data["malloc"]
    return (
        f"{data['loaded']} modules loaded; threads: {', '.join(data['threads'])}; "
        f"glibc malloc holds {(malloc['arena'] + malloc['mmapped']) / MIB:.1f} MiB "
        f"({malloc['in_use'] / MIB:.1f} MiB in use, {malloc['free'] / MIB:.1f} MiB free in "
        f"its arenas); {data['gc_frozen']} objects frozen by `gc.freeze()`"
    )


# --- the floor: what the agent cannot run without ------------------------------------

FLOOR_STEPS: tuple[tuple[str, str], ...] = (
    ("the interpreter", "pass"),
    ("+ trio", "import trio"),
    ("+ ssl (OpenSSL), a TLS context", "import ssl; ssl.create_default_context()"),
    ("+ cryptography (x509, Ed25519)",
     "import cryptography.x509, cryptography.hazmat.primitives.asymmetric.ed25519"),
    ("+ pycrdt", "import pycrdt"),
    ("+ click, prometheus_client, msgpack, h11", "import click, prometheus_client, msgpack, h11"),
)  # fmt: skip

_FLOOR_PROBE = """
import json, sys
def sample():
    rss = pss = private = 0
    for line in open("/proc/self/smaps_rollup"):
        key, _, value = line.partition(":")
        if key == "Rss": rss = int(value.split()[0])
        elif key == "Pss": pss = int(value.split()[0])
        elif key in ("Private_Clean", "Private_Dirty"): private += int(value.split()[0])
    return rss, pss, private
out = []
for step in json.loads(sys.argv[1]):
    exec(step)
    out.append(sample())
print(json.dumps(out))
"""


def floor() -> list[tuple[str, int, int, int]]:
    """RSS, Pss and private KiB of a fresh interpreter after each of ``FLOOR_STEPS``."""
    import subprocess

    steps = json.dumps([code for _, code in FLOOR_STEPS])
    done = subprocess.run([sys.executable, "-c", _FLOOR_PROBE, steps],
                          capture_output=True, text=True, check=True)  # fmt: skip
    samples = json.loads(done.stdout)
    return [(label, *sample) for (label, _), sample in zip(FLOOR_STEPS, samples, strict=True)]


def floor_rows(steps: Sequence[tuple[str, int, int, int]]) -> list[str]:
    return [f"| {label} | {_mib(rss)} | {_mib(pss)} | {_mib(private)} |"
            for label, rss, pss, private in steps]  # fmt: skip


# --- the three measurements ------------------------------------------------------------


def _idle_agent(tmp: Path, label: str, command: Sequence[str] | None) -> tuple[Any, Any]:
    from bench._common import ProcessGroup
    from bench.agents import Agents

    work = tmp / label
    work.mkdir()
    group = ProcessGroup(work)
    agents = Agents(work, group, TRUST_DOMAIN)
    agents.start("node-a", "web", 9, "--gossip", "off", certificate=False, command=command)
    time.sleep(max(0.0, agents.started["node-a"] + IDLE_SECONDS - time.monotonic()))
    return group, agents


def _probed(tmp: Path, mode: str) -> dict[str, Any]:
    from bench._common import wait_until
    from bench.agents import PY

    out = tmp / f"{mode}.json"
    command = [PY, "-m", "bench.memory_breakdown", "probe", mode, str(out)]
    group, _ = _idle_agent(tmp, mode, command)
    with group:
        os.kill(group.procs["node-a"].pid, signal.SIGUSR1)
        wait_until(out.exists, f"{mode} probe report", 60)
        time.sleep(0.5)  # the report is written in one call; let it finish
        data: dict[str, Any] = json.loads(out.read_text())
    return data


def measure(tmp: Path) -> dict[str, Any]:
    group, _ = _idle_agent(tmp, "plain", None)
    with group:
        pid = group.procs["node-a"].pid
        found = mappings(pid)
        threads = len(list(Path(f"/proc/{pid}/task").iterdir()))
    return {"mappings": found, "threads": threads, "imports": _probed(tmp, "imports"),
            "tracemalloc": _probed(tmp, "tracemalloc"), "floor": floor()}  # fmt: skip


def text(figures: dict[str, Any], top: int = 30) -> str:
    """The breakdown as Markdown; ``top`` rows per table (the doc keeps a short one)."""
    newline = "\n"
    imports = figures["imports"]
    return f"""### Where an idle agent's memory goes (`python -m bench.memory --breakdown`)

A lone agent with `--gossip off`, {IDLE_SECONDS:.0f} s after start, measured three ways
(three agent processes, one after the other). *Mappings*: `/proc/PID/smaps` summed per
mapped object ({figures["threads"]} thread(s) in the process); *private* is what this
agent alone holds, *Pss* shares each shared page among the processes that map it.

| mapping | RSS MiB | Pss MiB | private MiB |
|---|---:|---:|---:|
{newline.join(mapping_rows(figures["mappings"], min(top, 12)))}

*Imports*: RSS growth while each module was created or executed, charged to the
innermost module being loaded and summed by package (ours by subpackage); the
interpreter had {imports["start"] / MIB:.1f} MiB RSS before the first import. Memory freed
during start-up is reused by whichever module allocates next, so the split between
packages moves by up to about 1 MiB from run to run; the total does not.
{facts(imports)}.

| package | modules | RSS MiB | import ms (metered) |
|---|---:|---:|---:|
{newline.join(import_rows(imports, top))}

*Python allocations*: `tracemalloc` started before the first import, snapshot at idle,
by the file that allocated (live blocks only; tracemalloc's own bookkeeping is not
counted).

| file | KiB | blocks |
|---|---:|---:|
{newline.join(tracemalloc_rows(figures["tracemalloc"], top))}

*Floor*: a fresh interpreter (`python -c`) importing, in order, what an agent cannot
run without; each row is the process after that step.

| step | RSS MiB | Pss MiB | private MiB |
|---|---:|---:|---:|
{newline.join(floor_rows(figures["floor"]))}
"""


if __name__ == "__main__":
    if sys.argv[1:2] == ["probe"]:
        probe(sys.argv[2:])
