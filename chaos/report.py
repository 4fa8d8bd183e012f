"""The report: JSON, a one-screen summary and a PNG of success rate and p99 latency."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from chaos.checker import summary_text
from chaos.history import History, Verdict
from chaos.timeline import classify, quantile

COLORS = {
    "partition": "tab:red",
    "flaky": "tab:orange",
    "loss": "tab:purple",
    "delay": "tab:cyan",
    "kill": "black",
    "stop": "tab:brown",
    "clock-skew": "tab:olive",
    "restart": "tab:pink",
}


def plot(history: History, path: Path, title: str, bucket: float = 1.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = history.start
    series: dict[str, dict[int, list[tuple[bool, float]]]] = {"all requests": {}, "same side": {}}
    for r in history.requests:
        key = int((r.t - t0) // bucket)
        series["all requests"].setdefault(key, []).append((r.status == 200, r.lat))
        if classify(history, r) == "same-side":
            series["same side"].setdefault(key, []).append((r.status == 200, r.lat))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True, dpi=80)
    seen: set[str] = set()
    for w in history.windows:
        end = (w.end or history.end) - t0
        label = w.kind if w.kind not in seen else None
        seen.add(w.kind)
        for ax in (ax1, ax2):
            ax.axvspan(
                w.start - t0,
                end,
                color=COLORS.get(w.kind, "grey"),
                alpha=0.15,
                label=label if ax is ax1 else None,
            )
    ax1.axvline(history.final_heal - t0, color="green", lw=1, ls="--", label="final heal")
    for (name, buckets), color in zip(series.items(), ("tab:grey", "tab:blue"), strict=True):
        xs = sorted(buckets)
        rate = [sum(ok for ok, _ in buckets[x]) / len(buckets[x]) * 100 for x in xs]
        p99 = [max(1.0, quantile([lat for _, lat in buckets[x]], 0.99) * 1000) for x in xs]
        ax1.plot([x * bucket for x in xs], rate, lw=1.1, color=color, label=name)
        ax2.plot([x * bucket for x in xs], p99, lw=1.1, color=color, label=name)
    ax1.set_ylabel("success %")
    ax1.set_ylim(-5, 105)
    ax1.legend(loc="lower left", fontsize=7, ncol=5)
    ax1.set_title(title, fontsize=10)
    ax2.legend(loc="upper right", fontsize=7)
    ax2.set_ylabel("p99 latency ms")
    ax2.set_yscale("log")
    ax2.set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(
    out_dir: Path, name: str, history: History, verdicts: Sequence[Verdict]
) -> tuple[Path, Path, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = summary_text(name, history, verdicts)
    report = {
        "scenario": name,
        "passed": all(v.passed for v in verdicts),
        "invariants": [asdict(v) for v in verdicts],
        "history": history.to_json(),
    }
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(report, indent=1, default=str))
    png_path = out_dir / f"{name}.png"
    plot(history, png_path, f"{name}: success rate and p99 latency (faults shaded)")
    (out_dir / f"{name}.txt").write_text(text + "\n")
    return json_path, png_path, text
