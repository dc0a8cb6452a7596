"""The Aim backend: every run is an ``aim.Run`` in a local or remote Aim repo.

Where each piece of a run lands is described in ``docs/backends/aim.md``. Two Aim
3.29 behaviours shape this module:

* Queries (``Repo.query_runs``, ``aim up``) read the repo's index database, and
  closing a run does not add the run to it: only ``aim up``'s background indexer or
  ``aim storage reindex`` do. :meth:`AimBackend.end_run` therefore merges each closed
  run into the index itself, so it is visible to any new reader at once.
* The index database, a new repo and the run-metadata SQLite file each admit one
  writer at a time; concurrent jobs retry those steps briefly instead of failing.
"""
from __future__ import annotations

import enum
import inspect
import json
import logging
import os
import random
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from align_track.backends.base import Backend, file_digest
from align_track.env import anchor
from align_track.flatten import split_key
from align_track.records import FINISHED, Point, RunEnd, RunRecord

logger = logging.getLogger(__name__)

#: Name of the repo folder Aim keeps under the repo path (``aim init`` makes it).
REPO_DIR = ".aim"
#: Seconds to keep retrying a step that another process holds a lock on.
LOCK_WAIT = 60.0
#: Integers outside this range do not fit Aim's int64 storage; they are kept as text.
INT64 = (-(2**63), 2**63 - 1)
#: Run fields written by align-track next to Aim's own properties.
STATUS_FIELD = "align_track_status"
ID_FIELD = "align_track_id"
TAGS_FIELD = "align_track_tags"
ARTIFACTS_FIELD = "align_track_artifacts"


def to_aim(value: Any) -> Any:
    """Convert a config value to what an Aim run field stores and returns unchanged.

    Aim 3.29 stores dicts, lists, str, bytes, bool, float (NaN and infinities too),
    ``None`` and integers that fit in int64. It refuses ``None`` keys, integers
    beyond int64 and sets, reads an empty-string key back as ``0`` and a ``True`` key
    as ``1``. So: keys become strings (``""`` becomes ``'""'``), oversized integers
    become their decimal text, tuples and sets become lists, enums their name, and
    any other object its ``str()``.
    """
    if value is None or isinstance(value, (str, bytes, bool, float)):
        return value
    if isinstance(value, int):
        return value if INT64[0] <= value <= INT64[1] else str(value)
    if isinstance(value, Mapping):
        out: Dict[str, Any] = {}
        for key, item in value.items():
            out[_aim_key(key, out)] = to_aim(item)
        return out
    if isinstance(value, (list, tuple)):
        return [to_aim(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [to_aim(v) for v in sorted(value, key=repr)]
    if isinstance(value, enum.Enum):
        return value.name
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        try:
            return to_aim(item())
        except Exception:  # noqa: BLE001 - fall back to the text form
            pass
    return str(value)


def _aim_key(key: Any, taken: Mapping[str, Any]) -> str:
    text = key if isinstance(key, str) else str(key)
    if text == "" or (not isinstance(key, str) and text in taken):
        text = json.dumps(text if isinstance(key, str) else repr(key))
    return text


def _retry(what: str, fn: Callable[[], Any], errors: Tuple[type, ...]) -> Any:
    """Call ``fn``, retrying for up to :data:`LOCK_WAIT` seconds on ``errors``."""
    deadline = time.monotonic() + LOCK_WAIT
    delay = 0.05
    while True:
        try:
            return fn()
        except errors as exc:
            if time.monotonic() > deadline:
                raise
            logger.debug("%s is busy (%s); retrying", what, exc)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)


def _busy_errors() -> Tuple[type, ...]:
    """Exceptions Aim raises when another process holds a database it needs."""
    import aimrocks.errors
    import filelock
    from sqlalchemy.exc import IntegrityError, OperationalError

    return (aimrocks.errors.RocksIOError, OperationalError, IntegrityError,
            filelock.Timeout)


class _RepoNotReady(Exception):
    """The repo folder exists but its creation has not finished."""


def _props(run: Any, fn: Callable[[], Any]) -> Any:
    """Change a run's structured properties (name, experiment, tags), leaving the
    session usable for a retry when the SQLite file is busy."""
    try:
        return fn()
    except Exception:
        session = getattr(getattr(run, "props", None), "_session", None)
        if session is not None:
            try:
                session.rollback()
            except Exception:  # noqa: BLE001 - the original error is the one to raise
                pass
        raise


class AimBackend(Backend):
    """Runs in an Aim repo, on disk or behind ``aim server``.

    Args:
        repo: the folder that holds (or will hold) the ``.aim`` repo folder, or
            ``aim://host:port`` for a remote tracking server.
        system_tracking_interval: seconds between Aim's CPU/GPU/memory samples;
            None turns them off.
        log_system_params: let Aim store installed packages, environment
            variables and git information in ``run["__system_params"]``.
        artifacts_uri: where Aim copies artifacts (``file://...`` or ``s3://...``);
            None: ``file://<repo>/.aim/artifacts`` for a local repo and
            ``file://<artifacts_dir>`` for a remote one.
        artifacts_dir: the local default for a remote repo's artifacts.
    """

    name = "aim"

    def __init__(
        self,
        repo: str,
        system_tracking_interval: Optional[float] = None,
        log_system_params: bool = False,
        artifacts_uri: Optional[str] = None,
        artifacts_dir: Optional[str] = None,
    ):
        self.repo = repo
        self.remote = repo.startswith("aim://")
        self.location = repo if self.remote else os.path.join(repo, REPO_DIR)
        self.system_tracking_interval = system_tracking_interval
        self.log_system_params = log_system_params
        if artifacts_uri is None:
            folder = (artifacts_dir if self.remote
                      else os.path.join(repo, REPO_DIR, "artifacts"))
            artifacts_uri = f"file://{folder}" if folder else None
        self.artifacts_uri = artifacts_uri
        self._repo: Any = None
        self._runs: Dict[str, Any] = {}
        self._hparams: Dict[str, Dict[str, Any]] = {}
        self._tags: Dict[str, Dict[str, str]] = {}
        self._artifacts: Dict[str, Dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._track: Dict[str, Callable[..., Any]] = {}

    @classmethod
    def from_settings(
        cls, settings: Any, launch_dir: str
    ) -> Tuple[str, Dict[str, Any]]:
        """The repo from ``tracker.repo`` (default: the launch directory).

        A relative path starts at the launch directory; a path that ends in
        ``.aim`` names the repo folder itself.
        """
        raw = settings.repo
        if raw and str(raw).startswith("aim://"):
            repo = str(raw).rstrip("/")
        else:
            repo = anchor(str(raw), launch_dir) if raw else os.path.abspath(launch_dir)
            if os.path.basename(repo) == REPO_DIR:
                repo = os.path.dirname(repo)
        kwargs = {
            "repo": repo,
            "system_tracking_interval": settings.system_tracking_interval,
            "log_system_params": bool(settings.log_system_params),
            "artifacts_uri": getattr(settings, "output_uri", None) or None,
            "artifacts_dir": os.path.join(
                os.path.abspath(launch_dir), REPO_DIR, "artifacts"),
        }
        return repo, kwargs

    # -- the repo ------------------------------------------------------------------

    @property
    def aim_repo(self) -> Any:
        """The ``aim.Repo``, created (like ``aim init``) if the folder has none."""
        with self._lock:
            if self._repo is None:
                self._repo = self._open_repo()
            return self._repo

    def _open_repo(self) -> Any:
        from aim import Repo

        if self.remote:
            return Repo.from_path(self.repo)
        os.makedirs(self.repo, exist_ok=True)
        version = os.path.join(self.repo, REPO_DIR, "VERSION")

        def open_or_init() -> Any:
            if Repo.exists(self.repo) and not os.path.exists(version):
                # Another process is creating the repo; its VERSION file comes last.
                raise _RepoNotReady(version)
            return Repo.from_path(self.repo, init=not Repo.exists(self.repo))

        try:
            repo = _retry(f"Aim repo {self.repo}", open_or_init,
                          _busy_errors() + (_RepoNotReady,))
        except _RepoNotReady:  # a creation that crashed half way: finish it
            repo = Repo.from_path(self.repo, init=True)
        logger.debug("opened Aim repo %s", repo.path)
        return repo

    def open(self) -> None:
        """Open (or create) the repo now, so a bad location is reported at job start."""
        self.aim_repo  # noqa: B018

    # -- runs ----------------------------------------------------------------------

    def _run(self, run_id: str) -> Any:
        run = self._runs.get(run_id)
        if run is None:
            raise KeyError(f"run {run_id} is not open in this process's Aim backend")
        return run

    def start_run(self, record: RunRecord) -> None:
        from aim import Run

        run = Run(
            repo=self.aim_repo,
            system_tracking_interval=self.system_tracking_interval,
            log_system_params=self.log_system_params,
            capture_terminal_logs=False,
        )
        try:
            hparams = to_aim(record.config)
            fields = {
                ID_FIELD: record.id,
                "sweep_id": record.sweep_id,
                "job_num": record.job_num,
                "sweep_dir": record.sweep_dir,
                "output_dir": record.output_dir,
                "overrides": to_aim(record.overrides),
                "choices": to_aim(record.choices),
                "env": to_aim(record.env),
                "git": to_aim(record.git),
                "config_yaml": record.config_yaml,
                STATUS_FIELD: "running",
                "started_at": record.started_at,
                "identity": getattr(record, "identity", None),
            }
            run["hparams"] = hparams
            for key, value in fields.items():
                run[key] = value
            _retry("Aim run metadata",
                   lambda: _props(run, lambda: self._set_props(run, record)),
                   _busy_errors())
        except BaseException:
            run.close()
            raise
        with self._lock:
            self._runs[record.id] = run
            self._hparams[record.id] = hparams
            self._tags[record.id] = {}
            self._artifacts[record.id] = {}
            self._track[record.id] = _tracker_for(run)
        if record.tags:
            self.set_tags(record.id, record.tags)

    @staticmethod
    def _set_props(run: Any, record: RunRecord) -> None:
        run.experiment = record.experiment
        run.name = record.name

    def log_metrics(self, run_id: str, points: List[Point]) -> None:
        track = self._track.get(run_id)
        if track is None:
            self._run(run_id)  # raises KeyError
            return
        contexts: Dict[str, Optional[Dict[str, Any]]] = {}
        values = []
        for name, step, value, wall, ctx in points:
            context = contexts.get(ctx)
            if context is None and ctx not in contexts:
                context = contexts[ctx] = to_aim(json.loads(ctx)) if ctx else None
            values.append((float(value), name, step, wall, context))
        track(values)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Merge dotted params into ``run["hparams"]`` at their nested place."""
        run = self._run(run_id)
        hparams = self._hparams[run_id]
        changed = set()
        for flat_key, value in params.items():
            segments = [_aim_key(s, {}) for s in split_key(flat_key)]
            node = hparams
            for seg in segments[:-1]:
                child = node.get(seg)
                if not isinstance(child, dict):
                    child = node[seg] = {}
                node = child
            node[segments[-1]] = to_aim(value)
            changed.add(segments[0])
        for top in changed:
            run["hparams", top] = hparams[top]

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Each tag becomes the Aim tag ``"key=value"``; a new value replaces the old
        tag. The mapping is also kept in ``run["align_track_tags"]``."""
        run = self._run(run_id)
        current = self._tags[run_id]

        def apply() -> None:
            names = set(run.tags)
            for key, value in tags.items():
                old = current.get(key)
                if old is not None and old != value and f"{key}={old}" in names:
                    run.remove_tag(f"{key}={old}")
                if f"{key}={value}" not in names:
                    run.add_tag(f"{key}={value}")

        _retry("Aim tags", lambda: _props(run, apply), _busy_errors())
        current.update({str(k): str(v) for k, v in tags.items()})
        run[TAGS_FIELD] = dict(current)

    def log_artifact(self, run_id: str, path: str, name: str) -> Dict[str, Any]:
        """Copy a file to the run's artifact store with Aim's ``run.log_artifact``."""
        run = self._run(run_id)
        if not hasattr(run, "log_artifact") or not hasattr(run, "set_artifacts_uri"):
            import aim

            raise NotImplementedError(
                f"aim {getattr(aim, '__version__', '?')} has no artifact support "
                "(it needs aim >= 3.19); artifacts are not stored in Aim")
        if self.artifacts_uri is None:
            raise NotImplementedError("no artifact location for this Aim repo; "
                                      "set tracker.output_uri")
        if run.artifacts_uri is None:
            run.set_artifacts_uri(self.artifacts_uri)
        sha, size = file_digest(path)
        run.log_artifact(path, name=name, block=True)
        info = {"name": name, "size": size, "sha256": sha,
                "uri": f"{run.artifacts_uri.rstrip('/')}/{name}"}
        stored = self._artifacts[run_id]
        stored[name] = {"size": size, "sha256": info["sha256"]}
        run[ARTIFACTS_FIELD] = dict(stored)
        return info

    def end_run(self, run_id: str, end: RunEnd) -> None:
        """Record the status (and error), close the run and add it to the index.

        A finished run reports a successful finish to Aim; any other status adds
        the Aim tag ``failed``, ``interrupted`` or ``crashed``, which the UI shows.
        """
        run = self._run(run_id)
        try:
            run[STATUS_FIELD] = end.status
            run["ended_at"] = end.ended_at
            run["dropped"] = end.dropped
            if end.error:
                run["error"] = to_aim(end.error)
            if end.return_value is not None:
                run["return_value"] = to_aim(end.return_value)
            if end.status == FINISHED:
                if hasattr(run, "report_successful_finish"):  # aim >= 3.17
                    run.report_successful_finish()
            elif end.status not in run.tags:
                _retry("Aim tags", lambda: _props(run, lambda: run.add_tag(end.status)),
                       _busy_errors())
        finally:
            self._close_run(run_id)

    def _close_run(self, run_id: str) -> None:
        with self._lock:
            run = self._runs.pop(run_id)
            for table in (self._hparams, self._tags, self._artifacts, self._track):
                table.pop(run_id, None)
        run_hash = run.hash
        run.close()
        _retry(f"Aim index of {self.location}", lambda: self._index(run_hash),
               _busy_errors())

    def _index(self, run_hash: str) -> None:
        """Merge one closed run into the repo's index, as ``aim up``'s indexer does."""
        repo = self.aim_repo
        index = repo._get_index_tree("meta", 10).view(())
        try:
            chunk = repo.request_tree("meta", run_hash, read_only=True,
                                      skip_read_optimization=True)
            chunk.subtree(("meta", "chunks", run_hash)).finalize(index=index)
        finally:
            del index
            if not self.remote:
                _release_index(repo)
        logger.debug("indexed Aim run %s", run_hash)

    def close(self) -> None:
        """Close runs left open (their status stays ``running``) and the repo."""
        for run_id in list(self._runs):
            try:
                self._close_run(run_id)
            except Exception:  # noqa: BLE001 - closing must not raise at exit
                logger.warning("could not close Aim run of %s", run_id, exc_info=True)

    def describe_run(self, run_id: str) -> Optional[str]:
        run = self._runs.get(run_id)
        where = self.repo if self.remote else f"aim up --repo {self.repo}"
        return f"{where} (run {run.hash})" if run is not None else where


def _tracker_for(run: Any) -> Callable[[List[Tuple[float, str, int, float, Any]]], None]:
    """A function that tracks a batch of ``(value, name, step, wall, context)``.

    ``run.track`` stamps each value with the time of the call, while the background
    writer calls it up to a flush interval after ``log()``; and it updates the
    sequence's summary (last value, last step, min, max) once per value. Where Aim's
    tracker has the known shape, the batch goes through its own steps instead: each
    sequence's first value of the batch as ``run.track`` stores it, the rest as
    values only, and the summary once per sequence per batch. A remote repo gets the
    values in instruction batches of :data:`REMOTE_BATCH`.
    """
    tracker = getattr(run, "_tracker", None)
    if tracker is not None and hasattr(run.repo, "atomic_track") and all(
            hasattr(tracker, name) and (params is None
                                        or _params_of(getattr(tracker, name)) == params)
            for name, params in _TRACKER_STEPS.items()):
        return _BatchTracker(run, tracker)

    def track(values: List[Tuple[float, str, int, float, Any]]) -> None:
        for value, name, step, _wall, context in values:
            run.track(value, name=name, step=step, context=context)
    return track


#: Values per instruction batch sent to an Aim server.
REMOTE_BATCH = 25

#: What :class:`_BatchTracker` uses of ``aim.sdk.tracker.RunTracker`` (aim 3.17-3.29),
#: with the parameters of each method it calls.
_TRACKER_STEPS: Dict[str, Optional[List[str]]] = {
    "hash": None, "sequence_infos": None, "meta_run_tree": None,
    "_init_sequence_info": ["ctx_id", "name", "val"],
    "_update_context_data": ["ctx"],
    "_update_sequence_info": ["ctx_id", "name", "val", "step"],
    "_add_value": ["seq_info", "val", "step", "epoch", "track_time"],
}


def _params_of(fn: Any) -> List[str]:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


class _BatchTracker:
    """Tracks a batch of values the way ``run.track`` would, value by value, but
    with one summary update per sequence."""

    def __init__(self, run: Any, tracker: Any):
        from aim.storage.context import Context

        self._context_of = Context
        self._run = run
        self._tracker = tracker
        # A remote repo gets the values as instruction batches of this many (Aim
        # sends one per run.track call). The server's time for one batch grows
        # faster than its size: 2,000 values took 27 s as one batch, 1.7 s in
        # batches of 20 and 2.2 s one by one (aim 3.29, measured on 127.0.0.1).
        self.chunk = REMOTE_BATCH if getattr(run.repo, "is_remote_repo", False) \
            else sys.maxsize

    def __call__(self, values: List[Tuple[float, str, int, float, Any]]) -> None:
        tracker = self._tracker
        by_sequence: Dict[Tuple[int, str], List[Tuple[float, int, float]]] = {}
        contexts: Dict[int, Any] = {}  # by id(): log_metrics passes one dict per context
        for value, name, step, wall, context in values:
            key = id(context)
            if key not in contexts:
                contexts[key] = self._context_of(context or {})
            by_sequence.setdefault((key, name), []).append((value, step, wall))
        atomic, size = self._run.repo.atomic_track, self.chunk
        for (key, name), seq_values in by_sequence.items():
            ctx = contexts[key]
            seq = tracker.sequence_infos[ctx.idx, name]
            for start in range(0, len(seq_values), size):
                # Aim's own atomic_track must not nest (an inner one would drop what
                # the outer one holds), so RunTracker._track's steps are used here
                with atomic(tracker.hash):
                    rest = iter(seq_values[start:start + size])
                    for value, step, wall in rest:
                        # as RunTracker._track: the sequence and its context made
                        # known, the value's type checked, the summary updated, the
                        # value stored
                        if not seq.initialized:
                            tracker._init_sequence_info(ctx.idx, name, value)
                        tracker._update_context_data(ctx)
                        tracker._update_sequence_info(ctx.idx, name, value, step)
                        tracker._add_value(seq, value, step, None, wall)
                        # a number sequence past its first step: the rest in bulk
                        # (before, Aim keeps rewriting the sequence's first value)
                        if seq.version == 2 and seq.count > 0:
                            break
                    self._rest(seq, ctx.idx, name, list(rest))

    def _rest(self, seq: Any, ctx_id: int, name: str,
              values: List[Tuple[float, int, float]]) -> None:
        """Values of a sequence that already holds one: each stored, then the
        summary that ``_update_sequence_info`` would leave after the last of them."""
        if not values:
            return
        add_value = self._tracker._add_value
        count, low, high = seq.count, seq.min, seq.max
        last = None
        for value, step, wall in values:
            add_value(seq, value, step, None, wall)
            if step >= count:
                count, last = step + 1, (value, step)
            if value > high:
                high = value
            if value < low:
                low = value
        meta = self._tracker.meta_run_tree
        if last is not None:
            meta["traces", ctx_id, name, "last"] = last[0]
            meta["traces", ctx_id, name, "last_step"] = last[1]
            seq.count = count
        if high != seq.max:
            meta["traces", ctx_id, name, "max"] = seq.max = high
        if low != seq.min:
            meta["traces", ctx_id, name, "min"] = seq.min = low


def _release_index(repo: Any) -> None:
    """Close this process's writable index handle so other writers can open it."""
    for config, container in list(repo.container_pool.items()):
        if getattr(config, "name", "") == "meta/index":
            repo.container_pool.pop(config, None)
            container.close()
