"""Which run ``align_track.log()`` reaches from the calling thread, and log() itself:
its common call reads the one open run from this module's globals."""
from __future__ import annotations

import _thread
import os
from _collections_abc import Mapping  # loaded at interpreter start; typing is not
from time import time as _now

# `import align_track` must stay cheap (no typing, logging or threading modules):
# the C-level _thread gives the same thread-local storage and locks.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional

    from align_track.tracker import Run

#: Steps, and int values kept as ints, lie in [-INT64, INT64) (SQLite's INTEGER);
#: log() hands larger ints to the slow path, which stores them as floats.
INT64 = 2 ** 63

_local = _thread._local()
# Runs open in this process, in order of opening. A thread with no run of its own
# (one the job started) logs to the only open run.
_open: Dict[str, "Run"] = {}
_lock = _thread.allocate_lock()
_warned: set = set()
_forked_from: Optional[int] = None
_ended = False  # a run of this process has ended: a late log() comes from its threads
_disabled: Optional[str] = None  # why this job runs untracked (its backend did not open)
# The one open run, while exactly one is open and it is not strict: then every
# thread logs to it, and log() reaches it without a thread-local lookup and leaves
# the check of metric names to its writer (a strict run raises in the caller).
_only: Optional["Run"] = None


def _refresh_only() -> None:
    global _only
    only = next(iter(_open.values())) if len(_open) == 1 else None
    _only = only if only is not None and not only.strict else None


def log(
    metrics: Mapping[str, Any],
    step: Any = None,
    *,
    context: Optional[Mapping[str, Any]] = None,
) -> None:
    """Log metric values to the current run.

    Args:
        metrics: metric name -> number (int, float, bool, Decimal, or a one-element
            numpy/torch/jax scalar).
        step: an integer step; omitted means the next step for each metric.
        context: optional mapping stored with the points, e.g. ``{"subset": "val"}``.

    Raises:
        TypeError: ``metrics`` is not a mapping. A value that is not a number, or a
            name that is not a non-empty string, is skipped with one warning per
            metric name (or raises with ``tracker.strict=true``). The warning for a
            bad name comes from the run's writer, within about a second.

    With no open run this warns once and does nothing.
    """
    run = _only
    if run is not None and step.__class__ is int and context is None \
            and metrics.__class__ is dict:
        # The common call, kept short: it runs for every point a job logs. Values
        # are read now: an array or tensor the caller changes later must not change
        # what was logged. Names are checked by the run's writer, once per name.
        now = _now()
        append = run._append
        for name in metrics:  # cheaper than items() for the one or few names of a call
            value = metrics[name]
            if value.__class__ is float or value.__class__ is int \
                    and -INT64 <= value < INT64:
                append((name, step, value, now, ""))
            else:
                run._log_slow(name, value, step, now, "")
        if now > run._check_at:
            run._backlog(now)
        return
    run = getattr(_local, "run", None)
    if run is None or run._closed:
        run = current()
        if run is None:
            # the same mistakes raise with or without a run, so a script fails the
            # same way when tracking is off
            if not isinstance(metrics, Mapping):
                raise TypeError("align_track.log() takes a mapping of metric name -> "
                                f"number; got {type(metrics).__name__}")
            if context and not isinstance(context, Mapping):
                raise TypeError("context must be a mapping such as {'subset': 'val'}, "
                                f"got {type(context).__name__}")
            return
    run.log(metrics, step, context=context)


log.__module__ = "align_track"


def bind(run: "Run") -> Any:
    """Make ``run`` the current run of this thread; returns a token for unbind."""
    previous = getattr(_local, "run", None)
    _local.run = run
    if not run._closed:  # an ended run is not opened again: log() says it ended
        with _lock:
            _open[run.id] = run
            _refresh_only()
    return previous


def unbind(token: Any) -> None:
    _local.run = token


def forget(run: "Run") -> None:
    global _ended
    with _lock:
        _open.pop(run.id, None)
        _refresh_only()
    _ended = True
    if getattr(_local, "run", None) is run:
        _local.run = None


def current() -> Optional["Run"]:
    run = getattr(_local, "run", None)
    if run is not None and not run._closed:
        return run
    with _lock:
        if len(_open) == 1:
            return next(iter(_open.values()))
        count = len(_open)
    if count > 1:
        warn_once("ambiguous", "%d runs are open in this process and this thread has "
                  "none bound; the points are dropped\n  in the thread, use "
                  "`with align_track.bind(run):` with the run from "
                  "align_track.current_run() of the job's thread", count)
    elif _disabled == "tracker.enabled=false":
        pass  # switched off on purpose: nothing to say
    elif _disabled is not None:
        warn_once("disabled", "align_track.log(): tracking is off for this job (%s); "
                  "nothing is recorded", _disabled)
    elif _forked_from is not None:
        warn_once("forked", "align_track.log() was called in a process forked from "
                  "pid %d; points logged in a forked child are not recorded\n  "
                  "log from the parent process (return values from the workers)",
                  _forked_from)
    elif _ended:
        warn_once("ended", "align_track.log() was called after the run ended; the points "
                  "are dropped\n  join the threads that log before the job returns")
    else:
        warn_once("no-run", "align_track.log() was called with no open run; nothing "
                  "is recorded\n  add +tracker=sqlite to the command line, or log inside "
                  "`with align_track.track_run(...)`")
    return None


def disable(reason: Optional[str]) -> None:
    """Say why log() records nothing in this job (None: the next job may track)."""
    global _disabled
    _disabled = reason
    _warned.discard("disabled")


def open_runs() -> Dict[str, "Run"]:
    with _lock:
        return dict(_open)


def warn_once(key: str, msg: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        import logging

        logging.getLogger(__name__).warning(msg, *args)


def after_fork() -> None:
    global _lock, _forked_from, _local, _only
    _lock = _thread.allocate_lock()
    if _open:
        _forked_from = os.getppid()
    _open.clear()
    _only = None
    _local = _thread._local()
    _warned.discard("forked")
