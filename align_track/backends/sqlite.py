"""The default backend: one SQLite file, no server, standard library only."""
from __future__ import annotations

import collections
import errno
import hashlib
import itertools
import operator
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from align_track import store
from align_track.backends.base import Backend
from align_track.env import anchor, default_db
from align_track.records import RUNNING, Point, RunEnd, RunRecord, SweepRecord

logger = logging.getLogger(__name__)

_SERIES_KEY = operator.itemgetter(0, 4)  # (name, context) of a point
_NAME, _STEP, _VALUE, _WALL, _CTX = map(operator.itemgetter, range(5))
#: A batch this large means a run logs faster than a thread of its process should
#: store; after BULK_AFTER such batches in a row (starting a process costs more than
#: it saves for fewer), the points go to a writer process (see align_track._bulk).
BULK_AT = 20_000
BULK_AFTER = 3
#: Files up to this size are read into memory whole when stored as artifacts.
_SMALL_FILE = 1 << 20
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class SQLiteBackend(Backend):
    """Runs in one SQLite file, in WAL mode, written by a background thread.

    Args:
        db: path of the store; created with its folder if missing.
        bulk: hand full batches to a writer process (off this process's GIL).
    """

    name = "sqlite"

    def __init__(self, db: str, bulk: bool = True):
        self.db = os.path.abspath(db)
        self.location = f"sqlite:///{self.db}"
        self._conn: Any = None
        self._lock = threading.RLock()
        self._run_keys: Dict[str, int] = {}
        self._series: Dict[Tuple[int, str, str], int] = {}
        self._bulk_allowed = bulk and os.environ.get("ALIGN_TRACK_BULK", "1") != "0"
        self._bulk: Any = None
        self._full_batches = 0  # full batches handed over in a row
        self._unsent: List[Tuple[str, List[Point]]] = []  # taken back from the writer
        self._objects: Optional[str] = None  # the artifact store's objects folder, once made
        self._shards: Set[str] = set()  # its sha256-prefix folders known to exist

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = store.connect(self.db)
            logger.debug("opened %s", self.db)
        return self._conn

    def _write(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                    conn.execute("ROLLBACK")
                # ids made inside the rolled-back transaction no longer exist
                self._series.clear()
                self._run_keys.clear()
                raise
            return result

    @classmethod
    def from_settings(cls, settings: Any, launch_dir: str) -> Tuple[str, Dict[str, Any]]:
        db = anchor(settings.db, launch_dir) if settings.db else default_db(launch_dir)
        return db, {"db": db}

    def open(self) -> None:
        """Open the file now, so a bad path is reported at job start; mark runs whose
        process died as crashed."""
        warn_if_network_fs(self.db)
        with self._lock:
            crashed = store.mark_crashed(self.conn)
        if crashed:
            logger.info("marked %d runs in %s as crashed (their process is gone)",
                        crashed, self.db)

    def find_resumable(self, identity: str) -> Optional[str]:
        row = self.conn.execute(
            "SELECT id FROM runs WHERE identity = ? AND status IN"
            " ('interrupted', 'crashed', 'running') ORDER BY started_at DESC LIMIT 1",
            (identity,)).fetchone()
        return row[0] if row else None

    def resume_run(self, record: RunRecord) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE runs SET status = ?, ended_at = NULL, error = NULL,"
                         " heartbeat_at = ? WHERE key = ?",
                         (RUNNING, store.now(), self._key(conn, record.id)))
        self._write(update)

    def start_run(self, record: RunRecord) -> None:
        self._write(self._insert_run, record)

    def _insert_run(self, conn: sqlite3.Connection, r: RunRecord) -> None:
        exp_id = self._experiment_id(conn, r.experiment)
        rows = [(k, *store.param_row(v)) for k, v in r.params.items()]
        # keys that are not text are stored as SQLite converts them: read back below
        exact = all(type(k) is str for k in r.params)
        decoded = {k: store.param_value(v, t) for k, v, t in rows} if exact else None
        text = store.params_json(decoded) if exact else None
        cur = conn.execute(
            "INSERT INTO runs (id, experiment_id, name, status, started_at, heartbeat_at,"
            " sweep_id, job_num, output_dir, overrides, choices, config, config_yaml,"
            " env, git, identity, params_json, metrics_json)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'{}')",
            (r.id, exp_id, r.name, RUNNING, r.started_at, r.started_at, r.sweep_id,
             r.job_num, r.output_dir, store.dumps(r.overrides), store.dumps(r.choices),
             store.dumps(r.config), r.config_yaml, store.dumps(r.env), store.dumps(r.git),
             r.identity, text),
        )
        key = cur.lastrowid
        self._run_keys[r.id] = key
        conn.executemany(
            "INSERT OR REPLACE INTO params (run_key, key, value, type) VALUES (?,?,?,?)",
            [(key, *row) for row in rows],
        )
        if not exact:
            _store_params_json(conn, key)
        conn.executemany(
            "INSERT OR REPLACE INTO tags (run_key, key, value) VALUES (?,?,?)",
            [(key, k, v) for k, v in r.tags.items()],
        )

    @staticmethod
    def _experiment_id(conn: sqlite3.Connection, name: str) -> int:
        conn.execute("INSERT OR IGNORE INTO experiments (name, created_at) VALUES (?, ?)",
                     (name, store.now()))
        return conn.execute("SELECT id FROM experiments WHERE name = ?", (name,)).fetchone()[0]

    def _key(self, conn: sqlite3.Connection, run_id: str) -> int:
        key = self._run_keys.get(run_id)
        if key is None:
            row = conn.execute("SELECT key FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise KeyError(f"run {run_id} is not in {self.db}")
            key = self._run_keys[run_id] = row[0]
        return key

    def log_metrics(self, run_id: str, points: List[Point]) -> None:
        if not points:
            return
        with self._lock:
            self._write_unsent()
            if self._bulk is None and self._bulk_allowed:
                self._full_batches = self._full_batches + 1 if len(points) >= BULK_AT else 0
                if self._full_batches >= BULK_AFTER:
                    self._start_bulk()
            if self._bulk is not None:
                if self._bulk.send(run_id, points):
                    return
                self._take_back()
        self._write(self._insert_points, run_id, points)

    def sync(self) -> None:
        """Return once every point handed to :meth:`log_metrics` is stored."""
        with self._lock:
            if self._bulk is not None and not self._bulk.wait():
                self._take_back()
            self._write_unsent()

    def _start_bulk(self) -> None:
        from align_track._bulk import BulkWriter

        try:
            self._bulk = BulkWriter(self.db)
        except OSError as exc:
            self._bulk_allowed = False
            logger.warning("could not start a writer process (%s); points of %s are "
                           "written by a thread of this process", exc, self.db)

    def _take_back(self) -> None:
        """The writer process failed: store what it had not stored, here."""
        self._unsent.extend(self._bulk.take_back())
        self._bulk = None
        self._bulk_allowed = False
        self._write_unsent()

    def _write_unsent(self) -> None:
        while self._unsent:
            run_id, points = self._unsent[0]
            self._write(self._insert_points, run_id, points)  # raises: kept for later
            self._unsent.pop(0)

    def _insert_points(self, conn: sqlite3.Connection, run_id: str, points: List[Point]) -> None:
        # Every point ever logged passes here: the per-point work is all in C
        # (map, zip, Counter), with no tuple built per point in Python.
        run_key = self._key(conn, run_id)
        if any(map(_CTX, points)):
            keys = list(map(_SERIES_KEY, points))
            series = {key: self._series_of(conn, run_key, *key) for key in set(keys)}
        else:  # no contexts: a metric's name is its series
            keys = list(map(_NAME, points))
            series = {key: self._series_of(conn, run_key, key, "") for key in set(keys)}
        # SQLite binds NaN as NULL, which the readers turn back into NaN.
        conn.executemany(
            "INSERT INTO points (series_id, step, value, wall) VALUES (?,?,?,?)",
            zip(map(series.__getitem__, keys), map(_STEP, points), map(_VALUE, points),
                map(_WALL, points)),
        )
        counts = collections.Counter(keys) if len(series) > 1 else {keys[0]: len(keys)}
        last = dict(zip(keys, points))  # the last point of each series
        conn.executemany(
            "UPDATE series SET last_step = ?, last_value = ?, count = count + ? WHERE id = ?",
            [(p[1], p[2], counts[k], series[k]) for k, p in last.items()],
        )
        # the run's last values in one text, for `experiments list` (once a batch)
        conn.execute("UPDATE runs SET metrics_json = ? WHERE key = ?",
                     (store.metrics_json(conn.execute(store.SERIES_SUMMARY, (run_key,))),
                      run_key))

    def _series_of(self, conn: sqlite3.Connection, run_key: int, name: str, ctx: str) -> int:
        return self._series.get((run_key, name, ctx)) or self._series_id(conn, run_key,
                                                                         name, ctx)

    def _series_id(self, conn: sqlite3.Connection, run_key: int, name: str, ctx: str) -> int:
        conn.execute("INSERT OR IGNORE INTO series (run_key, name, context) VALUES (?,?,?)",
                     (run_key, name, ctx))
        sid = conn.execute("SELECT id FROM series WHERE run_key=? AND name=? AND context=?",
                           (run_key, name, ctx)).fetchone()[0]
        self._series[(run_key, name, ctx)] = sid
        return sid

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            key = self._key(conn, run_id)
            conn.executemany(
                "INSERT OR REPLACE INTO params (run_key, key, value, type) VALUES (?,?,?,?)",
                [(key, k, *store.param_row(v)) for k, v in params.items()],
            )
            _store_params_json(conn, key)  # all of the run's params, old and new
        self._write(insert)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            key = self._key(conn, run_id)
            conn.executemany("INSERT OR REPLACE INTO tags (run_key, key, value) VALUES (?,?,?)",
                             [(key, k, v) for k, v in tags.items()])
        self._write(insert)

    def log_artifact(self, run_id: str, path: str, name: str) -> Dict[str, Any]:
        return self.log_artifacts(run_id, [(path, name)])[0]

    def log_artifacts(self, run_id: str, files: List[Tuple[str, str]]) -> List[Dict[str, Any]]:
        """Store each file's bytes, then every row in one transaction."""
        stored = [(name, *self._store_object(path)) for path, name in files]

        def insert(conn: sqlite3.Connection) -> None:
            key, now = self._key(conn, run_id), store.now()
            conn.executemany(
                "INSERT OR REPLACE INTO artifacts (run_key, name, sha256, size, created_at)"
                " VALUES (?,?,?,?,?)", [(key, name, sha, size, now)
                                        for name, sha, size in stored])
        self._write(insert)
        return [{"name": name, "size": size, "sha256": sha, "path": self._object_file(sha)}
                for name, sha, size in stored]

    def object_path(self, sha: str) -> "os.PathLike[str]":
        return Path(self._object_file(sha))

    def _object_file(self, sha: str) -> str:
        return os.path.join(self._objects or self._objects_dir(), sha[:2], sha)

    def _objects_dir(self) -> str:
        """The objects folder, made (again) if it is not there."""
        objects = self._objects
        if objects is None or not os.path.isdir(objects):
            objects = str(store.artifact_dir(self.db) / "objects")
            os.makedirs(objects, exist_ok=True)
            self._objects, self._shards = objects, set()
        return objects

    def _store_object(self, path: str) -> Tuple[str, int]:
        """Copy a file into the objects folder under its sha256; (sha256, size).
        The bytes there are at the start are stored: a file that keeps growing (a
        live log) is stored as it was."""
        try:
            objects = self._objects_dir()
            return self._store_in(objects, path)
        except OSError as exc:
            if exc.filename is not None and os.path.abspath(str(exc.filename)) == \
                    os.path.abspath(path):
                raise  # the file itself: its own message names it
            where = store.artifact_dir(self.db)
            fix = ("make that folder writable" if exc.errno in _NOT_WRITABLE
                   else "free space on that disk")
            raise OSError(exc.errno, f"cannot store {path} in {where} ({exc.strerror}); "
                          f"{fix}, or set tracker.db to a store on another disk") from None

    def _store_in(self, objects: str, path: str) -> Tuple[str, int]:
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            if size <= _SMALL_FILE:
                # the common case (Hydra's files, a log): one read, and no copy at
                # all when the same bytes are stored already
                data = src.read(size)
                sha = hashlib.sha256(data).hexdigest()
                if not os.path.exists(self._object_file(sha)):
                    self._settle(_write_temp(objects, lambda dst: dst.write(data)), sha)
                return sha, len(data)
            digest = hashlib.sha256()
            copied = 0

            def copy(dst: Any) -> None:
                nonlocal copied
                left = size
                while left > 0:
                    chunk = src.read(min(1 << 20, left))
                    if not chunk:
                        break
                    digest.update(chunk)
                    dst.write(chunk)
                    copied += len(chunk)
                    left -= len(chunk)

            tmp = _write_temp(objects, copy)
            sha = digest.hexdigest()
            self._settle(tmp, sha)
            return sha, copied

    def _settle(self, tmp: str, sha: str) -> None:
        """Make the written file ``tmp`` the object ``sha``, or drop it when that
        object is there already (same bytes stored once)."""
        try:
            if os.path.exists(self._object_file(sha)):
                os.unlink(tmp)
            else:
                self._move_in(tmp, sha)
        except BaseException:
            _unlink(tmp)
            raise

    def _move_in(self, tmp: str, sha: str) -> None:
        shard = sha[:2]
        if shard not in self._shards:
            os.makedirs(os.path.join(self._objects_dir(), shard), exist_ok=True)
            self._shards.add(shard)
        try:
            os.replace(tmp, self._object_file(sha))
        except FileNotFoundError:
            if not os.path.exists(tmp):
                raise
            # the folder was removed while this process ran (a clean-up): make it again
            os.makedirs(os.path.join(self._objects_dir(), shard), exist_ok=True)
            os.replace(tmp, self._object_file(sha))

    def end_run(self, run_id: str, end: RunEnd) -> None:
        self.sync()  # a finished run has all its points

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE runs SET status = ?, ended_at = ?, error = ?, return_value = ?,"
                " dropped = ? WHERE key = ?",
                (end.status, end.ended_at, store.dumps(end.error) if end.error else None,
                 store.dumps(end.return_value) if end.return_value is not None else None,
                 end.dropped, self._key(conn, run_id)),
            )
        self._write(update)

    def heartbeat(self, run_ids: List[str], now: float) -> None:
        self._write(lambda c: c.executemany(
            "UPDATE runs SET heartbeat_at = ? WHERE id = ? AND status = 'running'",
            [(now, rid) for rid in run_ids]))

    def start_sweep(self, sweep: SweepRecord) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO sweeps (id, experiment_id, dir, command, overrides,"
                " sweeper, launcher, jobs_expected, started_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (sweep.id, self._experiment_id(conn, sweep.experiment), sweep.dir,
                 store.dumps(sweep.command), store.dumps(sweep.overrides), sweep.sweeper,
                 sweep.launcher, sweep.jobs_expected, sweep.started_at))
        self._write(insert)

    def end_sweep(self, sweep_id: str, ended_at: float, status: str = "finished") -> None:
        self._write(lambda c: c.execute(
            "UPDATE sweeps SET ended_at = ?, status = ? WHERE id = ?",
            (ended_at, status, sweep_id)))

    def close(self) -> None:
        with self._lock:
            if self._bulk is not None:
                if self._bulk.pid != os.getpid():  # a forked child: the parent's writer
                    self._bulk = None
                else:
                    self.sync()
                    if self._bulk is not None:
                        self._bulk.close()
                        self._bulk = None
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def describe_run(self, run_id: str) -> str:
        return f"experiments --db {self.db} show {run_id}"


_incoming = itertools.count()


def _new_file(folder: str) -> Tuple[int, str]:
    """(fd, path) of a file made in ``folder`` for this process and thread alone
    (as tempfile.mkstemp, without its imports on the path of every job)."""
    while True:
        path = os.path.join(folder, f".incoming-{os.getpid()}-{threading.get_ident()}-"
                                    f"{next(_incoming)}")
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), path
        except FileExistsError:  # left by a process that had this pid before
            continue


def _write_temp(folder: str, write: Any) -> str:
    """A new file in ``folder`` holding what ``write`` writes; its path."""
    fd, tmp = _new_file(folder)
    try:
        with os.fdopen(fd, "wb") as dst:
            write(dst)
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _store_params_json(conn: sqlite3.Connection, run_key: int) -> None:
    """Set ``runs.params_json`` of a run from its params rows."""
    params = {k: store.param_value(v, t) for k, v, t in conn.execute(
        "SELECT key, value, type FROM params WHERE run_key = ?", (run_key,))}
    conn.execute("UPDATE runs SET params_json = ? WHERE key = ?",
                 (store.params_json(params), run_key))


_NETWORK_FS = ("nfs", "nfs4", "cifs", "smb", "smb3", "smbfs", "fuse.sshfs", "afs",
               "9p", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "fuse.glusterfs")
_warned_fs: set = set()


def mount_fstype(path: str, mounts_file: str = "/proc/mounts") -> Optional[str]:
    """File system type of the mount holding ``path`` (Linux), or None."""
    try:
        with open(mounts_file) as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return None
    path = os.path.realpath(os.path.dirname(path) or ".")
    best, fstype = "", None
    for fields in mounts:
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, fstype = point, fields[2]
    return fstype


def warn_if_network_fs(path: str, mounts_file: str = "/proc/mounts") -> bool:
    fstype = mount_fstype(path, mounts_file)
    if fstype in _NETWORK_FS and path not in _warned_fs:
        _warned_fs.add(path)
        logger.warning("%s is on a network file system (%s), where SQLite locking is not "
                       "reliable and concurrent jobs can corrupt the store\n  put "
                       "tracker.db on a local disk, or use a server backend "
                       "(tracker=mlflow with an MLflow server)", path, fstype)
        return True
    return False
