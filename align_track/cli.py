"""``experiments``: list, show, compare and query the runs in a SQLite store.

The store is ``--db PATH``, else ``$ALIGN_TRACK_DB``, else ``./experiments.db``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import os
import sqlite3
import sys
import time

from align_track import reader, store
from align_track.env import DB_VAR, SPOOL_FILE, default_db
from align_track.errors import StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional, Sequence

FORMATS = ("table", "json", "csv")
# Modules that add more commands: each has add_commands(command), where
# command(name, func, help) returns the new subparser. They must import their heavy
# dependencies inside the command function, not at module level. They are imported
# only when the command line may name one of their commands (or asks for help).
_COMMAND_MODULES: List[str] = ["align_track.plot", "align_track.ui"]
CELL = 40


class _Statuses:
    """The run statuses of :mod:`align_track.records`, as ``list --status``'s
    choices: read only when argparse checks a value or shows them (records.py
    loads dataclasses, which the commands themselves never need)."""

    @staticmethod
    def _all() -> Sequence[str]:
        from align_track.records import STATUSES

        return STATUSES

    def __contains__(self, value: object) -> bool:
        return value in self._all()

    def __iter__(self) -> Any:
        return iter(self._all())


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    word = _command_word(argv)
    parser = _parser(word if word in _DECLARE else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        args.func(args)
    except BrokenPipeError:  # `experiments list | head`
        return 0
    except Exception as exc:  # never a traceback for the user
        if isinstance(exc, _user_errors()):
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"experiments: error: {message}", file=sys.stderr)
        else:
            print(f"experiments: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def _user_errors() -> tuple:
    """The errors printed as their message alone: ours, a store's, an unknown id, and
    a ``--where`` that does not parse (its module loads only for a filter)."""
    where = sys.modules.get("align_track.where")
    return (CLIError, StoreError, KeyError) + ((where.WhereError,) if where else ())


def _command_word(argv: Sequence[str]) -> Optional[str]:
    """The command the arguments name (the first word that is not ``--db`` or its
    value), or None when an option comes first."""
    words = iter(argv)
    for word in words:
        if word == "--db":
            next(words, None)
        elif not word.startswith("-"):
            return word
        elif not word.startswith("--db="):
            return None  # -h, --help or a mistake: argparse answers with every command
    return None


def _parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``experiments`` parser. With ``only`` (a key of :data:`_DECLARE`, the
    command the arguments name) just that command is declared: it parses, and
    reports errors, exactly as with every command declared, and the others cost
    nothing (the command modules are not even imported)."""
    parser = argparse.ArgumentParser(
        prog="experiments",
        description="Read the runs that align-track recorded in a SQLite store.",
    )
    db_help = f"the store (default: ${DB_VAR}, else ./experiments.db)"
    parser.add_argument("--db", help=db_help)
    from align_track import __version__

    parser.add_argument("--version", action="version", version=f"align-track {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=func.__doc__)
        p.add_argument("--db", default=argparse.SUPPRESS, help=db_help)
        p.set_defaults(func=func)
        return p

    for name, declare in _DECLARE.items():
        if only is None or name == only:
            declare(command)
    if only is None:
        import importlib

        for module in _COMMAND_MODULES:
            importlib.import_module(module).add_commands(command)
    return parser


def _declare_list(command: Any) -> None:
    p = command("list", cmd_list, "a table of runs, newest first")
    p.add_argument("--experiment", help="only runs of this experiment")
    status = p.add_argument("--status", help="only runs with this status")
    status.choices = _Statuses()  # set after add_argument, whose checks would read it
    p.add_argument("--sweep", help="only the jobs of this sweep ('latest' for the newest)")
    p.add_argument("--where", help="a filter such as \"params.lr > 0.01 and "
                   "metrics.acc >= 0.9\" (see the README)")
    p.add_argument("--limit", type=_limit, default=50, help="at most this many runs "
                   "(default 50; 0 for all)")
    p.add_argument("--format", choices=FORMATS, default="table")


def _declare_show(command: Any) -> None:
    p = command("show", cmd_show, "everything recorded for one run")
    p.add_argument("run_id", help="a run id or a unique prefix of one (4+ characters)")
    p.add_argument("--metrics", action="store_true", help="add every step of each metric")
    p.add_argument("--format", choices=("table", "json"), default="table")


def _declare_compare(command: Any) -> None:
    p = command("compare", cmd_compare, "params and metrics of runs side by side")
    p.add_argument("run_ids", nargs="*", help="run ids or unique prefixes")
    p.add_argument("--sweep", help="compare the jobs of this sweep ('latest' for the "
                   "newest sweep)")
    p.add_argument("--sort", metavar="METRIC", help="order runs by this metric's last "
                   "value and name the best run")
    p.add_argument("--desc", action="store_true", help="with --sort: higher is better")
    p.add_argument("--all", action="store_true", help="every param, not only those that differ")
    p.add_argument("--format", choices=("table", "json"), default="table")


def _declare_sweeps(command: Any) -> None:
    p = command("sweeps", cmd_sweeps, "sweeps (multiruns and groups) with job counts")
    p.add_argument("--limit", type=int, default=50, help="at most this many (0 for all)")
    p.add_argument("--format", choices=FORMATS, default="table")


def _declare_query(command: Any) -> None:
    p = command("query", cmd_query, "run a read-only SQL query over the store")
    p.add_argument("sql", help="one SELECT statement; see the schema in the README")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="stop the query after this many seconds (default 10)")


def _declare_sync(command: Any) -> None:
    p = command("sync", cmd_sync, "replay runs kept while a tracking server was away")
    p.add_argument("--spool", default=None, help="the spool file (default: "
                   "./align-track-spool.db, in the directory the jobs were launched from)")
    p.add_argument("--list", action="store_true", help="only list the runs that wait")


def _limit(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; use 0 for all runs")
    return value


def _db(args: argparse.Namespace) -> str:
    return args.db or default_db()


def _connect(args: argparse.Namespace) -> sqlite3.Connection:
    return store.connect_readonly(_db(args))


# -- commands --------------------------------------------------------------------------

def cmd_list(args: argparse.Namespace) -> None:
    """List runs, newest first: id, experiment, name, status, start, duration, the
    params that differ between the listed runs and the last value of each metric."""
    try:
        conn = _connect(args)
    except StoreError:
        note = _spool_note()  # a server backend's user may have only a spool here
        if note is None:
            raise
        print(note)
        return
    sweep = args.sweep
    where_sql, where_args = "", []
    if args.where:
        from align_track.where import compile_where

        where_sql, where_args = compile_where(args.where)
    runs = reader.list_runs(conn, experiment=args.experiment, status=args.status,
                            sweep=sweep, limit=args.limit, where_sql=where_sql,
                            where_args=where_args)
    if args.format == "json":
        _print_json(runs)
        return
    varying = reader.varying_keys(runs)[:4] if len(runs) > 1 else []
    metric_names = sorted({m for r in runs for m in r["metrics"]})[:6]
    both = set(varying) & set(metric_names)
    header = (["id", "experiment", "name", "status", "start", "duration"]
              + [f"params.{k}" if k in both else k for k in varying]
              + [f"metrics.{m}" if m in both else m for m in metric_names])
    rows = [
        [r["id"][:8], r["experiment"], r["name"], r["status"], _time(r["started_at"]),
         _duration(r["duration"])]
        + [r["params"].get(k, "") for k in varying]
        + [r["metrics"].get(m, "") for m in metric_names]
        for r in runs
    ]
    if args.format == "csv":
        full = (["id", "experiment", "name", "status", "started_at", "ended_at"]
                + [f"params.{k}" for k in varying] + [f"metrics.{m}" for m in metric_names])
        _print_csv(full, [[r["id"], r["experiment"], r["name"], r["status"], r["started_at"],
                           r["ended_at"]] + [r["params"].get(k, "") for k in varying]
                          + [r["metrics"].get(m, "") for m in metric_names] for r in runs])
        return
    note = _spool_note()
    if not runs:
        total = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        print(f"no runs match ({total} runs in {_db(args)})" if total else
              f"no runs in {_db(args)}")
    else:
        _print_table(header, rows)
    if note:
        print(f"\n{note}")


def cmd_show(args: argparse.Namespace) -> None:
    """Show everything recorded for one run; --metrics adds each metric's steps."""
    conn = _connect(args)
    run = reader.get_run(conn, args.run_id, history=args.metrics or args.format == "json")
    if args.format == "json":
        _print_json(run)
        return
    lines = [
        f"run        {run['id']}",
        f"experiment {run['experiment']}",
        f"name       {run['name']}",
        f"status     {run['status']}",
        f"started    {_time(run['started_at'])}",
        f"duration   {_duration(run['duration'])}",
    ]
    if run["sweep_id"]:
        job = f" (job {run['job_num']})" if run["job_num"] is not None else ""
        lines.append(f"sweep      {run['sweep_id']}{job}")
    if run["output_dir"]:
        lines.append(f"output dir {run['output_dir']}")
    if run["dropped"]:
        lines.append(f"dropped    {run['dropped']} points skipped (bad values, names or steps)")
    if run["overrides"]:
        lines.append(f"overrides  {' '.join(run['overrides'])}")
    git = run["git"]
    if git:
        lines.append(f"git        {git.get('commit', '')[:12]} on "
                     f"{git.get('branch') or 'a detached HEAD'}"
                     f"{' (dirty)' if git.get('dirty') else ''}")
    env = run["env"]
    if env:
        lines.append(f"host       {env.get('host')} pid {env.get('pid')} user "
                     f"{env.get('user')} python {env.get('python')}")
        lines.append(f"command    {' '.join(env.get('argv', []))}")
    if run["error"]:
        lines.append(f"error      {run['error'].get('type')}: {run['error'].get('message')}")
    print("\n".join(lines))
    _section("params", [[k, _cell(v, 80)] for k, v in run["params"].items()])
    _section("tags", [[k, v] for k, v in run["tags"].items()])
    stats = reader.metric_stats(conn, store.find_run_key(conn, run["id"])["key"])
    _section("metrics", [[k, s["last"], s["min"], s["max"], s["count"]] for k, s in stats.items()],
             header=["metric", "last", "min", "max", "points"])
    _section("artifacts", [[a["name"], a["size"], a["sha256"][:12]] for a in run["artifacts"]],
             header=["name", "bytes", "sha256"])
    if args.metrics:
        for name, points in run["metrics"].items():
            _section(f"metric {name}", [[p["step"], p["value"], _time(p["timestamp"])]
                                        for p in points], header=["step", "value", "time"])
    if run["error"] and run["error"].get("traceback"):
        print("\ntraceback\n" + run["error"]["traceback"].rstrip())


def cmd_compare(args: argparse.Namespace) -> None:
    """Compare runs: params side by side (only those that differ, unless --all), then
    each metric's last, min and max per run. --sweep ID compares a sweep's jobs."""
    conn = _connect(args)
    idents = list(args.run_ids)
    if args.sweep:
        sweep_id = reader.resolve_sweep(conn, args.sweep)
        idents += [r["id"] for r in reader.list_runs(conn, sweep=sweep_id)]
    if not idents:
        raise CLIError("compare needs run ids or --sweep ID")
    runs = reader.get_runs(conn, idents, history=False)
    by_id = reader.metric_stats_by_run(conn, [r["id"] for r in runs])
    stats = [by_id.get(r["id"], {}) for r in runs]
    best = None
    known = sorted({m for s in stats for m in s})
    if args.sort and args.sort not in known:
        raise CLIError(f"no run has metric {args.sort!r}; these have: {', '.join(known)}")
    if args.sort:
        order = reader.rank(stats, args.sort, descending=args.desc)
        runs, stats = [runs[i] for i in order], [stats[i] for i in order]
        if order and args.sort in stats[0]:
            best = runs[0]["id"]
    keys = sorted({k for r in runs for k in r["params"]}) if args.all else reader.varying_keys(runs)
    names = sorted({m for s in stats for m in s})
    if args.format == "json":
        _print_json({
            "runs": [{"id": r["id"], "name": r["name"], "status": r["status"],
                      "job_num": r["job_num"]} for r in runs],
            "params": {k: [r["params"].get(k) for r in runs] for k in keys},
            "metrics": {m: [s.get(m) for s in stats] for m in names},
            "best": best,
        })
        return
    ids = [r["id"][:8] for r in runs]
    _print_table(["param"] + ids, [[k] + [r["params"].get(k, "") for r in runs] for k in keys]
                 or [["(no param differs)"] + [""] * len(runs)])
    print()
    rows = []
    for m in names:
        for what in ("last", "min", "max"):
            rows.append([f"{m} {what}"] + [s[m][what] if m in s else "" for s in stats])
    _print_table(["metric"] + ids, rows or [["(no metrics)"] + [""] * len(runs)])
    if best:
        print(f"\nbest by {args.sort} ({'highest' if args.desc else 'lowest'}): {best} "
              f"({runs[0]['name']})")


def cmd_sync(args: argparse.Namespace) -> None:
    """Replay, in order and exactly once, what jobs kept in the spool while their MLflow,
    Aim or ClearML server was unreachable, into the same runs."""
    from align_track.spool import Spool, sync

    path = args.spool or SPOOL_FILE
    if not os.path.exists(path):
        print(f"nothing to sync: no spool at {path}")
        return
    waiting = Spool(path).waiting()
    if args.list or not waiting:
        for run in waiting:
            print(f"{run['id']}  {run['experiment']}  {run['name']}  -> {run['backend']} "
                  f"{run['location']} ({run['pending_calls']} calls)")
        if not waiting:
            print(f"nothing to sync in {path}")
        return
    replayed, errors = sync(path)
    print(f"replayed {replayed} calls of {len(waiting)} runs from {path}")
    if errors:
        raise CLIError("; ".join(errors) + " (the rest stays in the spool; run sync again)")


def _spool_note() -> Optional[str]:
    if not os.path.exists(SPOOL_FILE):
        return None
    from align_track.spool import Spool

    waiting = Spool(SPOOL_FILE).waiting()
    if not waiting:
        return None
    targets = sorted({f"{r['backend']} {r['location']}" for r in waiting})
    runs = "1 run awaits" if len(waiting) == 1 else f"{len(waiting)} runs await"
    return (f"{runs} sync to {', '.join(targets)}: "
            f"{' '.join(r['id'][:8] for r in waiting)} (run `experiments sync`)")


def cmd_sweeps(args: argparse.Namespace) -> None:
    """List sweeps, newest first, with how many jobs finished, failed, were
    interrupted, crashed or are still running."""
    conn = _connect(args)
    sweeps = reader.list_sweeps(conn, limit=args.limit)
    if args.format == "json":
        _print_json(sweeps)
        return
    header = ["id", "experiment", "start", "jobs", "finished", "failed", "interrupted",
              "crashed", "running", "missing", "dir"]
    rows = [[s["id"][:8], s["experiment"], _time(s["started_at"]), s["jobs"],
             s["finished"], s["failed"], s["interrupted"], s["crashed"], s["running"],
             "" if s["missing"] is None else s["missing"], s["dir"] or ""] for s in sweeps]
    if args.format == "csv":
        _print_csv(header, rows)
    elif not sweeps:
        print(f"no sweeps in {_db(args)}")
    else:
        _print_table(header, rows)


_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
            getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
_ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{n}"): n for n in (
        "INSERT", "UPDATE", "DELETE", "ATTACH", "DETACH", "PRAGMA", "TRANSACTION",
        "SAVEPOINT", "ANALYZE", "REINDEX", "ALTER_TABLE", "CREATE_TABLE", "CREATE_INDEX",
        "CREATE_VIEW", "CREATE_TRIGGER", "CREATE_TEMP_TABLE", "CREATE_TEMP_VIEW",
        "CREATE_TEMP_INDEX", "CREATE_TEMP_TRIGGER", "CREATE_VTABLE", "DROP_TABLE",
        "DROP_INDEX", "DROP_VIEW", "DROP_TRIGGER", "DROP_TEMP_TABLE", "DROP_TEMP_VIEW",
        "DROP_TEMP_INDEX", "DROP_TEMP_TRIGGER", "DROP_VTABLE",
    ) if hasattr(sqlite3, f"SQLITE_{n}")
}


def cmd_query(args: argparse.Namespace) -> None:
    """Run one SQL SELECT on a read-only connection. Writes, ATTACH, PRAGMA and
    extension loading are refused. Tables and views are listed in the README."""
    conn = _connect(args)
    refused: List[str] = []

    def authorize(action: int, arg1: Any, arg2: Any, db: Any, source: Any) -> int:
        if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() == "load_extension":
            refused.append("load_extension")
            return sqlite3.SQLITE_DENY
        if action in _ALLOWED:
            return sqlite3.SQLITE_OK
        refused.append(_ACTION_NAMES.get(action, str(action)))
        return sqlite3.SQLITE_DENY

    deadline = time.monotonic() + args.timeout
    conn.set_authorizer(authorize)
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    conn.row_factory = None
    try:
        cur = conn.execute(args.sql)
        rows = cur.fetchall()
    except sqlite3.Warning as exc:
        raise CLIError(f"query: {exc}") from None
    except sqlite3.DatabaseError as exc:
        if refused:
            verb = (args.sql.split() or [""])[0].upper()
            what = verb if verb not in ("SELECT", "WITH", "VALUES", "") else refused[0]
            raise CLIError(f"query is read-only: {what} is refused; only SELECT "
                           f"statements run") from None
        if "interrupted" in str(exc):
            raise CLIError(f"query stopped after {args.timeout:g} s (raise --timeout)") from None
        raise CLIError(f"query: {exc}") from None
    header = [d[0] for d in cur.description or []]
    if args.format == "json":
        _print_json([dict(zip(header, row)) for row in rows])
    elif args.format == "csv":
        _print_csv(header, rows)
    else:
        _print_table(header, [list(r) for r in rows])


#: This module's commands, in the order ``experiments --help`` lists them.
_DECLARE = {"list": _declare_list, "show": _declare_show, "compare": _declare_compare,
            "sweeps": _declare_sweeps, "query": _declare_query, "sync": _declare_sync}


# -- output ----------------------------------------------------------------------------

def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


def _print_csv(header: List[str], rows: Sequence[Sequence[Any]]) -> None:
    import csv

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([[_csv_cell(c) for c in row] for row in rows])
    sys.stdout.write(out.getvalue())


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return value


def _print_table(header: List[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _section(title: str, rows: List[List[Any]], header: Optional[List[str]] = None) -> None:
    if not rows:
        return
    print(f"\n{title}")
    if header:
        _print_table(header, rows)
    else:
        width = max(len(str(r[0])) for r in rows)
        for key, value in rows:
            print(f"  {str(key).ljust(width)}  {_cell(value, 100)}")


def _cell(value: Any, width: int = CELL) -> str:
    if value is None:
        text = "null"
    elif isinstance(value, float):
        if math.isnan(value):
            text = "nan"
        elif value.is_integer() and abs(value) < 1e15:
            text = str(int(value))  # a count such as 1999999, not 2e+06
        else:
            text = f"{value:.6g}"
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, default=str, ensure_ascii=False)
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _time(ts: Optional[float]) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


if __name__ == "__main__":
    sys.exit(main())
