"""The Hydra callback that turns every job into a tracked run."""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from typing import Any, Dict, Optional, Tuple

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from align_track import _context, _job, _lifecycle, backends
from align_track.capture import dump_yaml, load_yaml_text, to_plain
from align_track.collect import collect
from align_track.env import GROUP_VAR
from align_track.errors import AlignTrackConfigError
from align_track.facts import prefetch_git
from align_track.records import FAILED, FINISHED
from align_track.redact import Redactor
from align_track.settings import TrackerSettings, as_dict, parse_settings
from align_track.tracker import Run, Tracker, artifact_name, error_info, get_tracker

logger = logging.getLogger(__name__)


class TrackerCallback(Callback):
    """Record each Hydra job as a run.

    Enable it with ``+tracker=sqlite`` on the command line, or in the primary
    config::

        defaults:
          - tracker: sqlite
          - _self_

    or write the callback by hand::

        hydra:
          callbacks:
            tracker:
              _target_: align_track.TrackerCallback
              db: runs/experiments.db

    Args:
        settings: the ``tracker`` node (see :class:`align_track.settings.TrackerSettings`
            for every key: ``backend``, ``db``, ``experiment``, ``run_name``, ``tags``,
            ``strict``, ...).
        **kwargs: settings given one by one; they win over ``settings``.

    Raises:
        AlignTrackConfigError: a key is unknown or a value is invalid.
        BackendUnavailableError: the selected backend's package is not installed.
    """

    def __init__(self, settings: Any = None, **kwargs: Any) -> None:
        raw = {**(to_plain(settings) or {}), **kwargs}
        self.settings: TrackerSettings = parse_settings(raw)
        if self.settings.enabled:
            backends.check_installed(self.settings.backend)
        self.sweep_id: Optional[str] = None
        # hydra.sweep.dir as the sweep resolved it: each job's config holds the same
        # text, and resolving ${now:...} again costs a parse per job
        self.sweep_dir: Optional[str] = None
        self._runs: Dict[int, Tuple[Run, TrackerSettings]] = {}  # by thread: run, settings

    # Hydra may pickle the callback into launcher workers: send settings only.
    def __getstate__(self) -> Dict[str, Any]:
        return {"settings": self.settings, "sweep_id": self.sweep_id,
                "sweep_dir": self.sweep_dir}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.settings = state["settings"]
        self.sweep_id = state["sweep_id"]
        self.sweep_dir = state.get("sweep_dir")
        self._runs = {}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Run mode, before the job's config is saved: start reading git."""
        if self.settings.enabled:
            prefetch_git(_job.launch_dir(config))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Multirun mode, in the launching process, before any job: record the sweep."""
        self.sweep_id = uuid.uuid4().hex
        self.sweep_dir = _job.select(config, "hydra.sweep.dir")
        settings = self._job_settings(config)
        if not settings.enabled:
            return
        prefetch_git(_job.launch_dir(config))  # git runs while Hydra composes the jobs
        try:
            tracker = self._tracker(settings, config)
            experiment = _job.experiment_name(config, settings)
            tracker.backend.start_sweep(_job.sweep_record(
                config, self.sweep_id, experiment, Redactor.from_setting(settings.redact)))
            # Hydra skips on_multirun_end when a job raised: close the sweep at exit then
            _open_sweeps[self.sweep_id] = tracker
            atexit.register(_end_sweep_at_exit, self.sweep_id)
            logger.info("sweep %s recorded in %s", self.sweep_id, tracker.backend.location)
        except Exception as exc:
            logger.error("could not record sweep %s: %s", self.sweep_id, exc)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Multirun mode, in the launching process, after every job returned."""
        settings = self._job_settings(config)
        if not settings.enabled or self.sweep_id is None:
            return
        _open_sweeps.pop(self.sweep_id, None)
        try:
            self._tracker(settings, config).backend.end_sweep(self.sweep_id, time.time())
        except Exception as exc:
            logger.error("could not close sweep %s: %s", self.sweep_id, exc)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Both modes, in the process and thread that runs the job: open its run."""
        _job.forget_job()
        settings = self._job_settings(config)
        if not settings.enabled:
            _context.disable("tracker.enabled=false")
            return
        try:
            run = self._open_run(config, settings)
        except Exception as exc:
            logger.error("tracking is off for this job: %s could not open a run: %s\n"
                         "  the job runs untracked; fix the tracker settings or the store",
                         settings.backend, exc, exc_info=logger.isEnabledFor(logging.DEBUG))
            _context.disable(f"{settings.backend}: {exc}")
            return
        _context.disable(None)
        self._runs[threading.get_ident()] = (run, settings)
        _context.bind(run)
        _lifecycle.install()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Both modes, where the job ran, after the task returned or raised."""
        opened = self._runs.pop(threading.get_ident(), None)
        if opened is None:
            return
        run, settings = opened  # this job's settings, read when it started
        try:
            try:
                out_dir = _job.select(config, "hydra.runtime.output_dir")
                if settings.log_hydra_files:
                    self._attach_hydra_files(run, config, out_dir or "")
                if settings.collect and out_dir:
                    collect(run, out_dir, settings.collect)
            except Exception as exc:
                logger.warning("run %s: could not store the job's files: %s", run.id, exc)
            self._close(run, job_return)
        finally:
            _context.forget(run)
            _lifecycle.uninstall()
            _job.forget_job()

    def _job_settings(self, config: DictConfig) -> TrackerSettings:
        job_node = _job.select(config, "tracker")
        if not isinstance(job_node, dict):
            return self.settings
        merged = {**as_dict(self.settings), **job_node}
        try:
            return parse_settings(merged)
        except AlignTrackConfigError as exc:
            logger.error("%s; using the sweep's tracker settings", exc)
            return self.settings

    def _tracker(self, settings: TrackerSettings, config: DictConfig) -> Tracker:
        key, factory = backends.build(settings, _job.launch_dir(config))

        def make() -> Tracker:
            backend = factory()
            backend.open()
            return Tracker(backend, flush_interval=settings.flush_interval)

        return get_tracker(key, make)

    def _open_run(self, config: DictConfig, settings: TrackerSettings) -> Run:
        tracker = self._tracker(settings, config)
        redactor = Redactor.from_setting(settings.redact)
        sweep_id = self._sweep_of(config, settings, tracker, redactor)
        record = _job.run_record(config, settings, sweep_id, tracker.backend.location,
                                 redactor, sweep_dir=self.sweep_dir)
        return tracker.start_run(record=record, strict=settings.strict, redactor=redactor)

    def _sweep_of(self, config: DictConfig, settings: TrackerSettings,
                  tracker: Tracker, redactor: Redactor) -> Optional[str]:
        if _job.is_multirun(config):
            # set in on_multirun_start and pickled into workers with the callback
            return self.sweep_id or self.sweep_dir or _job.select(config, "hydra.sweep.dir")
        group = settings.group or os.environ.get(GROUP_VAR)
        if group:
            sweep = _job.sweep_record(config, group, _job.experiment_name(config, settings),
                                      redactor)
            sweep.dir, sweep.jobs_expected = None, None
            tracker.backend.start_sweep(sweep)  # once per group: later calls change nothing
        return group or None

    @staticmethod
    def _attach_hydra_files(run: Run, config: DictConfig, out_dir: str) -> None:
        folder = _LazyFolder()  # made only when a file holds a secret (seldom)
        try:
            files = []
            for path in _job.hydra_files(config):
                name = os.path.relpath(path, out_dir)
                if name.startswith(".."):  # a log file outside the job's folder
                    name = os.path.basename(path)
                name = run.redactor.text(artifact_name(name, path))
                if run.redactor.enabled:
                    path = (_redacted_copy(path, folder, run.redactor)
                            if path.endswith(".yaml")
                            else _scrubbed_copy(path, folder, run.redactor))
                files.append((path, name))
            run.store_files(files)  # one transaction for the lot
        finally:
            folder.remove()

    @staticmethod
    def _close(run: Run, job_return: JobReturn) -> None:
        if job_return.status == JobStatus.COMPLETED:
            value = job_return._return_value
            _log_return_value(run, value)
            run.end(FINISHED, return_value=_jsonable(value))
        else:
            exc = job_return._return_value
            error = error_info(exc) if isinstance(exc, BaseException) else None
            run.end(FAILED, error=error)


_open_sweeps: Dict[str, Tracker] = {}


def _end_sweep_at_exit(sweep_id: str) -> None:
    tracker = _open_sweeps.pop(sweep_id, None)
    if tracker is not None:
        try:
            tracker.backend.end_sweep(sweep_id, time.time(), FAILED)
        except Exception as exc:
            logger.error("could not close sweep %s at exit: %s", sweep_id, exc)


class _LazyFolder:
    """A temporary folder, made when first asked for."""

    def __init__(self) -> None:
        self._path: Optional[str] = None

    def __str__(self) -> str:
        if self._path is None:
            import tempfile

            self._path = tempfile.mkdtemp(prefix="align-track-")
        return self._path

    def remove(self) -> None:
        if self._path is not None:
            import shutil

            shutil.rmtree(self._path, ignore_errors=True)


def _redacted_copy(path: str, folder: "_LazyFolder", redactor: Redactor) -> str:
    """``path`` itself when it holds no secret, else a copy with secrets masked."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        if not redactor.may_mask_yaml(text):  # the common case: no need to parse
            return path
        plain = load_yaml_text(text)
        masked = redactor.tree(plain)
        if masked == plain:
            return path
        text = dump_yaml(masked)
    except Exception as exc:  # not YAML we can read: store nothing rather than a secret
        logger.warning("%s could not be checked for secrets (%s); not stored", path, exc)
        text = f"# {os.path.basename(path)} was not stored: it could not be checked for secrets\n"
    target = os.path.join(str(folder), os.path.basename(path))
    with open(target, "w", encoding="utf-8") as fh:
        fh.write(text)
    return target


def _scrubbed_copy(path: str, folder: "_LazyFolder", redactor: Redactor) -> str:
    """``path`` itself, or a copy of a text file (the job log) with secrets masked.
    Read line by line: a log of any size costs no more memory than its longest line."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        if not any(redactor.text(line) != line for line in fh):
            return path
    target = os.path.join(str(folder), os.path.basename(path))
    with open(path, encoding="utf-8", errors="replace") as src, \
            open(target, "w", encoding="utf-8") as dst:
        dst.writelines(redactor.text(line) for line in src)
    return target


def _log_return_value(run: Run, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        run.log({"return_value": value})
    elif isinstance(value, dict):
        numbers = {f"return_value.{k}": v for k, v in value.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            run.log(numbers)
    elif isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        run.log({f"return_value.{i}": v for i, v in enumerate(value)})


def _jsonable(value: Any) -> Any:
    import json

    value = to_plain(value)
    try:
        json.dumps(value, allow_nan=True)
        return value
    except (TypeError, ValueError):
        return repr(value)
