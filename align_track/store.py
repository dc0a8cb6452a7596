"""The SQLite store: schema, opening, and the reads the CLI makes.

Schema version 3 (``PRAGMA user_version``; older stores are migrated in place after
a backup, see :data:`MIGRATIONS`). Tables:

- ``experiments(id, name, created_at)``
- ``sweeps(id, experiment_id, dir, command, overrides, sweeper, launcher,
  jobs_expected, started_at, ended_at, status)``: a multirun, or a ``tracker.group``
- ``runs(key, id, experiment_id, name, status, started_at, ended_at, heartbeat_at,
  sweep_id, job_num, output_dir, overrides, choices, config, config_yaml, env, git,
  error, return_value, dropped, identity, params_json, metrics_json)``; JSON text in
  overrides, choices, config, env, git, error and return_value; ``params_json`` holds
  the run's params (the ``params`` rows, decoded) as one JSON object, keys sorted, and
  ``metrics_json`` the last value of each metric (the ``series`` rows), rewritten
  with each batch of points, so a page of runs reads one value of each per run
  (NULL: read the rows instead)
- ``params(run_key, key, value, type)``: one row per flat config key; ``value`` keeps
  SQLite's own type (numbers compare as numbers), ``type`` is the Python type
- ``tags(run_key, key, value)``
- ``series(id, run_key, name, context, last_step, last_value, count)``: one row per
  metric name and context of a run
- ``points(series_id, step, value, wall)``: ``value`` NULL stands for NaN
- ``artifacts(run_key, name, sha256, size, created_at)``; the bytes live in
  ``<store>-artifacts/objects/<sha256[:2]>/<sha256>``

Views for ``experiments query``: ``run_summary`` (one row per run, experiment by
name), ``metrics`` (run_id, name, context, step, value, timestamp), ``run_params``
(run_id, key, value) and ``run_tags`` (run_id, key, value).
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import time

from align_track.errors import StoreError

# The ``experiments`` command imports this module: typing and pathlib (with
# urllib) load only for type checkers and for the functions that write.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Optional

SCHEMA_VERSION = 3


def _add_params_json(conn: sqlite3.Connection) -> None:
    """Version 2 to 3: add ``runs.params_json`` and fill it from the params rows."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    if "params_json" not in columns:
        conn.execute("ALTER TABLE runs ADD COLUMN params_json TEXT")
    conn.execute("UPDATE runs SET params_json = '{}'")
    rows = conn.execute("SELECT run_key, key, value, type FROM params"
                        " ORDER BY run_key, key")
    update = "UPDATE runs SET params_json = ? WHERE key = ?"
    current, params = None, {}
    updates: list = []
    for run_key, key, value, type_ in rows:
        if run_key != current:
            if current is not None:
                updates.append((params_json(params), current))
            if len(updates) >= 1000:
                conn.executemany(update, updates)
                updates = []
            current, params = run_key, {}
        params[key] = param_value(value, type_)
    if current is not None:
        updates.append((params_json(params), current))
    conn.executemany(update, updates)


def _add_metrics_json(conn: sqlite3.Connection) -> None:
    """Version 2 to 3: add ``runs.metrics_json`` and fill it from the series rows."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    if "metrics_json" not in columns:
        conn.execute("ALTER TABLE runs ADD COLUMN metrics_json TEXT")
    conn.execute("UPDATE runs SET metrics_json = '{}'")
    update = "UPDATE runs SET metrics_json = ? WHERE key = ?"
    by_run: dict = {}
    for run_key, name, ctx, value in conn.execute(
            "SELECT run_key, name, context, last_value FROM series WHERE count"
            " ORDER BY run_key, name, context"):
        by_run.setdefault(run_key, []).append((name, ctx, value))
    conn.executemany(update, [(metrics_json(series), key) for key, series in by_run.items()])


#: What takes a store from version N to N + 1 (SQL statements, or functions of the
#: connection), run in one transaction after a backup of the file
#: (``<store>.v<N>.bak``).
MIGRATIONS = {
    1: ["ALTER TABLE sweeps ADD COLUMN status TEXT"],
    2: [_add_params_json, _add_metrics_json],
}

SCHEMA = """
CREATE TABLE experiments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE sweeps (
    id TEXT PRIMARY KEY,
    experiment_id INTEGER REFERENCES experiments(id),
    dir TEXT,
    command TEXT,
    overrides TEXT,
    sweeper TEXT,
    launcher TEXT,
    jobs_expected INTEGER,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT
);
CREATE TABLE runs (
    key INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    heartbeat_at REAL,
    sweep_id TEXT,
    job_num INTEGER,
    output_dir TEXT,
    overrides TEXT,
    choices TEXT,
    config TEXT,
    config_yaml TEXT,
    env TEXT,
    git TEXT,
    error TEXT,
    return_value TEXT,
    dropped INTEGER NOT NULL DEFAULT 0,
    identity TEXT,
    params_json TEXT,
    metrics_json TEXT
);
CREATE INDEX runs_by_identity ON runs(identity) WHERE identity IS NOT NULL;
CREATE INDEX runs_by_experiment ON runs(experiment_id, started_at);
CREATE INDEX runs_by_sweep ON runs(sweep_id, job_num);
CREATE INDEX runs_by_start ON runs(started_at);
CREATE INDEX runs_by_status ON runs(status, started_at);
CREATE TABLE params (
    run_key INTEGER NOT NULL,
    key TEXT NOT NULL,
    value,
    type TEXT NOT NULL,
    PRIMARY KEY (run_key, key)
) WITHOUT ROWID;
CREATE INDEX params_by_key ON params(key, value);
CREATE TABLE tags (
    run_key INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    PRIMARY KEY (run_key, key)
) WITHOUT ROWID;
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    run_key INTEGER NOT NULL,
    name TEXT NOT NULL,
    context TEXT NOT NULL DEFAULT '',
    last_step INTEGER,
    last_value REAL,
    count INTEGER NOT NULL DEFAULT 0,
    UNIQUE (run_key, name, context)
);
CREATE TABLE points (
    series_id INTEGER NOT NULL,
    step INTEGER NOT NULL,
    value REAL,
    wall REAL NOT NULL
);
CREATE INDEX points_by_series ON points(series_id, step);
CREATE TABLE artifacts (
    run_key INTEGER NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_key, name)
) WITHOUT ROWID;
CREATE VIEW run_summary AS
    SELECT r.id, e.name AS experiment, r.name, r.status, r.started_at, r.ended_at,
           r.ended_at - r.started_at AS duration, r.sweep_id, r.job_num, r.output_dir
    FROM runs r JOIN experiments e ON e.id = r.experiment_id;
CREATE VIEW metrics AS
    SELECT r.id AS run_id, s.name, s.context, p.step, p.value, p.wall AS timestamp
    FROM points p JOIN series s ON s.id = p.series_id JOIN runs r ON r.key = s.run_key;
CREATE VIEW run_params AS
    SELECT r.id AS run_id, p.key, p.value, p.type
    FROM params p JOIN runs r ON r.key = p.run_key;
CREATE VIEW run_tags AS
    SELECT r.id AS run_id, t.key, t.value FROM tags t JOIN runs r ON r.key = t.run_key;
"""


def artifact_dir(db_path: str) -> Path:
    from pathlib import Path

    path = Path(db_path)
    return path.with_name(path.stem + "-artifacts")


def connect(db_path: str, *, create: bool = True, timeout: float = 60.0) -> sqlite3.Connection:
    """Open (and if needed create) the store for writing."""
    from pathlib import Path

    path = Path(db_path)
    if not create and not path.exists():
        raise StoreError(f"no store at {db_path}")
    if path.is_dir():
        raise StoreError(f"{db_path} is a folder; set tracker.db (or --db) to the "
                         f"store's file, such as {path / 'experiments.db'}")
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of {db_path}: {exc.strerror}; "
                             f"set tracker.db to a writable path") from None
    if create and not os.access(path.parent, os.W_OK) and not os.access(path, os.W_OK):
        raise StoreError(f"cannot write {db_path}: its folder is read-only; set "
                         f"tracker.db (or ${{ALIGN_TRACK_DB}}) to a writable path")
    try:
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = %d" % int(timeout * 1000))
        _check_schema(conn, db_path)  # before anything could change a file not ours
        _wal_mode(conn, timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        _ensure_schema(conn, db_path)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{db_path} is not a usable align-track store ({exc}); "
                         f"point tracker.db or --db at another file") from None
    return conn


def _wal_mode(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch a new file to WAL. Of several processes opening the same new file at
    once, all but one get "database is locked" at once (SQLite does not wait on its
    busy timeout for this): they retry until one of them has switched it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _check_schema(conn: sqlite3.Connection, db_path: str) -> None:
    # one statement, one snapshot: another process may be creating the schema now
    version, tables = conn.execute(
        "SELECT (SELECT user_version FROM pragma_user_version),"
        " (SELECT count(*) FROM sqlite_master WHERE type='table')").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(f"{db_path} has schema version {version}, newer than this "
                         f"align-track knows ({SCHEMA_VERSION}); upgrade align-track, "
                         f"or point tracker.db or --db at another file")
    if version == 0 and tables:
        raise StoreError(f"{db_path} is an SQLite file but not an align-track store; "
                         f"point tracker.db or --db at another file")


def _ensure_schema(conn: sqlite3.Connection, db_path: str) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    _check_schema(conn, db_path)
    if version > 0:
        _migrate(conn, db_path, version)
        return
    # BEGIN IMMEDIATE takes the write lock: of several processes creating the same
    # new file at once, one creates the schema and the others see it done.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            has_tables = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if has_tables:
                raise StoreError(f"{db_path} is an SQLite file but not an align-track "
                                 f"store; point tracker.db or --db at another file")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _migrate(conn: sqlite3.Connection, db_path: str, version: int) -> None:
    """Bring a store of an older schema up to date: back it up, then change it in one
    transaction, so a failure leaves it as it was."""
    backup = f"{db_path}.v{version}.bak"
    if not os.path.exists(backup):
        target = sqlite3.connect(backup)
        try:
            conn.backup(target)  # SQLite's online backup: a consistent copy
        finally:
            target.close()
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = conn.execute("PRAGMA user_version").fetchone()[0]  # another process?
        for step in range(current, SCHEMA_VERSION):
            for statement in MIGRATIONS[step]:
                if callable(statement):
                    statement(conn)
                else:
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    import logging

    logging.getLogger(__name__).warning(
        "migrated %s from schema version %d to %d; the old file is kept as %s",
        db_path, version, SCHEMA_VERSION, backup)


def connect_readonly(db_path: str) -> sqlite3.Connection:
    """Open an existing store for reading only."""
    if not os.path.exists(db_path):
        raise StoreError(f"no store at {db_path}; run an app with +tracker=sqlite "
                         f"first, or pass --db PATH")
    if os.path.isdir(db_path):
        raise StoreError(f"{db_path} is a folder; pass the store's file, such as "
                         f"{os.path.join(db_path, 'experiments.db')}")
    try:
        path = db_path if os.path.isabs(db_path) else os.path.join(os.getcwd(), db_path)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30,
                               check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        version, tables = conn.execute(
            "SELECT (SELECT user_version FROM pragma_user_version),"
            " (SELECT count(*) FROM sqlite_master WHERE type='table')").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{db_path} is not a usable align-track store ({exc})") from None
    if version == 0 and not tables:
        conn.close()
        raise StoreError(f"no store at {db_path} yet: the file is empty (a job may be "
                         f"creating it now)")
    if 0 < version < SCHEMA_VERSION:
        conn.close()
        connect(db_path, create=False).close()  # migrates, after a backup
        return connect_readonly(db_path)
    if version != SCHEMA_VERSION:
        if version > SCHEMA_VERSION:
            raise StoreError(f"{db_path} has schema version {version}, newer than this "
                             f"align-track knows ({SCHEMA_VERSION}); upgrade align-track")
        raise StoreError(f"{db_path} is not an align-track store (schema version {version})")
    conn.row_factory = sqlite3.Row
    return conn


#: A running run whose heartbeat is older than this is shown as crashed. The writer
#: beats every 10 s; a process that holds the GIL for minutes could miss some.
STALE_AFTER = 300.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def is_crashed(status: str, heartbeat_at: Optional[float], env_json: Optional[str],
               host: str, now_: Optional[float] = None) -> bool:
    """A ``running`` run whose process is gone (same host) or whose heartbeat is stale."""
    if status != "running":
        return False
    now_ = time.time() if now_ is None else now_
    if heartbeat_at is not None and now_ - heartbeat_at > STALE_AFTER:
        return True
    env = loads(env_json) or {}
    pid = env.get("pid")
    return env.get("host") == host and isinstance(pid, int) and not pid_alive(pid)


def mark_crashed(conn: sqlite3.Connection) -> int:
    """Set status ``crashed`` on runs that can no longer end; returns how many."""
    import socket

    host = socket.gethostname()
    rows = conn.execute("SELECT key, status, heartbeat_at, env FROM runs"
                        " WHERE status = 'running'").fetchall()
    dead = [(r[0],) for r in rows if is_crashed(r[1], r[2], r[3], host)]
    if dead:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("UPDATE runs SET status = 'crashed' WHERE key = ? AND status = 'running'",
                         dead)
        conn.execute("COMMIT")
    return len(dead)


def param_row(value: Any) -> tuple:
    """(value, type) for the params table; containers as JSON text."""
    if value is None:
        return None, "null"
    if isinstance(value, bool):
        return int(value), "bool"
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return value, "int"
        return str(value), "int"
    if isinstance(value, float):
        return (None if math.isnan(value) else value), "float"
    if isinstance(value, str):
        return value, "str"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), default=str, ensure_ascii=False), "list"
    if isinstance(value, dict):
        return json.dumps(value, default=str, ensure_ascii=False), "dict"
    return str(value), "str"


def param_value(value: Any, type_: str) -> Any:
    if type_ == "bool":
        return bool(value)
    if type_ in ("list", "dict"):
        return json.loads(value)
    if type_ == "float" and value is None:
        return math.nan
    if type_ == "int" and isinstance(value, str):
        return int(value)
    return value


def params_json(params: Any) -> str:
    """The ``runs.params_json`` text of decoded params (``{key: value}``): keys
    sorted, NaN and infinities as ``NaN``/``Infinity`` (which :func:`json.loads`
    reads back)."""
    return json.dumps(dict(sorted(params.items())), ensure_ascii=False,
                      allow_nan=True)


#: A run's series with points, in the order ``metrics_json`` lists them.
SERIES_SUMMARY = ("SELECT name, context, last_value FROM series WHERE run_key = ?"
                  " AND count ORDER BY name, context")


def metric_key(name: str, context: str) -> str:
    """``name`` alone, or ``name[k=v,...]`` for a point logged with a context.

    A part is shown bare when it is a plain word (``acc[subset=val]``); any other
    part is shown as JSON (``acc[fold=1]``, ``acc[tag="1"]``, ``"acc[a=1]"`` for a
    name with brackets), so no two series share a key.
    """
    shown = name if _plain_name(name) else json.dumps(name, ensure_ascii=False)
    if not context:
        return shown
    ctx = json.loads(context)
    pairs = ",".join(f"{_shown(str(k))}={_shown(v)}" for k, v in ctx.items())
    return f"{shown}[{pairs}]"


def _plain_name(name: str) -> bool:
    return bool(name) and not any(c in name for c in '[]"')


def _shown(value: Any) -> str:
    if isinstance(value, str) and value and value[0].isalpha() \
            and value not in ("true", "false", "null") \
            and all(c.isalnum() or c in "_-./" for c in value):
        return value
    return json.dumps(value, ensure_ascii=False)


def metrics_json(series: Any) -> str:
    """The ``runs.metrics_json`` text, ``{metric: last value}``, of a run's
    ``(name, context, last_value)`` rows in :data:`SERIES_SUMMARY` order."""
    return json.dumps({metric_key(name, ctx): point_value(value)
                       for name, ctx, value in series}, ensure_ascii=False,
                      allow_nan=True)


def point_value(value: Optional[float]) -> float:
    return math.nan if value is None else value


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, allow_nan=True)


def loads(text: Optional[str]) -> Any:
    return None if text is None else json.loads(text)


def now() -> float:
    return time.time()


def find_run_key(conn: sqlite3.Connection, ident: str) -> sqlite3.Row:
    """The runs row whose id is ``ident`` or starts with it (at least 4 characters)."""
    rows = conn.execute("SELECT * FROM runs WHERE id = ?", (ident,)).fetchall()
    if not rows and len(ident) >= 4:
        rows = conn.execute(
            "SELECT * FROM runs WHERE id >= ? AND id < ? LIMIT 2",
            (ident, ident + "\uffff"),
        ).fetchall()
    if not rows:
        raise KeyError(f"no run with id {ident!r}")
    if len(rows) > 1:
        raise KeyError(f"run id prefix {ident!r} is ambiguous; give more characters")
    return rows[0]
