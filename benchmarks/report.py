"""Ratios, targets, the JSON file, the Markdown table and the plots."""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import sqlite3
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

RATIO_KEYS = ("log_vs_list_append", "log_vs_mlflow_log_metric", "log_vs_aim_track",
              "ingest_vs_executemany", "callback_overhead_fraction", "bytes_vs_mlflow",
              "list_vs_mlflow_search")


def _get(data: Dict[str, Any], *path: str) -> Optional[float]:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return float(data) if isinstance(data, (int, float)) else None


def _div(a: Optional[float], b: Optional[float]) -> float:
    if a is None or b is None or b == 0:
        return math.nan
    return a / b


def ratios(r: Dict[str, Any], stat: str = "median") -> Dict[str, float]:
    """The issue's ratios from the figures in ``r`` (medians unless ``stat``)."""
    ours = _get(r, "align_track_log", "per_point", stat)
    ml = r.get("mlflow", {})
    cli = r.get("cli", {}).get("by_size", {})
    largest = cli[max(cli, key=int)]["inproc"] if cli else {}
    scale = r.get("mlflow_scale", {})
    cb = r.get("callback", {})
    untracked = _get(cb, "untracked_s", stat)
    tracked = _get(cb, "tracked_s", stat)
    ing = r.get("ingest", {})
    conc = r.get("concurrency", {})
    out = {
        # burst by burst against the floor timed beside it; else the two cases apart
        "log_vs_list_append": _get(r, "align_track_log", "ratio", stat) or _div(
            ours, _get(r, "list_append", "per_point", stat)),
        "log_vs_mlflow_log_metric": _div(_get(ml, "sqlite", "log_metric", stat), ours),
        "log_vs_aim_track": _div(_get(r, "aim_track", "per_point", stat), ours),
        "ingest_vs_executemany": _get(ing, "ratio", stat) or _div(
            _get(ing, "ours_rate", stat), _get(ing, "floor_rate", stat)),
        # round by round (each tracked sweep against the untracked one beside it);
        # else from the two medians
        "callback_overhead_fraction": _get(cb, "overhead_fraction", stat) or _div(
            None if tracked is None or untracked is None else tracked - untracked, untracked),
        "bytes_vs_mlflow": _div(_get(ing, "ours_bytes", stat),
                                _get(ml, "sqlite", "bytes_per_point")),
        # the same filter over the same runs (MLflow cannot hold 100,000 in minutes)
        "list_vs_mlflow_search": _div(_get(scale, "search_eq_page", stat),
                                      _get(scale, "ours_same_n", "list_where_eq", stat)),
        # more of the same kind, beyond the minimum
        "log_vs_mlflow_log_metric_server": _div(_get(ml, "server", "log_metric", stat), ours),
        "log_vs_mlflow_log_batch": _div(_get(ml, "sqlite", "log_batch", stat), ours),
        "log_vs_clearml_report_scalar": _div(_get(r, "clearml_report", "per_point", stat),
                                             ours),
        "bytes_vs_executemany": _div(_get(ing, "ours_bytes", stat),
                                     _get(ing, "floor_bytes", stat)),
        "bytes_vs_aim": _div(_get(ing, "ours_bytes", stat),
                             _get(r, "aim_track", "bytes_per_point")),
        # writers' rate alone / beside a list-show-query loop (1.0: no slowdown)
        "writers_slowdown_beside_reader": _div(
            _get(conc, "rate", str(conc.get("with_reader", {}).get("writers")), stat),
            _get(conc, "with_reader", "rate", stat)),
        # what any Python function called as log() costs, and log() back to back
        # (faster than the store writes: back-pressure makes the loop wait)
        "empty_call_vs_list_append": _div(_get(r, "list_append", "empty_call", stat),
                                          _get(r, "list_append", "per_point", stat)),
        "clock_read_vs_list_append": _div(_get(r, "list_append", "with_clock", stat),
                                          _get(r, "list_append", "per_point", stat)),
        # a log() with none of log()'s checks: the least a Python log() can cost
        "bare_log_vs_list_append": _get(r, "align_track_log", "bare_ratio", stat) or _div(
            _get(r, "list_append", "bare_log", stat), _get(r, "list_append", "per_point", stat)),
        "log_vs_list_append_cases_apart": _div(ours, _get(r, "list_append", "per_point", stat)),
        "log_sustained_vs_list_append": _div(
            _get(r, "align_track_log", "sustained", stat),
            _get(r, "list_append", "per_point", stat)),
        "ingest_vs_executemany_without_writer_process": _get(ing, "thread_ratio", stat),
        "list_at_max_runs_vs_mlflow_search": _div(_get(scale, "search_eq_page", stat),
                                                  _get(largest, "list_where_eq", stat)),
    }
    return {k: (v if v is not None and math.isfinite(v) else math.nan)
            for k, v in out.items()}


def _sdk_paths(r: Dict[str, Any], backend: str) -> Tuple[Optional[float], Optional[float]]:
    """(seconds per point calling the SDK per point, per point on its best path until
    stored, its close included) measured for the peer rows."""
    def with_close(fig: Dict[str, Any]) -> Optional[float]:
        per = _get(fig, "per_point", "median")
        if per is None or not fig.get("points"):
            return per
        return per + fig.get("close_s", 0.0) / fig["points"]

    ml = r.get("mlflow", {}).get("sqlite", {})
    if backend == "mlflow":
        return _get(ml, "log_metric", "median"), _get(ml, "log_batch", "median")
    peer = r.get({"aim": "aim_track", "clearml": "clearml_report"}.get(backend, ""), {})
    return _get(peer, "per_point", "median"), with_close(peer)


def targets(r: Dict[str, Any], q: Dict[str, float]) -> List[Tuple[str, str, str, bool]]:
    """(what, measured, target, met) for each target of the issue that was measured."""
    rows = []

    def add(what: str, value: Optional[float], fmt: str, target: str, ok: bool) -> None:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            rows.append((what, fmt.format(value), target, bool(ok)))

    add("log() vs list append", q["log_vs_list_append"], "{:.2f}x", "<= 5x",
        q["log_vs_list_append"] <= 5)
    add("log() vs mlflow.log_metric (sqlite)", q["log_vs_mlflow_log_metric"],
        "{:.0f}x cheaper", ">= 1000x", q["log_vs_mlflow_log_metric"] >= 1000)
    add("log() vs Aim track", q["log_vs_aim_track"], "{:.0f}x cheaper", ">= 30x",
        q["log_vs_aim_track"] >= 30)
    add("ingest vs executemany", q["ingest_vs_executemany"], "{:.0%}", ">= 70%",
        q["ingest_vs_executemany"] >= 0.7)
    add("sweep overhead with tracker=sqlite", q["callback_overhead_fraction"], "{:+.1%}",
        "<= 10%", q["callback_overhead_fraction"] <= 0.10)
    imp = _get(r, "import", "over_bare_s", "median")
    heavy = r.get("import", {}).get("heavy_modules_loaded", [])
    add("import align_track over bare python", None if imp is None else imp * 1e3,
        "{:.0f} ms", "<= 20 ms", imp is not None and imp <= 0.020)
    if "import" in r:
        rows.append(("heavy modules after import", ", ".join(heavy) or "none", "none",
                     not heavy))
    add("bytes per point vs executemany", q["bytes_vs_executemany"], "{:.2f}x", "<= 1.2x",
        q["bytes_vs_executemany"] <= 1.2)
    add("bytes per point vs MLflow", q["bytes_vs_mlflow"], "{:.2f}x", "about 0.25x",
        q["bytes_vs_mlflow"] <= 0.3)
    mem_max = max(r["memory"]["growth_bytes"]["samples"]) if "memory" in r else None
    add(f"RSS growth logging {r.get('memory', {}).get('n', 0):,} points (largest sample)",
        None if mem_max is None else mem_max / 2**20, "{:.0f} MiB", "< 64 MB",
        mem_max is not None and mem_max < 64 * 2**20)
    cli = r.get("cli", {}).get("by_size", {})
    if cli:
        size = max(cli, key=int)
        for name, label in (("list", "experiments list"),
                            ("list_where", "experiments list --where 'params.lr > 0.01'"),
                            ("show", "experiments show"), ("compare", "compare 10 runs")):
            v = _get(cli[size], "cli", name, "median")
            add(f"{label}, {int(size):,} runs (CLI wall)", v, "{:.3f} s", "< 0.2 s",
                v is not None and v < 0.2)
    add("filtered list vs mlflow.search_runs", q["list_vs_mlflow_search"], "{:.0f}x",
        ">= 50x", q["list_vs_mlflow_search"] >= 50)
    for name, row in r.get("backends", {}).items():
        if "skipped" in row:
            continue
        direct, best_path = _sdk_paths(r, name)
        loop = _get(row, "loop_per_point", "median")
        add(f"tracker={name}: user loop vs the SDK per point", _div(direct, loop),
            "{:.0f}x faster", ">= 30x", _div(direct, loop) >= 30)
        end = _get(row, "points_per_point", "median") or _get(row, "end_to_end_per_point",
                                                               "median")
        add(f"tracker={name}: per point until stored vs the SDK's best path",
            _div(end, best_path), "{:.2g}x its time", "<= 1x", _div(end, best_path) <= 1)
    reading = r.get("concurrency", {}).get("with_reader")
    if reading:
        add(f"{reading['writers']} writers' slowdown beside a list/show/query loop "
            f"({reading['reader_calls']} calls, {reading['reader_failures']} failed)",
            q["writers_slowdown_beside_reader"], "{:.2f}x", "a small fraction",
            q["writers_slowdown_beside_reader"] <= 1.2 and reading["reader_failures"] == 0)
    return rows


def machine() -> Dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh
                        if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            mem = int(fh.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        mem = None
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "memory_bytes": mem, "load_average_at_end": load,
            "python": sys.version.split()[0]}


def versions() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {"python": sys.version.split()[0],
                                     "sqlite": sqlite3.sqlite_version}
    for dist in ("align-track", "mlflow", "aim", "clearml", "hydra-core", "omegaconf"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def write(results: Dict[str, Any], sizes: Dict[str, Any], notes: List[str],
          out_dir: Path, quick: bool, seconds: float) -> Dict[str, Any]:
    """Write latest.json, latest.md and the plots; return the JSON document."""
    out_dir.mkdir(parents=True, exist_ok=True)
    q = ratios(results)
    doc = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "suite_seconds": seconds,
        "ratios": q,
        "ratios_from_min": ratios(results, "min"),
        "targets": [dict(zip(("what", "measured", "target", "met"), t))
                    for t in targets(results, q)],
        "versions": versions(),
        "machine": machine(),
        "sizes": sizes,
        "notes": notes,
        "results": results,
    }
    tmp = out_dir / "latest.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str, allow_nan=True) + "\n")
    os.replace(tmp, out_dir / "latest.json")
    (out_dir / "latest.md").write_text(markdown(doc))
    try:
        from benchmarks import plots

        plots.draw(results, out_dir)
    except ImportError as exc:  # matplotlib is optional
        doc["notes"].append(f"no plots: {exc}")
    return doc


def _us(v: Optional[float]) -> str:
    return "" if v is None else f"{v * 1e6:,.2f} µs"


def _row(label: str, fig: Any, fmt: Any = _us, n: Any = "") -> str:
    if not isinstance(fig, dict) or "min" not in fig:
        return ""
    return f"| {label} | {fmt(fig['min'])} | {fmt(fig['median'])} | {n} |\n"


def markdown(doc: Dict[str, Any]) -> str:
    """The tables of latest.md (also pasted into docs/benchmarks.md)."""
    r, q, s = doc["results"], doc["ratios"], doc["sizes"]
    v, m = doc["versions"], doc["machine"]
    text = (f"Run {doc['date']} ({doc['mode']} mode, {doc['suite_seconds']:.0f} s) on "
            f"{m['cpus']} × {m['cpu']}, {m['platform']}, load average at the end "
            + (", ".join(f"{x:.2f}" for x in m["load_average_at_end"])
               if m.get("load_average_at_end") else "unknown") + ".\n"
            + "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".\n\n")
    text += "### Targets\n\n| what | measured (median) | target | met |\n|---|---|---|---|\n"
    for t in doc["targets"]:
        text += f"| {t['what']} | {t['measured']} | {t['target']} | {'yes' if t['met'] else '**no**'} |\n"
    text += "\n### Ratios (from medians)\n\n| ratio | value |\n|---|---|\n"
    for k, val in q.items():
        text += f"| `{k}` | {val:,.3g} |\n"
    text += "\n### Figures\n\n| figure | min | median | N |\n|---|---|---|---|\n"
    ml = r.get("mlflow", {})
    bursts = f"{s['bursts']} × {s['burst']:,}"
    text += _row("list.append per point (floor)", r.get("list_append", {}).get("per_point"),
                 n=bursts)
    text += _row("list.append per point with a clock read each (time.time())",
                 r.get("list_append", {}).get("with_clock"), n=bursts)
    text += _row("a Python function that does nothing, called as log()",
                 r.get("list_append", {}).get("empty_call"), n=bursts)
    text += _row("a bare log(): clock read and tuple append, no checks",
                 r.get("list_append", {}).get("bare_log"), n=bursts)
    log = r.get("align_track_log", {})
    text += _row("align_track.log per point (caller, bursts)", log.get("per_point"),
                 n=bursts)
    ratio = lambda x: f"{x:.2f}x"  # noqa: E731
    text += _row("paired rounds: list.append per point (floor)", log.get("paired_floor"),
                 n=bursts)
    text += _row("paired rounds: align_track.log per point", log.get("paired_per_point"),
                 n=bursts)
    text += _row("paired rounds: log() ÷ the floor of its round", log.get("ratio"), ratio,
                 bursts)
    text += _row("paired rounds: bare log() ÷ the floor of its round",
                 log.get("bare_ratio"), ratio, bursts)
    text += _row("align_track.log per point, back to back (bounded by ingest)",
                 log.get("sustained"), n=s["log_n"])
    text += _row("mlflow.log_metric per point, sqlite",
                 ml.get("sqlite", {}).get("log_metric"), n=s["mlflow_metric_sqlite"])
    text += _row("mlflow.log_metric per point, server",
                 ml.get("server", {}).get("log_metric"), n=s["mlflow_metric_server"])
    text += _row("MlflowClient.log_batch per point, sqlite",
                 ml.get("sqlite", {}).get("log_batch"), n=s["mlflow_batch"])
    text += _row("MlflowClient.log_batch per point, server",
                 ml.get("server", {}).get("log_batch"), n=s["mlflow_batch"])
    text += _row("aim Run.track per point", r.get("aim_track", {}).get("per_point"),
                 n=s["aim_n"])
    text += _row("clearml report_scalar per point (offline)",
                 r.get("clearml_report", {}).get("per_point"), n=s["clearml_n"])
    ing = r.get("ingest", {})
    rate = lambda x: f"{x:,.0f} points/s"  # noqa: E731
    size = lambda x: f"{x:.1f} B"  # noqa: E731
    secs = lambda x: f"{x * 1e3:,.1f} ms"  # noqa: E731
    text += _row("align-track ingest until durable", ing.get("ours_rate"), rate,
                 s["ingest_n"])
    text += _row("align-track ingest until durable, writer process off "
                 "(ALIGN_TRACK_BULK=0)", ing.get("thread_rate"), rate, s["ingest_n"])
    text += _row("ingest ÷ the floor measured beside it (writer process)",
                 ing.get("ratio"), lambda x: f"{x:.0%}", s["ingest_n"])
    text += _row("ingest ÷ the floor measured beside it (ALIGN_TRACK_BULK=0)",
                 ing.get("thread_ratio"), lambda x: f"{x:.0%}", s["ingest_n"])
    text += _row("raw executemany, WAL, indexed (floor)", ing.get("floor_rate"), rate,
                 s["ingest_n"])
    text += _row("align-track bytes per point", ing.get("ours_bytes"), size, s["ingest_n"])
    text += _row("raw sqlite bytes per point", ing.get("floor_bytes"), size, s["ingest_n"])
    for label in ("sqlite",):
        b = ml.get(label, {}).get("bytes_per_point")
        if b is not None:
            text += f"| MLflow sqlite bytes per point | {b:.1f} B | {b:.1f} B | {s['mlflow_batch'] * max(2, s['repeats'] - 2)} |\n"
    b = r.get("aim_track", {}).get("bytes_per_point")
    if b is not None:
        text += f"| Aim repo bytes per point | {b:.1f} B | {b:.1f} B | {r['aim_track']['points']} |\n"
    mem = r.get("memory", {})
    text += _row("RSS growth while logging", mem.get("growth_bytes"),
                 lambda x: f"{x / 2**20:.1f} MiB", s["memory_n"])
    imp = r.get("import", {})
    text += _row("import align_track over bare python", imp.get("over_bare_s"), secs)
    for mod, fig in imp.get("peers_s", {}).items():
        text += _row(f"python -c 'import {mod}' (whole process)", fig, secs)
    cb = r.get("callback", {})
    text += _row(f"{s['sweep_jobs']}-job sweep, untracked", cb.get("untracked_s"), secs)
    text += _row(f"{s['sweep_jobs']}-job sweep, +tracker=sqlite", cb.get("tracked_s"), secs)
    text += _row("tracking overhead per job", cb.get("overhead_ms_per_job"),
                 lambda x: f"{x:,.1f} ms")
    text += _row("tracked ÷ untracked sweep of the same round, less 1",
                 cb.get("overhead_fraction"), lambda x: f"{x:+.1%}", s["sweep_repeats"])
    text += _row(f"{s['sweep_jobs']}-job sweep, untracked, +extra=empty (an empty "
                 "config group)", cb.get("empty_group_s"), secs)
    text += _row("Hydra's cost of an empty config group, per job",
                 cb.get("empty_group_ms_per_job"), lambda x: f"{x:,.1f} ms")
    for leaves, fig in r.get("config_size", {}).get("overhead_ms_per_job", {}).items():
        text += _row(f"overhead per job, {int(leaves):,}-leaf config", fig,
                     lambda x: f"{x:,.1f} ms")
    for k, fig in r.get("concurrency", {}).get("rate", {}).items():
        text += _row(f"ingest with {k} writer processes", fig, rate,
                     f"{k} × {s['writer_n']:,}")
    for size_, row in r.get("cli", {}).get("by_size", {}).items():
        for name, fig in row["cli"].items():
            text += _row(f"CLI `{name}`, {int(size_):,} runs (process wall)", fig, secs)
        for name, fig in row["inproc"].items():
            text += _row(f"in-process {name}, {int(size_):,} runs", fig, secs)
    sc = r.get("mlflow_scale", {})
    for name in ("search_eq_page", "search_eq_all", "search_page"):
        text += _row(f"mlflow.search_runs {name}, {sc.get('runs', 0):,} runs", sc.get(name),
                     secs)
    for name, fig in sc.get("ours_same_n", {}).items():
        text += _row(f"align-track in-process {name}, the same {sc.get('runs', 0):,} runs "
                     "as MLflow's", fig, secs)
    if "per_run_s" in sc:
        text += (f"| MLflow: create one run (50 params, 10 metrics) | "
                 f"{sc['per_run_s'] * 1e3:.1f} ms | {sc['per_run_s'] * 1e3:.1f} ms | "
                 f"{sc['runs']} |\n")
    for name, row in r.get("backends", {}).items():
        if "skipped" in row:
            text += f"| align-track tracker={name} | skipped: {row['skipped']} | | |\n"
            continue
        text += _row(f"tracker={name}: user loop per point", row.get("loop_per_point"),
                     n=s["backend_n"])
        text += _row(f"tracker={name}: until run end, per point",
                     row.get("end_to_end_per_point"), n=s["backend_n"])
        text += _row(f"tracker={name}: until run end less an empty run's end, per point",
                     row.get("points_per_point"), n=s["backend_n"])
        if "empty_run_s" in row:
            ms = row["empty_run_s"] * 1e3
            text += (f"| tracker={name}: open and close an empty run (per-job overhead) | "
                     f"{ms:,.0f} ms | {ms:,.0f} ms | 1 |\n")
    if doc["notes"]:
        text += "\nNotes:\n\n" + "".join(f"- {n}\n" for n in doc["notes"])
    return text
