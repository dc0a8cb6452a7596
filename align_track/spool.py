"""Keep a server backend's writes while the server is away, and replay them later.

When a call to a server backend (MLflow, Aim, ClearML) fails, that run's calls from
then on go to a local SQLite file, ``align-track-spool.db`` in the launch directory,
in order; the job goes on. ``experiments sync`` replays them once the server is back,
each exactly once, into the same run; ``experiments list`` says which runs wait.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from align_track.backends.base import Backend
from align_track.env import SPOOL_FILE
from align_track.errors import AlignTrackError
from align_track.records import FINISHED, Point, RunEnd, RunRecord, SweepRecord

logger = logging.getLogger(__name__)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS targets (
    id TEXT PRIMARY KEY, backend TEXT NOT NULL, kwargs TEXT NOT NULL, location TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, target TEXT NOT NULL, experiment TEXT, name TEXT,
    spooled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, run_id TEXT,
    op TEXT NOT NULL, payload BLOB NOT NULL, created_at REAL NOT NULL
);
"""


def spool_path(launch_dir: str) -> str:
    return os.path.join(launch_dir, SPOOL_FILE)


class Spool:
    """The spool file: pending calls per target backend, in order."""

    def __init__(self, path: str):
        self.path = path
        self.files = Path(path).with_name(Path(path).stem + "-files")
        self._lock = threading.Lock()
        self._conn: Optional[sqlite3.Connection] = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def add_target(self, target: str, backend: str, kwargs: Mapping[str, Any],
                   location: str) -> None:
        with self._lock:
            self.conn.execute("INSERT OR IGNORE INTO targets VALUES (?,?,?,?)",
                              (target, backend, json.dumps(dict(kwargs)), location))

    def add(self, target: str, run_id: Optional[str], op: str, args: Tuple[Any, ...]) -> None:
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if run_id is not None:
                    record = args[0] if op == "start_run" else None
                    conn.execute(
                        "INSERT OR IGNORE INTO runs VALUES (?,?,?,?,?)",
                        (run_id, target, getattr(record, "experiment", None),
                         getattr(record, "name", None), time.time()))
                conn.execute("INSERT INTO ops (target, run_id, op, payload, created_at)"
                             " VALUES (?,?,?,?,?)",
                             (target, run_id, op, pickle.dumps(args), time.time()))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def keep_file(self, path: str) -> str:
        """Copy a file into the spool (the original may be gone by sync time)."""
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        target = self.files / digest.hexdigest()
        if not target.exists():
            self.files.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, str(target) + ".tmp")
            os.replace(str(target) + ".tmp", target)
        return str(target)

    def targets(self) -> List[Tuple[str, str, Dict[str, Any], str]]:
        return [(t, b, json.loads(k), loc) for t, b, k, loc in
                self.conn.execute("SELECT id, backend, kwargs, location FROM targets")]

    def ops(self, target: str) -> Iterator[Tuple[int, Optional[str], str, Tuple[Any, ...]]]:
        rows = self.conn.execute("SELECT seq, run_id, op, payload FROM ops WHERE target = ?"
                                 " ORDER BY seq", (target,)).fetchall()
        for seq, run_id, op, payload in rows:
            yield seq, run_id, op, pickle.loads(payload)

    def done(self, seq: int) -> None:
        with self._lock:
            self.conn.execute("DELETE FROM ops WHERE seq = ?", (seq,))

    def forget_synced_runs(self) -> None:
        with self._lock:
            self.conn.execute("DELETE FROM runs WHERE run_id NOT IN"
                              " (SELECT run_id FROM ops WHERE run_id IS NOT NULL)")

    def waiting(self) -> List[Dict[str, Any]]:
        """Runs with calls still to replay."""
        rows = self.conn.execute(
            "SELECT r.run_id, r.experiment, r.name, t.backend, t.location, count(o.seq)"
            " FROM runs r JOIN targets t ON t.id = r.target"
            " JOIN ops o ON o.run_id = r.run_id GROUP BY r.run_id ORDER BY r.spooled_at"
        ).fetchall()
        return [{"id": r, "experiment": e, "name": n, "backend": b, "location": loc,
                 "pending_calls": c} for r, e, n, b, loc, c in rows]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SpoolingBackend(Backend):
    """Wraps a server backend: a failed call sends that run's calls to the spool."""

    def __init__(self, inner: Backend, spool: Spool, backend: str, kwargs: Mapping[str, Any]):
        self.inner = inner
        self.name = inner.name
        self.spool = spool
        self.target = f"{backend}:{inner.location}"
        self._backend = backend
        self._kwargs = dict(kwargs)
        self._spooled: set = set()
        self._down = False
        self._warned = False

    @property  # type: ignore[override]
    def location(self) -> str:
        # the inner backend may learn where it writes only when it opens (ClearML
        # finds out there whether it runs offline)
        return self.inner.location

    def open(self) -> None:
        try:
            self.inner.open()
        except AlignTrackError:
            raise  # a setting is wrong: waiting for the server would not help
        except Exception as exc:
            self._down = True
            self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("%s at %s is unreachable (%s); the job goes on and its runs are "
                           "kept in %s\n  run `experiments sync` when the server is back",
                           self.name, self.location, exc, self.spool.path)

    def _call(self, run_id: Optional[str], op: str, *args: Any) -> Any:
        if not self._down and (run_id is None or run_id not in self._spooled):
            try:
                return getattr(self.inner, op)(*args)
            except (NotImplementedError, AlignTrackError):
                raise
            except Exception as exc:
                self._warn(exc)
                if run_id is not None:
                    self._spooled.add(run_id)
        self.spool.add_target(self.target, self._backend, self._kwargs, self.location)
        self.spool.add(self.target, run_id, op, args)
        return None

    def start_run(self, record: RunRecord) -> None:
        self._call(record.id, "start_run", record)

    def log_metrics(self, run_id: str, points: List[Point]) -> None:
        self._call(run_id, "log_metrics", run_id, points)

    def end_run(self, run_id: str, end: RunEnd) -> None:
        self._call(run_id, "end_run", run_id, end)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self._call(run_id, "log_params", run_id, dict(params))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self._call(run_id, "set_tags", run_id, dict(tags))

    def log_artifact(self, run_id: str, path: str, name: str) -> Dict[str, Any]:
        if not self._down and run_id not in self._spooled:
            try:
                return self.inner.log_artifact(run_id, path, name)
            except NotImplementedError:
                raise
            except Exception as exc:
                self._warn(exc)
                self._spooled.add(run_id)
        kept = self.spool.keep_file(path)
        self._call(run_id, "log_artifact", run_id, kept, name)
        return {"name": name, "size": os.path.getsize(kept), "sha256": Path(kept).name,
                "spooled": True}

    def start_sweep(self, sweep: SweepRecord) -> None:
        self._call(None, "start_sweep", sweep)

    def end_sweep(self, sweep_id: str, ended_at: float, status: str = FINISHED) -> None:
        self._call(None, "end_sweep", sweep_id, ended_at, status)

    def heartbeat(self, run_ids: List[str], now: float) -> None:
        live = [r for r in run_ids if r not in self._spooled]
        if live and not self._down:
            try:
                self.inner.heartbeat(live, now)
            except Exception:
                logger.debug("heartbeat failed", exc_info=True)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.spool.close()

    def describe_run(self, run_id: str) -> Optional[str]:
        return self.inner.describe_run(run_id)


def sync(path: str) -> Tuple[int, List[str]]:
    """Replay every spooled call in order; returns (calls replayed, errors)."""
    from align_track.backends import backend_class

    spool = Spool(path)
    replayed, errors = 0, []
    for target, backend, kwargs, location in spool.targets():
        inner = backend_class(backend)(**kwargs)
        try:
            inner.open()
            for seq, run_id, op, args in spool.ops(target):
                getattr(inner, op)(*args)
                spool.done(seq)  # right after the call: a rerun never sends it twice
                replayed += 1
        except Exception as exc:
            errors.append(f"{backend} at {location}: {type(exc).__name__}: {exc}")
        finally:
            try:
                inner.close()
            except Exception:
                logger.debug("closing %s failed", location, exc_info=True)
    spool.forget_synced_runs()
    spool.close()
    return replayed, errors
