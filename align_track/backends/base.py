"""The contract every backend implements."""
from __future__ import annotations

import abc
from typing import Any, Dict, List, Mapping, Optional, Tuple

from align_track.records import FINISHED, Point, RunEnd, RunRecord, SweepRecord


def file_digest(path: str) -> Tuple[str, int]:
    """(sha256 hex, size) of a file, read in 1 MiB chunks."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class Backend(abc.ABC):
    """Where runs are stored.

    A backend is built in the process that writes (never pickled) by
    :func:`align_track.backends.open_backend`. All methods may be called from the
    writer thread; the run handle serialises calls per run, so an implementation
    needs no locking of its own unless it shares state between runs.

    Methods raise on failure; the caller turns a failure into one warning and keeps
    the job running.
    """

    #: Short name as given in ``tracker.backend``.
    name: str = ""

    #: Where this backend stores data, for messages ("sqlite:///abs/path.db").
    location: str = ""

    @classmethod
    def from_settings(cls, settings: Any, launch_dir: str) -> Tuple[str, Dict[str, Any]]:
        """Constructor kwargs from the ``tracker`` settings, and a key that is the same
        for settings that reach the same store (runs of one process share a backend).
        Relative paths are taken from ``launch_dir``."""
        raise NotImplementedError

    def open(self) -> None:
        """Connect now, so that a bad location is reported when the job starts."""

    @abc.abstractmethod
    def start_run(self, record: RunRecord) -> None:
        """Create the run with its config, params, overrides and facts."""

    @abc.abstractmethod
    def log_metrics(self, run_id: str, points: List[Point]) -> None:
        """Store a batch of points, in order. Every step is already an int."""

    @abc.abstractmethod
    def end_run(self, run_id: str, end: RunEnd) -> None:
        """Record the final status. Called once, after the last ``log_metrics``."""

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Add or overwrite flat params set by the user after the run opened."""
        raise NotImplementedError(f"backend {self.name!r} cannot add params")

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Add or overwrite tags."""
        raise NotImplementedError(f"backend {self.name!r} cannot store tags")

    def log_artifact(self, run_id: str, path: str, name: str) -> Dict[str, Any]:
        """Store one file under ``name`` (a relative POSIX path).

        Returns a mapping with at least ``name``, ``size`` and ``sha256``.
        """
        raise NotImplementedError(f"backend {self.name!r} cannot store artifacts")

    def log_artifacts(self, run_id: str, files: List[Tuple[str, str]]) -> List[Dict[str, Any]]:
        """Store ``(path, name)`` pairs all at once or none of them (one
        transaction); one mapping per file, as :meth:`log_artifact` returns.
        Optional: the caller stores the files one by one where this raises."""
        raise NotImplementedError(f"backend {self.name!r} stores artifacts one by one")

    def find_resumable(self, identity: str) -> Optional[str]:
        """The id of an unfinished run with this job identity (a requeued job), or
        None. Backends that cannot look runs up return None: a new run opens."""
        return None

    def resume_run(self, record: RunRecord) -> None:
        """Reopen the run ``record.id`` found by :meth:`find_resumable`."""
        raise NotImplementedError(f"backend {self.name!r} cannot resume runs")

    def sync(self) -> None:
        """Return once every point handed to :meth:`log_metrics` is stored. Optional:
        for backends whose ``log_metrics`` hands points on before they are stored."""

    def heartbeat(self, run_ids: List[str], now: float) -> None:
        """Say that these runs' process is alive. Optional."""

    def start_sweep(self, sweep: SweepRecord) -> None:
        """Record a multirun. Optional: runs carry ``sweep_id`` regardless."""

    def end_sweep(self, sweep_id: str, ended_at: float, status: str = FINISHED) -> None:
        """Close a multirun: ``finished`` from ``on_multirun_end``, ``failed`` at exit
        when Hydra stopped the sweep early (a job raised). Optional."""

    def close(self) -> None:
        """Release connections. Called at process exit and after fork."""

    def describe_run(self, run_id: str) -> Optional[str]:
        """A user-facing pointer to the run (a URL or a CLI command), or None."""
        return None
