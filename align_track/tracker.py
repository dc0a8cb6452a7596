"""Run handles, the background writer, and the per-process tracker registry."""
from __future__ import annotations

import atexit
import collections
import operator
import logging
import os
import threading
import time
import traceback as tb
import uuid
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Set, Tuple

from align_track import _context
from align_track.backends.base import Backend
from align_track.env import GROUP_VAR
from align_track.redact import Redactor
from align_track.records import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    Point,
    RunEnd,
    RunRecord,
)
from align_track.values import REFUSED, context_key, to_float, to_step

logger = logging.getLogger(__name__)

_SERIES_KEY = operator.itemgetter(0, 4)  # (name, context) of a point
_NAME, _STEP, _CTX = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(4)
_STR_ONLY = {str}

#: Points a run may hold in memory before the logging thread writes them itself.
MAX_PENDING = 100_000
INT64 = _context.INT64
#: Points handed to a backend per call.
BATCH = 20_000
HEARTBEAT_EVERY = 10.0
#: How often log() looks at the buffer's size: a loop adds at most about a
#: million points a second, so the buffer stays within MAX_PENDING + a few thousand.
CHECK_EVERY = 0.005
#: Bad metric names warned about one by one; past this many warnings, one per type.
WARNED_NAMES = 1_000


def new_run_id() -> str:
    return uuid.uuid4().hex


class Run:
    """An open run. User code logs to it; it is safe to share between threads.

    Made by :meth:`Tracker.start_run`; inside a Hydra job or a :func:`track_run`
    block, :func:`align_track.log` reaches it without a reference.
    """

    def __init__(self, record: RunRecord, tracker: "Tracker", strict: bool = False,
                 redactor: Optional[Redactor] = None):
        self.record = record
        self.redactor = redactor or Redactor()
        self.id = record.id
        self.strict = strict
        self.dropped = 0
        self.status = RUNNING
        self._tracker = tracker
        self._points: Deque[Point] = collections.deque()
        self._append = self._points.append
        self._retry: List[Point] = []
        self._next_step: Dict[Tuple[str, str], int] = {}
        self._series_masks: Dict[str, str] = {}  # name or context -> as stored
        self._auto_steps = False  # set once log() got a point without a step
        self._warned: Set[Any] = set()
        self._io_lock = threading.RLock()
        self._closed = False
        self._check_at = 0.0  # when log() next looks at the buffer's size
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, experiment={self.record.experiment!r}, status={self.status!r})"

    @property
    def backend(self) -> Backend:
        return self._tracker.backend

    # -- logging -------------------------------------------------------------------

    def log(
        self,
        metrics: Mapping[str, Any],
        step: Any = None,
        *,
        context: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Buffer metric points; the writer stores them within about a second.

        Args:
            metrics: metric name -> number.
            step: an int (or an integral float); None means "the next step for each
                metric".
            context: optional mapping, such as ``{"subset": "val"}``, stored with
                each point.

        Raises:
            TypeError: ``metrics`` is not a mapping. A name that is not a non-empty
                string, or a value that is not a number, is skipped with one warning
                (or raises with ``tracker.strict=true``).
        """
        if self._closed:
            self._warn_once("closed", "run %s is closed; points logged after its end "
                            "are dropped", self.id)
            return
        if step is None:
            self._auto_steps = True
        elif type(step) is not int:
            given, step = step, to_step(step)
            if step is REFUSED:
                self.dropped += len(metrics)
                message = f"step {given!r} ({type(given).__name__}) is not an integer"
                fix = "pass an int step, or none for the next step of each metric"
                if self.strict:
                    raise TypeError(f"{message} (tracker.strict=true)\n  {fix}")
                self._warn_once(("step", type(given).__name__), "%s",
                                f"{message}; the points of this call are skipped\n  {fix}")
                return
        ctx = context_key(context) if context else ""
        now = time.time()
        append = self._append
        try:
            items = metrics.items()
        except AttributeError:
            raise TypeError(
                "align_track.log() takes a mapping of metric name -> number, such as "
                f"{{'loss': 0.3}}; got {type(metrics).__name__}"
            ) from None
        for name, value in items:
            tv = type(value)
            if (tv is float or tv is int and -INT64 <= value < INT64) \
                    and type(name) is str and name:
                append((name, step, value, now, ctx))
            else:
                self._log_slow(name, value, step, now, ctx)
        if now > self._check_at:
            self._backlog(now)

    def _backlog(self, now: float) -> None:
        """Called by log() every CHECK_EVERY seconds at most: a full batch waits, so
        wake the writer; past MAX_PENDING, write here (back-pressure)."""
        self._check_at = now + CHECK_EVERY
        pending = len(self._points)
        if pending <= BATCH:
            return
        wake = self._tracker._wake
        if not wake.is_set():
            wake.set()  # the writer need not sleep out its second
        if pending > MAX_PENDING:
            # back-pressure: the producer pays, memory stays bounded. Whole batches
            # only: the rest waits for more points, so a fast loop keeps handing
            # over full batches (and the SQLite store its writer process).
            self._hand_over_whole()

    def _log_slow(self, name: Any, value: Any, step: Any, now: float, ctx: str) -> None:
        if not isinstance(name, str) or not name:
            self.dropped += 1
            self._bad_name(name)
            return
        number = to_float(value)
        if number is REFUSED:
            if isinstance(value, int) and not isinstance(value, bool):
                self._refuse(name, "int", "log a smaller number, or put it in params",
                             why="the int is beyond the range of a float")
                return
            self._refuse(name, type(value).__name__,
                         "log numbers (int, float, a one-element array or tensor); "
                         "put text in tags or params")
            return
        self._append((name, step, number, now, ctx))

    def _bad_name(self, name: Any, may_raise: bool = True) -> None:
        kind = type(name).__name__
        try:
            shown = repr(name)[:200]
        except Exception:
            shown = f"<{kind} object>"
        # a name may carry a secret (a key the config read, say)
        shown = self.redactor.text(shown)
        message = f"metric names must be non-empty strings; got {shown} ({kind})"
        if self.strict and may_raise:
            raise TypeError(f"{message} (tracker.strict=true)")
        # one warning per bad name, as for values; per type past WARNED_NAMES
        self._warn_once(("name", kind, shown) if len(self._warned) < WARNED_NAMES
                        else ("name", kind),
                        "%s; the value is skipped\n  name each metric with a "
                        "string, as in {'loss': 0.3}", message)

    def _refuse(self, name: str, what: str, fix: str, why: str = "") -> None:
        self.dropped += 1
        message = f"metric {name!r}: " + (why or f"value of type {what} is not a number")
        if self.strict:
            raise TypeError(f"{message} (tracker.strict=true)\n  {fix}")
        message += f"; skipped\n  {fix}"
        self._warn_once(("refused", name), "%s", message)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Add flat params (dotted keys); a key already set takes the new value."""
        from align_track.flatten import flatten

        text = self.redactor.text
        flat = self.redactor.flat({text(k): v for k, v in flatten(params).items()})
        for key in flat:
            if key in self.record.params and self.record.params[key] != flat[key]:
                logger.warning("param %r was %r and is now %r (the captured config "
                               "keeps the old value)", key, self.record.params[key], flat[key])
        self.record.params.update(flat)
        self._call("log_params", flat)

    def set_tags(self, tags: Optional[Mapping[str, Any]] = None, **more: Any) -> None:
        """Set tags, e.g. ``set_tags(model="bert")``. Values are stored as text."""
        merged = {**(tags or {}), **more}
        text = self.redactor.text
        clean = self.redactor.flat({text(str(k)): str(v) for k, v in merged.items()})
        self.record.tags.update(clean)
        self._call("set_tags", clean)

    def log_artifact(self, path: "os.PathLike[str] | str", name: Optional[str] = None) -> List[Dict[str, Any]]:
        """Store a file, or every file under a folder, with this run.

        Args:
            path: a file or a folder; relative paths are taken from the current
                directory.
            name: the name to store it under (default: the file or folder name).

        Returns:
            One mapping per stored file, with ``name``, ``size`` and ``sha256``.
        """
        src = Path(path)
        if self._closed:
            self._warn_once("closed-artifact", "run %s is closed; artifact %s not stored",
                            self.id, src)
            return []
        if not src.exists():
            logger.warning("artifact %s does not exist; nothing stored", src)
            return []
        base = self.redactor.text(artifact_name(name or src.resolve().name, src))
        if src.is_file():
            files = [(src, base)]
        else:
            root = src.resolve()
            files = []
            for p in sorted(src.rglob("*")):
                if not p.is_file():
                    continue
                if p.is_symlink() and not _inside(p.resolve(), root):
                    logger.warning("artifact %s links outside %s; not stored", p, src)
                    continue
                inner = self.redactor.text(p.relative_to(src).as_posix())
                files.append((p, f"{base}/{inner}"))
        return self.store_files([(str(file), file_name) for file, file_name in files])

    def store_files(self, files: List[Tuple[str, str]]) -> List[Dict[str, Any]]:
        """Store ``(path, name)`` pairs as artifacts, in one backend call where the
        backend stores a batch all at once or not at all; else, or where that
        fails, file by file, so one unreadable file costs only itself. Names are
        used as given."""
        if self._closed or not files:
            return []
        if len(files) > 1:
            with self._io_lock:
                try:
                    return list(self.backend.log_artifacts(self.id, files))
                except NotImplementedError:
                    pass
                except Exception as exc:  # nothing stored: retried one by one below
                    logger.debug("run %s: batch of %d artifacts failed (%s); storing "
                                 "them one by one", self.id, len(files), exc)
        stored = []
        for path, name in files:
            info = self._call("log_artifact", path, name)
            if info:
                stored.append(info)
        return stored

    def _call(self, method: str, *args: Any) -> Any:
        with self._io_lock:
            try:
                return getattr(self.backend, method)(self.id, *args)
            except NotImplementedError as exc:
                self._warn_once(("unsupported", method), "%s", exc)
            except Exception as exc:
                logger.warning("%s backend failed in %s for run %s: %s",
                               self.backend.name, method, self.id, exc)
        return None

    # -- writing -------------------------------------------------------------------

    def flush(self, wait: bool = True) -> None:
        """Write every buffered point now.

        Args:
            wait: return only once the backend has stored them (a backend may hand
                them to a writer process); the writer thread does not wait.
        """
        with self._io_lock:
            self._hand_over()
            if wait and not self._retry:
                try:
                    self.backend.sync()
                except Exception as exc:
                    self._warn_once("write", "%s backend could not store the points of "
                                    "run %s: %s", self.backend.name, self.id, exc)

    def _hand_over_whole(self) -> None:
        with self._io_lock:
            self._hand_over(whole=True)

    def _hand_over(self, whole: bool = False) -> None:
        """Pass the buffered points to the backend, a batch at a time (``whole``:
        full batches only)."""
        while self._points or self._retry:
            if whole and len(self._points) + len(self._retry) < BATCH:
                return
            batch = self._retry
            self._retry = []
            popleft = self._points.popleft
            fresh = [popleft() for _ in range(min(len(self._points), BATCH - len(batch)))]
            fresh, names = self._well_named(fresh)
            fresh = self._steps_in_range(self._number_steps(fresh))
            batch.extend(self._masked_series(fresh, names))
            try:
                self.backend.log_metrics(self.id, batch)
            except Exception as exc:
                self._retry = batch
                self._warn_once("write", "%s backend could not store %d points of "
                                "run %s: %s (kept in memory, retried)",
                                self.backend.name, len(batch), self.id, exc)
                return

    def _well_named(self, batch: List[Point]) -> Tuple[List[Point], Set[str]]:
        """The batch less its points whose name is not a non-empty string, and the
        set of its names. A name of a str subclass (numpy.str_, say) becomes a plain
        str, which every store and the writer process take. log() leaves this check
        to here: one pass over the names' types at C speed, and a point-by-point
        pass only when one is off."""
        if set(map(type, map(_NAME, batch))) <= _STR_ONLY:
            names = set(map(_NAME, batch))
            if "" not in names:
                return batch, names
        kept = []
        for point in batch:
            name = point[0]
            if name.__class__ is not str and isinstance(name, str) and name:
                point = (str.__str__(name),) + point[1:]
            elif name.__class__ is not str or not name:
                # (a strict run's log() checks names itself, and raises)
                self._bad_name(name, may_raise=False)
                continue
            kept.append(point)
        self.dropped += len(batch) - len(kept)
        return kept, set(map(_NAME, kept))

    def _masked_series(self, batch: List[Point], names: Set[str]) -> List[Point]:
        """The batch with secrets masked in metric names and contexts (a name built
        from a value the config read, say). Each distinct name and context is checked
        once per run (``names``: the batch's names, or more); a batch is copied only
        when one of them changes."""
        if not batch or not self.redactor.enabled:
            return batch
        seen = self._series_masks
        texts = names
        texts.update(map(_CTX, batch))
        for text in texts:
            if text not in seen:
                seen[text] = self.redactor.text(text)
        if all(seen[t] == t for t in texts):
            return batch
        return [(seen[name], step, value, ts, seen[ctx])
                for name, step, value, ts, ctx in batch]

    def _steps_in_range(self, batch: List[Point]) -> List[Point]:
        """Drop (and count) points whose step no store can hold: one such point
        would otherwise fail its whole batch at every retry."""
        if not batch or -INT64 <= min(map(_STEP, batch)) and max(map(_STEP, batch)) < INT64:
            return batch
        kept = [p for p in batch if -INT64 <= p[1] < INT64]
        self.dropped += len(batch) - len(kept)
        bad = next(p for p in batch if not -INT64 <= p[1] < INT64)
        self._warn_once("step-range", "metric %r: step %d is outside the 64-bit range "
                        "a store keeps; the points with such steps are skipped",
                        bad[0], bad[1])
        return kept

    def _number_steps(self, batch: List[Point]) -> List[Point]:
        """Give each point without a step the next step of its metric."""
        nxt = self._next_step
        if not self._auto_steps:
            # every step is explicit: only remember where each metric is. dict()
            # keeps the last point of each metric, built at C speed.
            if any(map(_CTX, batch)):
                last = dict(zip(map(_SERIES_KEY, batch), map(_STEP, batch)))
                nxt.update({key: step + 1 for key, step in last.items()})
            else:
                last = dict(zip(map(_NAME, batch), map(_STEP, batch)))
                nxt.update({(name, ""): step + 1 for name, step in last.items()})
            return batch
        out = []
        for name, step, value, ts, ctx in batch:
            key = (name, ctx)
            if step is None:
                step = nxt.get(key, 0)
            nxt[key] = step + 1
            out.append((name, step, value, ts, ctx))
        return out

    def end(
        self,
        status: str = FINISHED,
        error: Optional[Dict[str, str]] = None,
        return_value: Any = None,
    ) -> None:
        """Flush and close the run. Later calls do nothing."""
        with self._io_lock:
            if self._closed:
                return
            # log() stops reaching this run before its last flush, not after
            _context.forget(self)
            self._closed = True
            self.flush()
            if self._retry:
                logger.error("%d points of run %s could not be stored", len(self._retry), self.id)
            self.status = status
            end = RunEnd(status=status, ended_at=time.time(), error=self._masked_error(error),
                         return_value=self._masked_value(return_value),
                         dropped=self.dropped)
            try:
                self.backend.end_run(self.id, end)
            except Exception:
                logger.error("could not record the end of run %s (%s)", self.id, status,
                             exc_info=True)
        self._tracker._forget(self)
        logger.info("run %s %s", self.id, status)

    def _masked_error(self, error: Optional[Dict[str, str]]) -> Optional[Dict[str, str]]:
        """The error with secrets masked: a message or a traceback may quote a key
        the job read from its config or the environment."""
        if not error:
            return error
        return {k: self.redactor.text(v) if isinstance(v, str) else v
                for k, v in error.items()}

    def _masked_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redactor.text(value)
        return self.redactor.tree(value) if isinstance(value, (dict, list)) else value

    def fail(self, exc: BaseException) -> None:
        self.end(FAILED, error=error_info(exc))

    def _warn_once(self, key: Any, msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(msg, *args)

    # -- context manager -----------------------------------------------------------

    def __enter__(self) -> "Run":
        self._token = _context.bind(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb_: Any) -> None:
        _context.unbind(self._token)
        if exc is None:
            self.end(FINISHED)
        elif isinstance(exc, KeyboardInterrupt):
            self.end(INTERRUPTED, error=error_info(exc))
        else:
            self.end(FAILED, error=error_info(exc))


def artifact_name(name: str, source: Any = None) -> str:
    """A relative POSIX name with no ``..``, empty or absolute parts."""
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    clean = "/".join(parts) or (Path(str(source)).name if source else "") or "artifact"
    if clean != name:
        logger.warning("artifact name %r stored as %r (names stay inside the run)", name, clean)
    return clean


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def error_info(exc: BaseException) -> Dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(tb.format_exception(type(exc), exc, exc.__traceback__)),
    }


class Tracker:
    """One backend in this process, with its writer thread and open runs."""

    def __init__(self, backend: Backend, flush_interval: float = 1.0):
        self.backend = backend
        self.flush_interval = flush_interval
        self._runs: Dict[str, Run] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last_heartbeat = 0.0

    def start_run(
        self,
        experiment: str = "default",
        name: Optional[str] = None,
        config: Optional[Mapping[str, Any]] = None,
        tags: Optional[Mapping[str, Any]] = None,
        record: Optional[RunRecord] = None,
        strict: bool = False,
        redactor: Optional[Redactor] = None,
        group: Optional[str] = None,
    ) -> Run:
        """Open a run and return its handle. Use it as a context manager to bind it
        for :func:`align_track.log` and close it with the right status."""
        if record is None:
            from align_track.capture import dump_yaml
            from align_track.flatten import flatten
            from align_track.facts import environment

            redactor = redactor or Redactor()
            plain = redactor.tree(_plain_config(config))
            env = environment(self.backend.location)
            env["argv"] = redactor.overrides(env["argv"])
            record = RunRecord(
                id=new_run_id(), experiment=experiment, name=name or experiment,
                started_at=time.time(), config=plain, params=flatten(plain),
                config_yaml=dump_yaml(plain),
                tags=redactor.flat({str(k): str(v) for k, v in (tags or {}).items()}),
                env=env, sweep_id=group,
            )
            if group:
                from align_track.records import SweepRecord

                self.backend.start_sweep(SweepRecord(id=group, experiment=experiment,
                                                     started_at=record.started_at))
        resumed = record.identity and self.backend.find_resumable(record.identity)
        if resumed:
            record.id = resumed
            self.backend.resume_run(record)
            logger.info("run %s resumed (job %s requeued)", resumed, record.identity)
        else:
            self.backend.start_run(record)
        run = Run(record, self, strict=strict, redactor=redactor)
        with self._lock:
            self._runs[run.id] = run
        self._ensure_thread()
        logger.info("run %s opened in %s", run.id, self.backend.location)
        return run

    def open_runs(self) -> List[Run]:
        with self._lock:
            return list(self._runs.values())

    def _forget(self, run: Run) -> None:
        with self._lock:
            self._runs.pop(run.id, None)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._loop, name=f"align-track-writer-{self.backend.name}", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        last_all = time.monotonic()
        while True:
            woken = self._wake.wait(self.flush_interval)
            self._wake.clear()
            runs = self.open_runs()
            # woken by a full batch: hand over full batches, the rest waits for more;
            # at least once a flush interval, everything
            every = not woken or time.monotonic() - last_all >= self.flush_interval
            if every:
                last_all = time.monotonic()
            for run in runs:
                run._check_at = 0.0  # in case the wall clock went back
                try:
                    if every:
                        run.flush(wait=False)
                    else:
                        run._hand_over_whole()
                except Exception:
                    logger.debug("flush of run %s failed", run.id, exc_info=True)
            now = time.time()
            if runs and now - self._last_heartbeat >= HEARTBEAT_EVERY:
                self._last_heartbeat = now
                try:
                    self.backend.heartbeat([r.id for r in runs], now)
                except Exception:
                    logger.debug("heartbeat failed", exc_info=True)

    def close_all(self, status: str, error: Optional[Dict[str, str]] = None) -> None:
        for run in self.open_runs():
            run.end(status, error=error)

    def close(self) -> None:
        self.backend.close()


def _plain_config(config: Any) -> Dict[str, Any]:
    if config is None:
        return {}
    try:
        from omegaconf import DictConfig

        if isinstance(config, DictConfig):
            from align_track.capture import resolve_leafwise

            return resolve_leafwise(config, skip=())[0]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    return dict(config)


# -- the per-process registry ----------------------------------------------------------

_trackers: Dict[Tuple[str, str], Tracker] = {}
_registry_lock = threading.Lock()


def get_tracker(key: Tuple[str, str], factory: Callable[[], Tracker]) -> Tracker:
    with _registry_lock:
        tracker = _trackers.get(key)
        if tracker is None:
            tracker = _trackers[key] = factory()
        return tracker


def all_trackers() -> List[Tracker]:
    with _registry_lock:
        return list(_trackers.values())


def _after_fork_in_child() -> None:
    # Connections and the writer thread do not survive fork: forget them here;
    # a child that logs gets its own.
    global _registry_lock
    _registry_lock = threading.Lock()
    _trackers.clear()
    _context.after_fork()


def _close_backends_at_exit() -> None:
    for tracker in all_trackers():
        try:
            tracker.close()
        except Exception:
            logger.debug("closing %s failed", tracker.backend.location, exc_info=True)


os.register_at_fork(after_in_child=_after_fork_in_child)
# Registered before any run opens, so it runs after _lifecycle's handler closes runs.
atexit.register(_close_backends_at_exit)


class SQLiteTracker(Tracker):
    """A tracker over one SQLite file, for use without Hydra.

    >>> with SQLiteTracker("experiments.db").start_run("my-exp", config=cfg) as run:
    ...     run.log({"loss": 0.1}, step=0)
    """

    def __init__(self, db: Optional[str] = None, flush_interval: float = 1.0):
        from align_track.backends.sqlite import SQLiteBackend
        from align_track.env import anchor, default_db

        path = anchor(db, os.getcwd()) if db else default_db()
        super().__init__(SQLiteBackend(path), flush_interval=flush_interval)
        self.db = path


def track_run(
    experiment: str = "default",
    config: Any = None,
    *,
    name: Optional[str] = None,
    tags: Optional[Mapping[str, Any]] = None,
    backend: str = "sqlite",
    **settings: Any,
) -> Run:
    """Open a run for code that does not use Hydra; use it in a ``with`` block.

    Args:
        experiment: experiment name.
        config: a mapping or DictConfig, stored nested and as flat params.
        name: run name (default: the experiment name).
        tags: tags to set.
        backend: ``sqlite`` (default), ``mlflow``, ``aim`` or ``clearml``.
        **settings: other ``tracker`` settings, e.g. ``db="runs.db"``.

    Inside the block :func:`align_track.log` reaches this run; an exception marks
    it failed (interrupted for Ctrl-C) and propagates.
    """
    from align_track import backends
    from align_track.settings import parse_settings

    parsed = parse_settings({"backend": backend, **settings})
    key, factory = backends.build(parsed, os.getcwd())

    def make() -> Tracker:
        b = factory()
        b.open()
        return Tracker(b, flush_interval=parsed.flush_interval)

    tracker = get_tracker(key, make)
    from align_track import _lifecycle

    _lifecycle.install()
    return tracker.start_run(experiment, name=name, config=config,
                             tags={**parsed.tags, **(tags or {})}, strict=parsed.strict,
                             redactor=Redactor.from_setting(parsed.redact),
                             group=parsed.group or os.environ.get(GROUP_VAR) or None)
