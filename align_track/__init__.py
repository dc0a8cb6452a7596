"""align-track: experiment tracking for Hydra apps, switched on by configuration.

Log from anywhere inside a tracked job::

    import align_track
    align_track.log({"loss": 0.3}, step=epoch)
"""
from __future__ import annotations

from align_track import _context
from align_track._context import log

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
    from typing import Any, Dict, List, Mapping, Optional

    from align_track.callback import TrackerCallback
    from align_track.tracker import Run, SQLiteTracker, track_run


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
