"""``experiments plot`` and ``experiments export``.

``plot`` draws one figure per metric with one line per run, to a file with
matplotlib or in the terminal with plotext (``align-track[plots]``). ``export``
writes runs or their points as CSV, Parquet or JSON through pandas
(``align-track[export]``). Both import their libraries only when run.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from align_track import reader, store

Series = Dict[str, List[Tuple[float, float]]]  # metric -> [(x, y)]


def add_commands(command: Any) -> None:
    """Declare ``experiments plot`` and ``experiments export`` on the CLI."""
    p = command("plot", cmd_plot, "metric curves of runs, to a PNG or the terminal")
    p.add_argument("run_ids", nargs="*", metavar="ID",
                   help="run ids or unique prefixes (4+ characters)")
    p.add_argument("--sweep", help="every job of this sweep")
    p.add_argument("--metric", action="append", dest="metrics", metavar="NAME",
                   help="a metric to plot (repeat for more; default: every metric)")
    p.add_argument("--x", choices=("step", "time"), default="step",
                   help="x axis: the step, or seconds since the run started")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write an image (.png, .svg, .pdf); with several metrics one "
                        "file each, FILE's name + '-METRIC'; default: draw in the terminal")

    p = command("export", cmd_export, "write runs (or their metric points) to a file")
    p.add_argument("--format", choices=("csv", "parquet", "json"), default="csv")
    p.add_argument("--metrics", action="store_true",
                   help="every logged point (run_id, metric, step, value, timestamp) "
                        "instead of one row per run")
    p.add_argument("--experiment", help="only runs of this experiment")
    p.add_argument("--status", help="only runs with this status")
    p.add_argument("--sweep", help="only the jobs of this sweep")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="the file to write (default: standard output; parquet needs -o)")


# -- plot ------------------------------------------------------------------------------

def _need(module: str, extra: str, command: str) -> Any:
    from align_track.cli import CLIError

    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise CLIError(f"{command} needs {module.split('.')[0]}: pip install "
                       f"'align-track[{extra}]'") from None


def collect(conn: Any, ids: Sequence[str], sweep: Any, metrics: Any,
            x: str) -> Tuple[List[Dict[str, Any]], List[str], Dict[str, Series]]:
    """Runs, the metric names to plot and each run's points per metric.

    Returns:
        ``(runs, names, curves)`` with ``curves[run_id][metric] = [(x, y), ...]``;
        NaN and infinite values are left out.
    """
    from align_track.cli import CLIError

    runs = [reader.get_run(conn, i, history=False) for i in ids]
    if sweep:
        listed = reader.list_runs(conn, sweep=sweep)
        if not listed:
            raise CLIError(f"no runs in sweep {sweep!r}")
        runs += [reader.get_run(conn, r["id"], history=False) for r in reversed(listed)]
    if not runs:
        raise CLIError("name runs to plot (IDs) or a sweep (--sweep ID)")
    curves: Dict[str, Series] = {}
    for run in runs:
        history = reader.metric_history(conn, store.find_run_key(conn, run["id"])["key"])
        curves[run["id"]] = {
            name: [(p["step"] if x == "step" else p["timestamp"] - run["started_at"],
                    p["value"]) for p in points if math.isfinite(p["value"])]
            for name, points in history.items()
        }
    available = sorted({m for c in curves.values() for m in c})
    names = list(metrics) if metrics else available
    missing = [m for m in names if m not in available]
    if missing:
        raise CLIError(f"no run has metric {missing[0]!r}; these have: "
                       f"{', '.join(available) or '(no metrics)'}")
    return runs, names, curves


def labels(runs: List[Dict[str, Any]]) -> Dict[str, str]:
    """Legend text per run id: its name and the params that differ between runs
    (plus a short id when that is still not unique)."""
    varying = reader.varying_keys(runs)[:4] if len(runs) > 1 else []
    out = {}
    for run in runs:
        pairs = [f"{k}={run['params'].get(k)}" for k in varying]
        # Hydra names sweep jobs after their overrides: say each pair once.
        differ = ", ".join(p for p in pairs if p not in run["name"])
        out[run["id"]] = f"{run['name']} ({differ})" if differ else run["name"]
    texts = list(out.values())
    return {i: (t if texts.count(t) == 1 else f"{t} {i[:6]}") for i, t in out.items()}


def cmd_plot(args: argparse.Namespace) -> None:
    """Plot metrics of runs: one figure per metric, one line per run, labelled with the
    run name and the params that differ. With -o an image file (matplotlib),
    otherwise a plot in the terminal (plotext)."""
    from align_track.cli import _connect

    if args.output:
        _need("matplotlib", "plots", "experiments plot -o")
    else:
        _need("plotext", "plots", "experiments plot")
    conn = _connect(args)
    try:
        runs, names, curves = collect(conn, args.run_ids, args.sweep, args.metrics, args.x)
    finally:
        conn.close()
    legend = labels(runs)
    xlabel = "step" if args.x == "step" else "seconds since start"
    if args.output:
        for path in _draw_files(runs, names, curves, legend, xlabel, Path(args.output)):
            print(f"wrote {path}")
    else:
        _draw_terminal(runs, names, curves, legend, xlabel)


def output_paths(output: Path, names: List[str]) -> List[Path]:
    """``output`` itself for one metric; ``<stem>-<metric><suffix>`` for several."""
    if len(names) == 1:
        return [output]
    safe = ["".join(c if c.isalnum() or c in "-_." else "_" for c in n) for n in names]
    return [output.with_name(f"{output.stem}-{s}{output.suffix or '.png'}") for s in safe]


def _draw_files(runs: List[Dict[str, Any]], names: List[str], curves: Dict[str, Series],
                legend: Dict[str, str], xlabel: str, output: Path) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    paths = output_paths(output, names)
    for name, path in zip(names, paths):
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        for run in runs:
            points = curves[run["id"]].get(name)
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3,
                    label=legend[run["id"]])
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
    return paths


def _draw_terminal(runs: List[Dict[str, Any]], names: List[str], curves: Dict[str, Series],
                   legend: Dict[str, str], xlabel: str) -> None:
    import plotext as plt

    from align_track.cli import CLIError

    if not hasattr(plt, "clear_figure"):
        raise CLIError("experiments plot draws with plotext 5 (plotext 6 changed its "
                       "API): pip install 'plotext>=5.2,<6'")
    for name in names:
        plt.clear_figure()
        for run in runs:
            points = curves[run["id"]].get(name)
            if points:
                xs, ys = zip(*points)
                plt.plot(list(xs), list(ys), label=legend[run["id"]], marker="braille")
        plt.title(name)
        plt.xlabel(xlabel)
        plt.plotsize(min(plt.terminal_width() or 100, 120), 20)
        text = plt.build()
        # No colour codes in a pipe or a file.
        print(text if sys.stdout.isatty() else plt.uncolorize(text))


# -- export ----------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> None:
    """Export runs (one row each: summary, params.*, metrics.* last values, tags.*), or
    with --metrics every logged point, as CSV, Parquet or JSON."""
    from align_track import read
    from align_track.cli import CLIError, _db

    _need("pandas", "export", "experiments export")
    if args.format == "parquet":
        _need("pyarrow", "export", "experiments export --format parquet")
        if not args.output:
            raise CLIError("--format parquet writes a binary file: give -o FILE")
    if args.metrics:
        frame = read.metrics(_db(args), experiment=args.experiment, sweep=args.sweep)
        if args.status:
            keep = read.runs(_db(args), status=args.status, experiment=args.experiment,
                             sweep=args.sweep)["id"]
            frame = frame[frame["run_id"].isin(set(keep))]
    else:
        frame = read.runs(_db(args), experiment=args.experiment, status=args.status,
                          sweep=args.sweep)
    frame = _plain_columns(frame)
    target: Any = args.output or sys.stdout
    if args.format == "csv":
        frame.to_csv(target, index=False)
    elif args.format == "json":
        _write_json(frame, target)
    else:
        frame.to_parquet(target, index=False)
    if args.output:
        print(f"wrote {len(frame)} rows to {args.output}", file=sys.stderr)


def _write_json(frame: Any, target: Any) -> None:
    """Records as ``list --format json`` writes them: every float as stored (NaN,
    Infinity, -Infinity, all digits), times in ISO 8601."""
    import json

    text = json.dumps(frame.to_dict(orient="records"), indent=1, allow_nan=True,
                      ensure_ascii=False, default=_json_value) + "\n"
    if hasattr(target, "write"):
        target.write(text)
    else:
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)


def _json_value(value: Any) -> Any:
    """A pandas or numpy value that json cannot write, as plain data."""
    if hasattr(value, "isoformat"):  # a Timestamp; NaT is not equal to itself
        return value.isoformat() if value == value else None
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    return str(value)


def _plain_columns(frame: Any) -> Any:
    """Lists and dicts become JSON text, and a column mixing types becomes text, so
    every format (Parquet included) can hold it."""
    import json

    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        values = frame[column]
        kinds = {type(v) for v in values if v is not None and v == v}
        if kinds & {list, dict}:
            frame[column] = values.map(
                lambda v: json.dumps(v, default=str) if isinstance(v, (list, dict)) else v)
            kinds = {type(v) for v in frame[column] if v is not None and v == v}
        if len(kinds) > 1:
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    return frame
