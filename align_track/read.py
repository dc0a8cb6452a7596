"""Read a SQLite store into pandas, for notebooks.

>>> from align_track import read
>>> df = read.runs("experiments.db")             # one row per run
>>> df.sort_values("metrics.loss").head()
>>> points = read.metrics("experiments.db", ids=df["id"][:3])  # every logged point

Needs pandas: ``pip install 'align-track[export]'``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional

from align_track import reader, store

if TYPE_CHECKING:
    import pandas

EXTRA = "export"
SUMMARY = ["id", "experiment", "name", "status", "started_at", "ended_at", "duration",
           "sweep_id", "job_num", "output_dir"]


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(f"align_track.read needs pandas: pip install "
                          f"'align-track[{EXTRA}]'") from None
    return pandas


def _db(db: Optional[str]) -> str:
    if db is not None:
        return str(db)
    from align_track.env import default_db

    return default_db()


def runs(
    db: Optional[str] = None,
    *,
    experiment: Optional[str] = None,
    status: Optional[str] = None,
    sweep: Optional[str] = None,
    limit: Optional[int] = None,
) -> "pandas.DataFrame":
    """One row per run, newest first.

    Args:
        db: path of the store (default: ``$ALIGN_TRACK_DB``, else ./experiments.db).
        experiment: only runs of this experiment.
        status: only runs with this status (``running``, ``finished``, ``failed``,
            ``interrupted``, ``crashed``).
        sweep: only the jobs of this sweep id.
        limit: at most this many runs.

    Returns:
        A DataFrame with the columns ``id, experiment, name, status, started_at,
        ended_at`` (UTC timestamps), ``duration`` (seconds), ``sweep_id, job_num,
        output_dir``, then ``params.<key>`` for each flat config key, ``metrics.<name>``
        for the last value of each metric and ``tags.<key>`` for each tag. A run
        without a key has NaN/None there.

    Raises:
        align_track.errors.StoreError: no store at ``db``.
        ImportError: pandas is not installed.
    """
    pd = _pandas()
    conn = store.connect_readonly(_db(db))
    try:
        rows = reader.list_runs(conn, experiment=experiment, status=status, sweep=sweep,
                                limit=limit)
    finally:
        conn.close()
    records: List[Dict[str, Any]] = []
    extra: Dict[str, None] = {}
    for run in rows:
        record = {k: run[k] for k in SUMMARY}
        for field in ("params", "metrics", "tags"):
            for key, value in run[field].items():
                record[f"{field}.{key}"] = value
                extra.setdefault(f"{field}.{key}")
        records.append(record)
    order = sorted(extra, key=lambda c: (("params.", "metrics.", "tags.").index(
        c[: c.index(".") + 1]), c))
    frame = pd.DataFrame.from_records(records, columns=SUMMARY + order)
    for column in ("started_at", "ended_at"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    frame["job_num"] = frame["job_num"].astype("Int64")
    return frame


def metrics(
    db: Optional[str] = None,
    *,
    ids: Optional[Iterable[str]] = None,
    names: Optional[Iterable[str]] = None,
    experiment: Optional[str] = None,
    sweep: Optional[str] = None,
) -> "pandas.DataFrame":
    """Every logged point, one row each: ``run_id, metric, step, value, timestamp``.

    Args:
        db: path of the store (default as in :func:`runs`).
        ids: only these runs (ids or unique prefixes); default every run that
            ``experiment`` and ``sweep`` select.
        names: only these metrics (``name`` or ``name[k=v]`` for a context).
        experiment: only runs of this experiment.
        sweep: only the jobs of this sweep id.

    Returns:
        A long DataFrame; ``metric`` is the metric name with its context, as
        ``experiments show`` prints it; ``timestamp`` is a UTC timestamp.
    """
    pd = _pandas()
    wanted = set(names) if names is not None else None
    conn = store.connect_readonly(_db(db))
    try:
        if ids is not None:
            keys = [(row["id"], row["key"]) for row in
                    (store.find_run_key(conn, str(i)) for i in ids)]
        else:
            listed = reader.list_runs(conn, experiment=experiment, sweep=sweep)
            keys = [(r["id"], store.find_run_key(conn, r["id"])["key"]) for r in listed]
        records = []
        for run_id, key in keys:
            for name, points in reader.metric_history(conn, key).items():
                if wanted is not None and name not in wanted:
                    continue
                records += [(run_id, name, p["step"], p["value"], p["timestamp"])
                            for p in points]
    finally:
        conn.close()
    frame = pd.DataFrame.from_records(
        records, columns=["run_id", "metric", "step", "value", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    return frame
