"""The reads behind the web page: one page of runs, the groups, the filter box.

Everything here is read-only and bounded: a page of runs costs one indexed query for
the keys plus :func:`align_track.reader.list_runs` for those keys only, so a store of
100,000 runs answers as fast as a store of 100.
"""
from __future__ import annotations

import re
import sqlite3
from typing import Any, Dict, List, Optional, Sequence, Tuple

from align_track import reader

MAX_PAGE = 500
# Columns of the runs table (or its experiment) the list can sort by.
SORT_COLUMNS = {
    "started_at": "r.started_at",
    "ended_at": "r.ended_at",
    "duration": "(r.ended_at - r.started_at)",
    "name": "r.name",
    "id": "r.id",
    "status": "r.status",
    "experiment": "e.name",
    "sweep_id": "r.sweep_id",
    "job_num": "r.job_num",
}
_FIELDS = {"experiment": "e.name", "name": "r.name", "status": "r.status",
           "sweep": "r.sweep_id", "id": "r.id"}
_OPS = {"=": "=", "==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=",
        "~": "LIKE"}
_TERM = re.compile(r"^\s*([A-Za-z_][\w.\-\[\]=,/]*?)\s*(==|!=|<=|>=|=|<|>|~)\s*(.+?)\s*$")


class FilterError(ValueError):
    """A filter the page cannot understand; the message is shown to the user."""


def parse_where(text: str) -> Tuple[str, List[Any]]:
    """Turn the page's filter text into an SQL condition over ``runs r`` and
    ``experiments e``, with its arguments.

    The language is the CLI's ``--where`` (:func:`align_track.where.compile_where`),
    so the page and ``experiments list --where`` read filters alike.

    Raises:
        FilterError: a filter that does not parse.
    """
    try:
        from align_track.where import WhereError, compile_where
    except ImportError:
        return _parse_simple_where(text)
    if not (text or "").strip():
        return "", []
    try:
        return compile_where(text)
    except WhereError as exc:
        raise FilterError(str(exc)) from None


def _parse_simple_where(text: str) -> Tuple[str, List[Any]]:
    """The stand-in used where :mod:`align_track.where` is missing: terms joined by
    ``and``::

        status=running and params.lr<0.05 and metrics.loss<=0.2 and tags.model=mlp
        name~bert

    Fields are ``experiment``, ``name``, ``status``, ``sweep``, ``id``,
    ``params.KEY``, ``metrics.KEY`` (the last value) and ``tags.KEY``; operators
    ``= != < <= > >=`` and ``~`` (contains). Values that read as numbers compare as
    numbers.

    Raises:
        FilterError: a term that does not parse.
    """
    text = (text or "").strip()
    if not text:
        return "", []
    clauses: List[str] = []
    args: List[Any] = []
    for term in re.split(r"\s+and\s+", text, flags=re.IGNORECASE):
        match = _TERM.match(term)
        if not match:
            raise FilterError(f"cannot read filter term {term!r}; write FIELD OP VALUE, "
                              f"e.g. params.lr<0.1 or status=running")
        field, op, raw = match.groups()
        value = _value(raw)
        sql_op = _OPS[op]
        if op == "~":
            value = f"%{raw.strip(chr(34) + chr(39))}%"
        if field in _FIELDS:
            clauses.append(f"{_FIELDS[field]} {sql_op} ?")
            args.append(value)
        elif field.startswith("params."):
            clauses.append("r.key IN (SELECT run_key FROM params WHERE key = ? "
                           f"AND value {sql_op} ?)")
            args += [field[len("params."):], value]
        elif field.startswith("metrics."):
            clauses.append("r.key IN (SELECT run_key FROM series WHERE name = ? "
                           f"AND context = '' AND count > 0 AND last_value {sql_op} ?)")
            args += [field[len("metrics."):], value]
        elif field.startswith("tags."):
            clauses.append("r.key IN (SELECT run_key FROM tags WHERE key = ? "
                           f"AND value {sql_op} ?)")
            args += [field[len("tags."):], value if op == "~" else str(raw).strip("'\"")]
        else:
            raise FilterError(f"unknown filter field {field!r}; use experiment, name, "
                              f"status, sweep, id, params.KEY, metrics.KEY or tags.KEY")
    return " AND ".join(clauses), args


def _value(raw: str) -> Any:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return int(raw.lower() == "true")
    return raw


def _conditions(
    experiment: Optional[str], status: Optional[str], sweep: Optional[str],
    text: Optional[str], where: Optional[str],
) -> Tuple[List[str], List[Any]]:
    clauses: List[str] = []
    args: List[Any] = []
    if experiment:
        clauses.append("e.name = ?")
        args.append(experiment)
    if status:
        clauses.append("r.status = ?")
        args.append(status)
    if sweep:
        clauses.append("r.sweep_id = ?")
        args.append(sweep)
    if text:
        clauses.append("(instr(lower(r.name), lower(?)) > 0 OR r.id LIKE ?)")
        args += [text, f"{text}%"]
    sql, more = parse_where(where or "")
    if sql:
        clauses.append(sql)
        args += more
    return clauses, args


def _order(sort: str, descending: bool, grouped: bool) -> Tuple[str, List[Any]]:
    direction = "DESC" if descending else "ASC"
    args: List[Any] = []
    if sort in SORT_COLUMNS:
        expr = SORT_COLUMNS[sort]
    elif sort.startswith("params."):
        expr = "(SELECT value FROM params WHERE run_key = r.key AND key = ?)"
        args.append(sort[len("params."):])
    elif sort.startswith("metrics."):
        expr = ("(SELECT last_value FROM series WHERE run_key = r.key AND name = ? "
                "AND context = '')")
        args.append(sort[len("metrics."):])
    else:
        raise FilterError(f"cannot sort by {sort!r}")
    # NULLs last whichever the direction: a run without the value sinks.
    order = f"({expr}) IS NULL, {expr} {direction}, r.key DESC"
    if args:
        args = args * 2
    if grouped:
        order = "e.name ASC, r.sweep_id IS NULL, r.sweep_id ASC, " + order
    return order, args


def page_runs(
    conn: sqlite3.Connection,
    *,
    offset: int = 0,
    limit: int = 50,
    sort: str = "started_at",
    descending: bool = True,
    grouped: bool = False,
    experiment: Optional[str] = None,
    status: Optional[str] = None,
    sweep: Optional[str] = None,
    text: Optional[str] = None,
    where: Optional[str] = None,
) -> Dict[str, Any]:
    """One page of runs (newest first by default) and how many match in all.

    Returns:
        ``{"total": N, "offset": o, "limit": l, "runs": [...], "varying": [...],
        "metric_names": [...]}``; each run is a :func:`reader.list_runs` dict.
    """
    limit = max(1, min(int(limit), MAX_PAGE))
    offset = max(0, int(offset))
    clauses, args = _conditions(experiment, status, sweep, text, where)
    where_sql = (" WHERE " + " AND ".join(f"({c})" for c in clauses)) if clauses else ""
    base = " FROM runs r JOIN experiments e ON e.id = r.experiment_id" + where_sql
    try:
        total = conn.execute("SELECT count(*)" + base, args).fetchone()[0]
        order, order_args = _order(sort, descending, grouped)
        keys = [row[0] for row in conn.execute(
            f"SELECT r.key{base} ORDER BY {order} LIMIT ? OFFSET ?",
            [*args, *order_args, limit, offset])]
    except sqlite3.OperationalError as exc:
        raise FilterError(f"filter failed: {exc}") from None
    runs = _runs_for_keys(conn, keys)
    return {
        "total": total, "offset": offset, "limit": limit, "runs": runs,
        "varying": reader.varying_keys(runs) if len(runs) > 1 else [],
        "metric_names": sorted({m for r in runs for m in r["metrics"]}),
    }


def _runs_for_keys(conn: sqlite3.Connection, keys: Sequence[int]) -> List[Dict[str, Any]]:
    if not keys:
        return []
    marks = ",".join("?" * len(keys))
    rows = reader.list_runs(conn, where_sql=f"r.key IN ({marks})", where_args=list(keys))
    by_id = {r["id"]: r for r in rows}
    key_to_id = dict(conn.execute(f"SELECT key, id FROM runs WHERE key IN ({marks})",
                                  list(keys)).fetchall())
    return [by_id[key_to_id[k]] for k in keys if key_to_id.get(k) in by_id]


def groups(conn: sqlite3.Connection, sweep_limit: int = 200) -> Dict[str, Any]:
    """Experiments with their run counts, and the newest sweeps with theirs."""
    experiments = [
        {"name": name, "runs": n, "running": live}
        for name, n, live in conn.execute(
            "SELECT e.name, count(r.key), coalesce(sum(r.status = 'running'), 0)"
            " FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.id"
            " GROUP BY e.id ORDER BY max(r.started_at) DESC")
    ]
    sweeps = [
        {"id": sid, "experiment": exp, "started_at": started, "ended_at": ended,
         "runs": n, "running": live}
        for sid, exp, started, ended, n, live in conn.execute(
            "SELECT s.id, e.name, s.started_at, s.ended_at,"
            " (SELECT count(*) FROM runs WHERE sweep_id = s.id),"
            " (SELECT count(*) FROM runs WHERE sweep_id = s.id AND status = 'running')"
            " FROM sweeps s LEFT JOIN experiments e ON e.id = s.experiment_id"
            " ORDER BY s.started_at DESC LIMIT ?", (sweep_limit,))
    ]
    statuses = {s: n for s, n in conn.execute(
        "SELECT status, count(*) FROM runs GROUP BY status")}
    return {"experiments": experiments, "sweeps": sweeps, "statuses": statuses}
