"""PNG plots of the growth curves and of the per-point costs (matplotlib)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _curve(ax: Any, xs: List[float], figs: List[Dict[str, Any]], scale: float,
           label: str) -> None:
    ax.plot(xs, [f["median"] * scale for f in figs], "o-", label=f"{label} (median)")
    ax.plot(xs, [f["min"] * scale for f in figs], "x--", alpha=0.6, label=f"{label} (min)")


def draw(r: Dict[str, Any], out: Path) -> List[Path]:
    """Write every plot whose figures are in ``r``; return the files."""
    files = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)

    conc = r.get("concurrency", {}).get("rate")
    if conc:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [int(k) for k in conc]
        _curve(ax, xs, list(conc.values()), 1.0, "align-track")
        ax.set(xlabel="concurrent writer processes", ylabel="points / s (all writers)",
               title="Ingest rate vs concurrent writers", xscale="log", xticks=xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.set_ylim(bottom=0)
        ax.legend()
        save(fig, "concurrency.png")

    cli = r.get("cli", {}).get("by_size")
    if cli:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [int(k) for k in cli]
        for name in ("list", "list_where"):
            _curve(ax, xs, [row["cli"][name] for row in cli.values()], 1e3,
                   f"experiments {name}")
        _curve(ax, xs, [row["inproc"]["list"] for row in cli.values()], 1e3,
               "list, in process")
        ax.set(xlabel="runs in the store", ylabel="ms", xscale="log",
               title="List time vs number of runs")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
        save(fig, "list_vs_runs.png")

    cs = r.get("config_size", {}).get("overhead_ms_per_job")
    if cs:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [int(k) for k in cs]
        _curve(ax, xs, list(cs.values()), 1.0, "tracked - untracked")
        ax.set(xlabel="config leaves", ylabel="ms per job", xscale="log",
               title="Callback overhead vs config size")
        ax.legend()
        save(fig, "callback_vs_config.png")

    bars: List[Tuple[str, Any]] = [
        ("list.append", r.get("list_append", {}).get("per_point")),
        ("align_track.log", r.get("align_track_log", {}).get("per_point")),
        ("aim track", r.get("aim_track", {}).get("per_point")),
        ("mlflow log_batch", r.get("mlflow", {}).get("sqlite", {}).get("log_batch")),
        ("clearml report_scalar", r.get("clearml_report", {}).get("per_point")),
        ("mlflow log_metric", r.get("mlflow", {}).get("sqlite", {}).get("log_metric")),
        ("mlflow log_metric (server)",
         r.get("mlflow", {}).get("server", {}).get("log_metric")),
    ]
    bars = [(k, v) for k, v in bars if v]
    if bars:
        fig, ax = plt.subplots(figsize=(7, 4))
        ys = range(len(bars))
        ax.barh([y + 0.2 for y in ys], [v["median"] * 1e6 for _, v in bars], 0.4,
                label="median")
        ax.barh([y - 0.2 for y in ys], [v["min"] * 1e6 for _, v in bars], 0.4,
                label="min")
        ax.set_yticks(list(ys))
        ax.set_yticklabels([k for k, _ in bars])
        ax.set(xscale="log", xlabel="µs per point (caller side)",
               title="Cost of logging one point")
        ax.legend()
        save(fig, "log_cost.png")
    return files
