"""Read runs back from the SQLite store, as plain dicts (what the CLI prints).

This module is on the ``experiments`` command's path: it imports only what every
read needs (``typing`` is for type checkers only, ``socket`` loads when a run
still says ``running``).
"""
from __future__ import annotations

import json
import math

from align_track import store

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3
    from typing import Any, Dict, Iterable, List, Optional, Sequence


metric_key = store.metric_key


def list_runs(
    conn: sqlite3.Connection,
    *,
    experiment: Optional[str] = None,
    status: Optional[str] = None,
    sweep: Optional[str] = None,
    limit: Optional[int] = None,
    where_sql: str = "",
    where_args: Sequence[Any] = (),
) -> List[Dict[str, Any]]:
    """Newest runs first, each with flat params and the last value of each metric."""
    clauses, args = [], []
    if experiment is not None:
        clauses.append("e.name = ?")
        args.append(experiment)
    if status == "crashed":  # also running runs whose process is gone
        clauses.append("r.status IN ('crashed', 'running')")
    elif status is not None:
        clauses.append("r.status = ?")
        args.append(status)
    if sweep is not None:
        clauses.append("r.sweep_id = ?")
        args.append(resolve_sweep(conn, sweep))  # `latest` or a unique prefix too
    if where_sql:
        clauses.append(where_sql)
        args.extend(where_args)
    sql = (
        "SELECT r.key, r.id, e.name AS experiment, r.name, r.status, r.started_at,"
        " r.ended_at, r.heartbeat_at, r.sweep_id, r.job_num, r.output_dir, r.dropped,"
        " CASE WHEN r.status = 'running' THEN r.env END AS env, r.params_json,"
        " r.metrics_json"
        " FROM runs r JOIN experiments e ON e.id = r.experiment_id"
    )
    if clauses:
        sql += " WHERE " + " AND ".join(f"({c})" for c in clauses)
    sql += " ORDER BY r.started_at DESC, r.key DESC"
    if limit is not None and limit > 0:
        sql += f" LIMIT {int(limit)}"
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples, made into dicts here: cheaper to read
    fetched = cur.execute(sql, args).fetchall()
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, row)) for row in fetched]
    if status == "crashed":
        rows = [r for r in rows if _status(r) == "crashed"]
    keys = [r["key"] for r in rows]
    params = _params_of_rows(conn, rows)
    metrics = _metrics_of_rows(conn, rows)
    tags = _tags_by_run(conn, keys)
    out = []
    for r in rows:
        run = _summary(r)
        run["params"] = params.get(r["key"], {})
        run["metrics"] = metrics.get(r["key"], {})
        run["tags"] = tags.get(r["key"], {})
        out.append(run)
    return out


def _status(r: Any) -> str:
    """The stored status, or ``crashed`` for a running run whose process is gone."""
    if r["status"] != "running":
        return r["status"]
    import socket

    if store.is_crashed("running", r["heartbeat_at"], r["env"], socket.gethostname()):
        return "crashed"
    return "running"


def _summary(r: Any) -> Dict[str, Any]:
    ended = r["ended_at"]
    return {
        "id": r["id"],
        "experiment": r["experiment"],
        "name": r["name"],
        "status": _status(r),
        "started_at": r["started_at"],
        "ended_at": ended,
        "duration": (ended - r["started_at"]) if ended is not None else None,
        "sweep_id": r["sweep_id"],
        "job_num": r["job_num"],
        "output_dir": r["output_dir"],
        "dropped": r["dropped"],
    }


def _chunks(keys: List[Any], size: int = 900) -> Iterable[List[Any]]:
    for i in range(0, len(keys), size):
        yield keys[i:i + size]


def _rows(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> List[tuple]:
    """All rows of ``sql`` as plain tuples, whatever the connection's row factory."""
    cur = conn.cursor()
    cur.row_factory = None
    return cur.execute(sql, args).fetchall()


def _page_documents(rows: Sequence[Any], column: str) -> Dict[int, Any]:
    """The JSON text in ``column`` of each row that has one, decoded, by run key:
    the page's texts are decoded as one document (its keys are read once, not once
    per run)."""
    stored = [(r["key"], r[column]) for r in rows if r[column] is not None]
    page = json.loads("[" + ",".join([text for _, text in stored]) + "]")
    return dict(zip([key for key, _ in stored], page))


def _params_of_rows(conn: sqlite3.Connection,
                    rows: Sequence[Any]) -> Dict[int, Dict[str, Any]]:
    """Each run's params, by run key, from the ``params_json`` of its ``runs`` row;
    from the params rows where that is NULL."""
    out = _page_documents(rows, "params_json")
    if len(out) < len(rows):
        out.update(_params_by_run(conn, [r["key"] for r in rows
                                         if r["params_json"] is None]))
    return out


def _params_by_run(conn: sqlite3.Connection, keys: List[int]) -> Dict[int, Dict[str, Any]]:
    """Each run's params, keys in sorted order: two queries per 900 runs.

    Integers and texts come as one JSON object per run (SQLite writes them exactly,
    and one row per run costs far less than one per param); every other value
    (floats, which SQLite's JSON rounds to 15 digits or writes as ``Inf``, bools,
    NaN, containers, integers too large for SQLite) comes as a row and is decoded
    here.
    """
    out: Dict[int, Dict[str, Any]] = {}
    decode, loads = store.param_value, json.loads
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        for run_key, text in _rows(
                conn, "SELECT run_key, json_group_object(key, iif(type = 'float', NULL,"
                f" value)) FROM params WHERE run_key IN ({marks}) GROUP BY run_key",
                chunk):
            params = loads(text)
            names = list(params)  # in key order, as SQLite reads them; else sorted here
            if names != sorted(names):
                params = dict(sorted(params.items()))
            out[run_key] = params
        for run_key, key, value, type_ in _rows(
                conn, "SELECT run_key, key, value, type FROM params"
                f" WHERE run_key IN ({marks}) AND NOT (type IN ('str', 'null')"
                " OR (type = 'int' AND typeof(value) = 'integer'))", chunk):
            out[run_key][key] = decode(value, type_)
    return out


def _tags_by_run(conn: sqlite3.Connection, keys: List[int]) -> Dict[int, Dict[str, str]]:
    out: Dict[int, Dict[str, str]] = {}
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT run_key, key, value FROM tags WHERE run_key IN ({marks})"
        for run_key, key, value in _rows(conn, sql, chunk):
            out.setdefault(run_key, {})[key] = value
    return out


def _metrics_of_rows(conn: sqlite3.Connection, rows: List[Any]) -> Dict[int, Dict[str, float]]:
    """Each run's last value of each metric, from the ``metrics_json`` of its ``runs``
    row (one text per run); runs without it (written before it existed) from their
    series rows."""
    out = _page_documents(rows, "metrics_json")
    missing = [r["key"] for r in rows if r["metrics_json"] is None]
    if missing:
        out.update(_last_metrics_by_run(conn, missing))
    return out


def _last_metrics_by_run(conn: sqlite3.Connection, keys: List[int]) -> Dict[int, Dict[str, float]]:
    """Each run's last value of each metric (with a point): one query per 900 runs."""
    out: Dict[int, Dict[str, float]] = {}
    nan = math.nan
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        current, metrics = None, {}
        for run_key, name, ctx, value in _rows(
                conn, "SELECT run_key, name, context, last_value FROM series WHERE"
                f" run_key IN ({marks}) AND count ORDER BY run_key, name, context",
                chunk):
            if run_key != current:
                current, metrics = run_key, {}
                out[run_key] = metrics
            name = metric_key(name, ctx) if ctx else name
            metrics[name] = nan if value is None else value
    return out


def get_run(conn: sqlite3.Connection, ident: str, *, history: bool = True) -> Dict[str, Any]:
    """Everything recorded for one run. ``ident`` may be a unique id prefix."""
    return get_runs(conn, [ident], history=history)[0]


def get_runs(conn: sqlite3.Connection, idents: Sequence[str], *,
             history: bool = False) -> List[Dict[str, Any]]:
    """:func:`get_run` for each of ``idents``, in order, with one query per table for
    all of them (not one per run).

    Raises:
        KeyError: an ident matches no run, or is a prefix of several.
    """
    rows = [store.find_run_key(conn, ident) for ident in idents]
    keys = [row["key"] for row in rows]
    wanted = list(dict.fromkeys(row["experiment_id"] for row in rows))
    experiments = dict(_rows(conn, "SELECT id, name FROM experiments WHERE id IN"
                             f" ({','.join('?' * len(wanted))})", wanted))
    params = _params_of_rows(conn, rows)
    tags = _tags_by_run(conn, keys)
    last = _metrics_of_rows(conn, rows)
    artifacts: Dict[int, List[Dict[str, Any]]] = {}
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        for k, n, s, z, c in _rows(
                conn, "SELECT run_key, name, sha256, size, created_at FROM artifacts"
                f" WHERE run_key IN ({marks}) ORDER BY run_key, name", chunk):
            artifacts.setdefault(k, []).append(
                {"name": n, "sha256": s, "size": z, "created_at": c})
    out = []
    for row in rows:
        key = row["key"]
        run = _summary({**dict(row), "experiment": experiments[row["experiment_id"]]})
        run.update({
            "config": store.loads(row["config"]),
            "config_yaml": row["config_yaml"],
            "params": params.get(key, {}),
            "overrides": store.loads(row["overrides"]) or [],
            "choices": store.loads(row["choices"]) or {},
            "env": store.loads(row["env"]) or {},
            "git": store.loads(row["git"]) or {},
            "error": store.loads(row["error"]),
            "return_value": store.loads(row["return_value"]),
            "heartbeat_at": row["heartbeat_at"],
            "tags": tags.get(key, {}),
            "artifacts": artifacts.get(key, []),
            "metrics": metric_history(conn, key) if history else {},
            "last_metrics": last.get(key, {}),
        })
        out.append(run)
    return out


def metric_history(conn: sqlite3.Connection, run_key: int) -> Dict[str, List[Dict[str, Any]]]:
    out: Dict[str, List[Dict[str, Any]]] = {}
    series = conn.execute("SELECT id, name, context FROM series WHERE run_key = ?"
                          " ORDER BY name, context", (run_key,)).fetchall()
    for sid, name, ctx in series:
        points = out.setdefault(metric_key(name, ctx), [])
        context = json.loads(ctx) if ctx else None
        for step, value, wall in conn.execute(
                "SELECT step, value, wall FROM points WHERE series_id = ? ORDER BY step, rowid",
                (sid,)):
            point = {"step": step, "value": store.point_value(value), "timestamp": wall}
            if context:
                point["context"] = context
            points.append(point)
    return out


def metric_stats(conn: sqlite3.Connection, run_key: int) -> Dict[str, Dict[str, float]]:
    """last/min/max/count per metric; NaN points are left out of min and max."""
    return _metric_stats(conn, [run_key]).get(run_key, {})


def metric_stats_by_run(
    conn: sqlite3.Connection, run_ids: Sequence[str],
) -> Dict[str, Dict[str, Dict[str, float]]]:
    """:func:`metric_stats` of several runs, by full run id: one query for all."""
    ids: Dict[int, str] = {}
    wanted = list(dict.fromkeys(run_ids))
    for chunk in _chunks(wanted):
        ids.update(_rows(conn, f"SELECT key, id FROM runs WHERE id IN"
                               f" ({','.join('?' * len(chunk))})", chunk))
    by_key = _metric_stats(conn, list(ids))
    return {ids[k]: by_key.get(k, {}) for k in ids}


def _metric_stats(conn: sqlite3.Connection,
                  keys: List[int]) -> Dict[int, Dict[str, Dict[str, float]]]:
    out: Dict[int, Dict[str, Dict[str, float]]] = {}
    point = store.point_value
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        for run_key, name, ctx, last, count, lo, hi in _rows(
                conn, "SELECT s.run_key, s.name, s.context, s.last_value, s.count,"
                " min(p.value), max(p.value) FROM series s JOIN points p"
                f" ON p.series_id = s.id WHERE s.run_key IN ({marks})"
                " GROUP BY s.id ORDER BY s.run_key, s.name, s.context", chunk):
            out.setdefault(run_key, {})[metric_key(name, ctx)] = {
                "last": point(last), "min": point(lo), "max": point(hi), "count": count,
            }
    return out


def varying_keys(runs: List[Dict[str, Any]], field: str = "params") -> List[str]:
    """Keys whose value is not the same in every run."""
    keys: List[str] = sorted({k for r in runs for k in r[field]})
    missing = object()
    return [k for k in keys
            if len({_hashable(r[field].get(k, missing)) for r in runs}) > 1]


def _hashable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def resolve_sweep(conn: sqlite3.Connection, ident: str) -> str:
    """A sweep id from an id, a unique prefix, or ``latest``."""
    if ident == "latest":
        row = conn.execute("SELECT sweep_id FROM runs WHERE sweep_id IS NOT NULL"
                           " ORDER BY started_at DESC LIMIT 1").fetchone()
        if row is None:
            raise KeyError("no sweeps in this store")
        return row[0]
    if conn.execute("SELECT 1 FROM runs WHERE sweep_id = ? UNION SELECT 1 FROM sweeps"
                    " WHERE id = ?", (ident, ident)).fetchone():
        return ident
    rows = conn.execute("SELECT DISTINCT sweep_id FROM runs WHERE sweep_id >= ? AND"
                        " sweep_id < ? LIMIT 2", (ident, ident + "\uffff")).fetchall()
    if not rows:
        raise KeyError(f"no sweep with id {ident!r}")
    if len(rows) > 1 and ident not in (r[0] for r in rows):
        raise KeyError(f"sweep id prefix {ident!r} is ambiguous; give more characters")
    return ident if ident in (r[0] for r in rows) else rows[0][0]


def list_sweeps(conn: sqlite3.Connection, limit: Optional[int] = None) -> List[Dict[str, Any]]:
    """Sweeps (recorded multiruns and ``tracker.group`` groups) with job counts."""
    sql = (
        # sweeps recorded by on_multirun_start, also those none of whose jobs started
        "WITH ids AS (SELECT id FROM sweeps UNION"
        " SELECT DISTINCT sweep_id FROM runs WHERE sweep_id IS NOT NULL)"
        " SELECT ids.id AS id, coalesce(se.name, min(e.name)) AS experiment,"
        " min(r.started_at) AS first_start,"
        " max(coalesce(r.ended_at, r.started_at)) AS last_end, count(r.key) AS jobs,"
        " coalesce(sum(r.status = 'finished'), 0) AS finished,"
        " coalesce(sum(r.status = 'failed'), 0) AS failed,"
        " coalesce(sum(r.status = 'interrupted'), 0) AS interrupted,"
        " coalesce(sum(r.status = 'crashed'), 0) AS crashed,"
        " coalesce(sum(r.status = 'running'), 0) AS running,"
        " s.dir, s.started_at, s.ended_at, s.command, s.overrides, s.sweeper, s.launcher,"
        " s.jobs_expected, s.status"
        " FROM ids LEFT JOIN sweeps s ON s.id = ids.id"
        " LEFT JOIN experiments se ON se.id = s.experiment_id"
        " LEFT JOIN runs r ON r.sweep_id = ids.id"
        " LEFT JOIN experiments e ON e.id = r.experiment_id"
        " GROUP BY ids.id ORDER BY coalesce(s.started_at, min(r.started_at)) DESC"
    )
    if limit:
        sql += f" LIMIT {int(limit)}"
    out = []
    for row in conn.execute(sql).fetchall():
        d = dict(row)
        d["started_at"] = d.pop("started_at") or d["first_start"]
        d["ended_at"] = d.pop("ended_at") or d["last_end"]
        d.pop("first_start"), d.pop("last_end")
        d["command"] = store.loads(d["command"])
        d["overrides"] = store.loads(d["overrides"])
        expected = d["jobs_expected"]
        # jobs the sweeper planned that never opened a run (a launcher error)
        d["missing"] = max(expected - d["jobs"], 0) if expected is not None else None
        out.append(d)
    return out


def rank(stats: List[Dict[str, Dict[str, float]]], metric: str, descending: bool) -> List[int]:
    """Indexes of runs ordered by the metric's last value; runs without it, and NaN,
    go last."""
    def key(i: int) -> tuple:
        value = stats[i].get(metric, {}).get("last")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0.0)
        return (0, -value if descending else value)

    return sorted(range(len(stats)), key=key)
