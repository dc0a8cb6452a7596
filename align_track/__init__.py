"""align-track: experiment tracking for Hydra apps, switched on by configuration.

Log from anywhere inside a tracked job::

    import align_track
    align_track.log({"loss": 0.3}, step=epoch)
"""
from __future__ import annotations

from _collections_abc import Mapping  # loaded at interpreter start; typing is not
from time import time as _now

from align_track import _context

__version__ = "0.1.0"

__all__ = [
    "log",
    "log_artifact",
    "log_params",
    "set_tags",
    "current_run",
    "bind",
    "track_run",
    "SQLiteTracker",
    "TrackerCallback",
    "__version__",
]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

    from align_track.callback import TrackerCallback
    from align_track.tracker import Run, SQLiteTracker, track_run


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
            metric name (or raises with ``tracker.strict=true``).

    With no open run this warns once and does nothing.
    """
    run = _context._only
    if run is not None and step.__class__ is int and context is None \
            and metrics.__class__ is dict:
        # The common call, kept short: it runs for every point a job logs. Values
        # are read now: an array or tensor the caller changes later must not change
        # what was logged.
        now = _now()
        append = run._append
        for name in metrics:  # cheaper than items() for the one or few names of a call
            value = metrics[name]
            if (value.__class__ is float or value.__class__ is int
                    and -_context.INT64 <= value < _context.INT64) \
                    and name.__class__ is str and name:
                append((name, step, value, now, ""))
            else:
                run._log_slow(name, value, step, now, "")
        if now > run._check_at:
            run._backlog(now)
        return
    run = getattr(_context._local, "run", None)
    if run is None or run._closed:
        run = _context.current()
        if run is None:
            if not isinstance(metrics, Mapping):
                raise TypeError("align_track.log() takes a mapping of metric name -> "
                                f"number; got {type(metrics).__name__}")
            return
    run.log(metrics, step, context=context)


def log_artifact(path: Any, name: Optional[str] = None) -> List[Dict[str, Any]]:
    """Store a file or a folder with the current run; see :meth:`Run.log_artifact`."""
    run = _context.current()
    return run.log_artifact(path, name) if run is not None else []


def log_params(params: Mapping[str, Any]) -> None:
    """Add params (nested or dotted keys) to the current run."""
    run = _context.current()
    if run is not None:
        run.log_params(params)


def set_tags(tags: Optional[Mapping[str, Any]] = None, **more: Any) -> None:
    """Set tags on the current run: ``set_tags(model="bert")``."""
    run = _context.current()
    if run is not None:
        run.set_tags(tags, **more)


def current_run() -> "Optional[Run]":
    """The run this thread logs to, or None."""
    return _context.current()


class bind:
    """``with align_track.bind(run):`` makes ``run`` current in this thread."""

    def __init__(self, run: "Run") -> None:
        self.run = run

    def __enter__(self) -> "Run":
        self._token = _context.bind(self.run)
        return self.run

    def __exit__(self, *exc: Any) -> None:
        _context.unbind(self._token)


def __getattr__(name: str) -> Any:
    # Hydra, OmegaConf and the backends load only when used: `import align_track`
    # stays cheap for code that only calls log().
    if name == "TrackerCallback":
        from align_track.callback import TrackerCallback

        return TrackerCallback
    if name in ("SQLiteTracker", "track_run", "Run", "Tracker"):
        from align_track import tracker

        return getattr(tracker, name)
    raise AttributeError(f"module 'align_track' has no attribute {name!r}")
