"""The ClearML backend: one ClearML task per run, online or as an offline session.

ClearML's ``Task.init`` is built for a script that owns its process. This module
calls it with every automatic feature off, and undoes the process-wide changes it
makes (signal handlers, ``sys.excepthook``, ``sys.exit``, random seeds), so that a
job behaves the same with and without tracking. See ``docs/backends/clearml.md``.

Where a run lands:

* the Hydra config (unresolved YAML) -> configuration object ``OmegaConf``;
* the flattened, resolved params -> hyperparameters, section ``Config``;
* run facts (overrides, choices, env, git) -> configuration object ``align_track``;
* run id, sweep id, job number, status, error -> user properties ``align_track.*``;
* tags -> task tags ``key=value``; a sweep job also gets ``sweep=<id>``;
* metrics -> scalars (:func:`title_series` gives the title/series rule);
* artifacts -> ``Task.upload_artifact``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from align_track.backends.base import Backend, file_digest
from align_track.records import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    Point,
    RunEnd,
    RunRecord,
    SweepRecord,
)

logger = logging.getLogger(__name__)

#: Hyperparameter section that holds the flattened config.
PARAMS_SECTION = "Config"
#: Configuration object that holds the Hydra config, as ClearML names Hydra's.
CONFIG_NAME = "OmegaConf"
#: Configuration object with the run's facts.
FACTS_NAME = "align_track"
#: Prefix of the user properties this backend sets.
PROPERTY = "align_track."
#: Artifact that lists the NaN/inf points ClearML cannot plot.
NONFINITE_ARTIFACT = "align_track/nonfinite_metrics.json"
#: Non-finite points kept per run for that artifact; later ones are only counted.
MAX_NONFINITE = 100_000
#: Environment variable naming the parent task of the current sweep (online mode).
SWEEP_ENV = "ALIGN_TRACK_CLEARML_SWEEP"
#: ClearML's variable marking "this process belongs to task X of process P".
MASTER_ENV = "CLEARML_PROC_MASTER_ID"

# Every framework hook Task.init knows, off; "detect_repository" also stops the
# repository/requirements scan and the update check it starts (updates.clear.ml).
_FRAMEWORKS_OFF = {
    key: False
    for key in (
        "hydra", "scikit", "joblib", "matplotlib", "tensorflow", "tensorboard",
        "tfdefines", "pytorch", "megengine", "xgboost", "catboost", "fastai",
        "lightgbm", "gradio", "jsonargparse", "detect_repository",
    )
}
# Signals whose handlers ClearML's exit hooks replace.
_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGSEGV", "SIGABRT", "SIGILL", "SIGFPE",
                 "SIGQUIT")
    if hasattr(signal, name)
)
# ClearML keeps one task per process; guards Task.init across backend instances.
_process_lock = threading.Lock()
_open_tasks: Dict[str, Any] = {}


def title_series(name: str, context: str = "") -> Tuple[str, str]:
    """The ClearML title and series of a metric.

    The name is split at its last ``/``: ``train/loss`` -> (``train``, ``loss``),
    ``a/b/c`` -> (``a/b``, ``c``); a name without ``/`` is both: ``loss`` ->
    (``loss``, ``loss``). A context is added to the series as ``[key=value, ...]``
    in key order: ``loss`` with ``{"subset": "val"}`` -> (``loss``,
    ``loss [subset=val]``).

    Args:
        name: the metric name given to ``log()``.
        context: the canonical JSON text of the context, or ``""``.
    """
    title, sep, series = name.rpartition("/")
    if not sep or not title or not series:
        title = series = name
    if context:
        try:
            items = json.loads(context)
        except ValueError:
            items = None
        if isinstance(items, dict) and items:
            parts = [f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                     for k, v in sorted(items.items())]
            series = f"{series} [{', '.join(parts)}]"
        elif context not in ("{}", "null"):
            series = f"{series} [{context}]"
    return title, series


def _param_value(value: Any) -> Any:
    # ClearML stores every value as text, with a type; lists and dicts as JSON.
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple, dict)):
        try:
            json.dumps(value)
            return value
        except (TypeError, ValueError):
            pass
    return str(value)


class _ProcessState:
    """Signal handlers, excepthook, ``sys.exit`` and seeding, saved to be put back."""

    def __init__(self) -> None:
        self.main = threading.current_thread() is threading.main_thread()
        self.handlers = {}
        if self.main:
            for sig in _SIGNALS:
                try:
                    self.handlers[sig] = signal.getsignal(sig)
                except (ValueError, OSError):
                    pass
        self.excepthook = sys.excepthook
        self.exit = sys.exit

    def restore(self) -> None:
        if self.main:
            for sig, handler in self.handlers.items():
                if handler is None:
                    continue
                try:
                    if signal.getsignal(sig) is not handler:
                        signal.signal(sig, handler)
                except (ValueError, OSError):
                    pass
        sys.excepthook = self.excepthook
        sys.exit = self.exit


class _Run:
    """One open task and what this backend remembers about it."""

    def __init__(self, task: Any, record: RunRecord):
        self.task = task
        self.log = task.get_logger()
        self.record = record
        self.nonfinite: List[Dict[str, Any]] = []
        self.nonfinite_count = 0
        self.offline_dir: Optional[str] = None


class ClearMLBackend(Backend):
    """Runs as ClearML tasks.

    Args:
        project: ClearML project; None: the run's experiment name.
        task_name: task name; None: the run's name.
        offline: write offline sessions instead of talking to a server. Also on
            when ``CLEARML_OFFLINE_MODE=1``.
        output_uri: where artifacts go (a bucket or a file server URL); ignored in
            offline mode, where they stay in the session folder.

    Raises:
        BackendUnavailableError: on :meth:`open` when online and no ClearML server
            is configured (ClearML would fall back to its hosted service).
    """

    name = "clearml"

    def __init__(
        self,
        project: Optional[str] = None,
        task_name: Optional[str] = None,
        offline: bool = False,
        output_uri: Optional[str] = None,
    ):
        self.project = project
        self.task_name = task_name
        self.offline = bool(offline)
        self.output_uri = output_uri
        self.location = "clearml offline session" if offline else "clearml server"
        self._runs: Dict[str, _Run] = {}
        self._sweep_tasks: Dict[str, Any] = {}
        self._lock = threading.RLock()
        self._ready = False

    @classmethod
    def from_settings(
        cls, settings: Any, launch_dir: str
    ) -> Tuple[str, Dict[str, Any]]:
        offline = bool(settings.offline)
        kwargs = {"project": settings.project, "task_name": settings.task_name,
                  "offline": offline, "output_uri": settings.output_uri}
        key = f"{settings.project or ''}|offline={offline}|{settings.output_uri or ''}"
        return key, kwargs

    # -- setup -----------------------------------------------------------------------

    def open(self) -> None:
        """Set ClearML up; online, check that a server of the user's is configured."""
        self._setup()

    def _setup(self) -> None:
        if self._ready:
            return
        from clearml import Task

        if self.offline:
            Task.set_offline(True)
        self.offline = Task.is_offline()
        if self.offline:
            from clearml.config import get_offline_dir

            self.location = f"clearml offline sessions in {get_offline_dir()}"
        else:
            self.location = f"clearml {self._server_host()}"
        # Report from a thread of this process, never from a forked reporter process.
        Task._report_subprocess_enabled = False
        # Task.init would reseed random, numpy and torch (seed 1337) in every job.
        Task.set_random_seed(None)
        self._ready = True

    @staticmethod
    def _server_host() -> str:
        from clearml.backend_api import Session
        from clearml.config import config_obj

        from align_track.errors import BackendUnavailableError

        configured = (os.environ.get("CLEARML_API_HOST")
                      or os.environ.get("TRAINS_API_HOST")
                      or config_obj.get("api.api_server", None)
                      or config_obj.get("api.host", None))
        if not configured:
            raise BackendUnavailableError(
                "tracker.backend=clearml with tracker.offline=false needs your ClearML "
                "server: set CLEARML_API_HOST (and CLEARML_API_ACCESS_KEY / "
                "CLEARML_API_SECRET_KEY) or run clearml-init; or set "
                "tracker.offline=true to write offline sessions. align-track never "
                "falls back to ClearML's hosted service."
            )
        return Session.get_api_server_host()

    # -- runs ------------------------------------------------------------------------

    def start_run(self, record: RunRecord) -> None:
        self._setup()
        from clearml import Task

        tags = [f"{k}={v}" for k, v in record.tags.items()]
        if record.sweep_id:
            tags.append(f"sweep={record.sweep_id}")
        with _process_lock:
            if _open_tasks:
                raise RuntimeError(
                    "ClearML holds one task per process and run "
                    f"{next(iter(_open_tasks))} is still open here; run parallel jobs "
                    "in separate processes (e.g. hydra/launcher=joblib with processes)"
                )
            master = os.environ.get(MASTER_ENV, "")
            pid, _, task_id = master.partition(":")
            if master and pid != str(os.getpid()):
                # Inherited from a parent process: ClearML would hand this job a stub
                # (or the parent's task) instead of a task of its own.
                logger.debug("ignoring inherited %s=%s", MASTER_ENV, master)
                os.environ.pop(MASTER_ENV, None)
            elif task_id:
                raise RuntimeError(
                    f"a ClearML task ({task_id}) is already open in this process; "
                    "close it before the job starts, or use Task.current_task() inside "
                    "the job to reach the task align-track opens"
                )
            saved = _ProcessState()
            try:
                task = Task.init(
                    project_name=self.project or record.experiment,
                    task_name=self.task_name or record.name,
                    tags=tags or None,
                    reuse_last_task_id=False,
                    continue_last_task=False,
                    output_uri=None if self.offline else self.output_uri,
                    auto_connect_arg_parser=False,
                    auto_connect_frameworks=dict(_FRAMEWORKS_OFF),
                    auto_resource_monitoring=False,
                    auto_connect_streams=False,
                )
            finally:
                saved.restore()
            _open_tasks[record.id] = task
        run = _Run(task, record)
        with self._lock:
            self._runs[record.id] = run
        try:
            self._describe(run)
        except Exception:
            logger.warning("could not store the config of run %s in ClearML", record.id,
                           exc_info=logger.isEnabledFor(logging.DEBUG))
        if self.offline:
            run.offline_dir = str(task.get_offline_mode_folder())
        logger.info("ClearML task %s for run %s", task.id, record.id)

    def _describe(self, run: _Run) -> None:
        task, r = run.task, run.record
        with tempfile.TemporaryDirectory(prefix="align-track-clearml-") as tmp:
            if r.config_yaml:
                yaml_path = Path(tmp, "config.yaml")
                yaml_path.write_text(r.config_yaml)
                task.connect_configuration(
                    yaml_path, name=CONFIG_NAME,
                    description="Hydra config (unresolved), recorded by align-track")
            facts = {"run_id": r.id, "experiment": r.experiment,
                     "overrides": r.overrides, "choices": r.choices,
                     "output_dir": r.output_dir,
                     "sweep_id": r.sweep_id, "sweep_dir": r.sweep_dir,
                     "job_num": r.job_num, "env": r.env, "git": r.git}
            facts_path = Path(tmp, "align_track.json")
            facts_path.write_text(json.dumps(facts, indent=2, default=str))
            task.connect_configuration(facts_path, name=FACTS_NAME,
                                       description="run facts recorded by align-track")
        props = {PROPERTY + "run_id": r.id, PROPERTY + "status": "running"}
        if r.sweep_id:
            props[PROPERTY + "sweep_id"] = r.sweep_id
        if r.job_num is not None:
            props[PROPERTY + "job_num"] = str(r.job_num)
        if r.overrides:
            props[PROPERTY + "overrides"] = " ".join(r.overrides)
        # One update for params and user properties (section "properties"): every
        # update rewrites the whole task, which counts with a 10,000-key config.
        values = {f"{PARAMS_SECTION}/{k}": _param_value(v) for k, v in r.params.items()}
        values.update({f"properties/{k}": v for k, v in props.items()})
        task.update_parameters(values)
        parent = os.environ.get(SWEEP_ENV, "")
        sweep_id, _, parent_id = parent.partition(":")
        if not self.offline and r.sweep_id and parent_id and sweep_id == r.sweep_id:
            task.set_parent(parent_id)

    def _run(self, run_id: str) -> _Run:
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            raise KeyError(f"run {run_id} has no open ClearML task in this process")
        return run

    def log_metrics(self, run_id: str, points: List[Point]) -> None:
        if not points:
            return
        run = self._run(run_id)
        report = run.log.report_scalar
        names: Dict[Tuple[str, str], Tuple[str, str]] = {}
        for name, step, value, _wall, ctx in points:
            key = (name, ctx)
            ts = names.get(key)
            if ts is None:
                ts = names[key] = title_series(name, ctx)
            if math.isfinite(value):
                report(ts[0], ts[1], value, int(step))
            else:
                # ClearML would plot NaN/inf as 0.0: keep them aside instead.
                run.nonfinite_count += 1
                if len(run.nonfinite) < MAX_NONFINITE:
                    run.nonfinite.append({"name": name, "context": ctx, "step": step,
                                          "value": repr(value), "title": ts[0],
                                          "series": ts[1]})

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self._run(run_id).task.update_parameters(
            {f"{PARAMS_SECTION}/{k}": _param_value(v) for k, v in params.items()})

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        task = self._run(run_id).task
        prefixes = tuple(f"{k}=" for k in tags)
        kept = [t for t in (task.get_tags() or []) if not t.startswith(prefixes)]
        task.set_tags(kept + [f"{k}={v}" for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: str, name: str) -> Dict[str, Any]:
        task = self._run(run_id).task
        sha, size = file_digest(path)
        ok = task.upload_artifact(name=name, artifact_object=Path(path),
                                  wait_on_upload=True)
        if not ok:
            raise RuntimeError(f"ClearML did not store artifact {name!r}")
        info: Dict[str, Any] = {"name": name, "size": size, "sha256": sha}
        artifact = task.artifacts.get(name)
        if artifact is not None and getattr(artifact, "url", None):
            info["path"] = artifact.url
        return info

    def end_run(self, run_id: str, end: RunEnd) -> None:
        run = self._run(run_id)
        task = run.task
        status = end.status if end.status in (FINISHED, FAILED, INTERRUPTED) else FAILED
        error = end.error or {}
        message = ": ".join(p for p in (error.get("type"), error.get("message")) if p)
        try:
            self._record_end(run, end, message)
        finally:
            saved = _ProcessState()
            try:
                task.close()  # flushes, marks completed, writes the offline zip
            finally:
                saved.restore()
                with _process_lock:
                    _open_tasks.pop(run_id, None)
                with self._lock:
                    self._runs.pop(run_id, None)
        # Closing marks the task completed; put the real outcome over it. Offline,
        # ClearML keeps no status (an import marks it completed): the user property
        # align_track.status carries it.
        if status == FAILED:
            task.mark_failed(status_reason="failed", status_message=message or None,
                             force=True)
        elif status == INTERRUPTED:
            task.mark_stopped(force=True, status_message=message or "interrupted")
        if run.offline_dir:
            logger.info("ClearML offline session of run %s: %s (import with "
                        "clearml-task --import-offline-session %s.zip)", run_id,
                        run.offline_dir, run.offline_dir)

    def _record_end(self, run: _Run, end: RunEnd, message: str) -> None:
        task = run.task
        if run.nonfinite_count:
            logger.warning("ClearML cannot plot NaN/inf: %d points of run %s are "
                           "listed in artifact %s instead", run.nonfinite_count,
                           run.record.id,
                           NONFINITE_ARTIFACT)
            self._upload_json(task, NONFINITE_ARTIFACT, {
                "count": run.nonfinite_count, "points": run.nonfinite})
        traceback = (end.error or {}).get("traceback") or ""
        if end.status != FINISHED and (message or traceback):
            run.log.report_text(traceback or message, level=logging.ERROR)
            if traceback:
                self._upload_text(task, "traceback.txt", traceback)
        props = {PROPERTY + "status": end.status}
        if message:
            props[PROPERTY + "error"] = message[:2000]
        if end.dropped:
            props[PROPERTY + "dropped"] = str(end.dropped)
        task.set_user_properties(**props)

    @staticmethod
    def _upload_text(task: Any, name: str, text: str) -> None:
        with tempfile.TemporaryDirectory(prefix="align-track-clearml-") as tmp:
            path = Path(tmp, os.path.basename(name))
            path.write_text(text)
            task.upload_artifact(name=name, artifact_object=path, wait_on_upload=True)

    def _upload_json(self, task: Any, name: str, data: Any) -> None:
        self._upload_text(task, name, json.dumps(data, indent=1, default=str))

    # -- sweeps ----------------------------------------------------------------------

    def start_sweep(self, sweep: SweepRecord) -> None:
        """Online: a ``controller`` task that every job of the sweep names as parent.

        Offline there is no parent (an offline id does not survive an import);
        jobs carry the tag ``sweep=<id>`` in both modes.
        """
        self._setup()
        if self.offline:
            return
        from clearml import Task

        saved = _ProcessState()
        try:
            parent = Task.create(
                project_name=self.project or sweep.experiment,
                task_name=f"sweep {sweep.id}", task_type="controller",
                detect_repository=False, add_task_init_call=False,
            )
        finally:
            saved.restore()
        parent.set_tags([f"sweep={sweep.id}", "align-track-sweep"])
        parent.set_user_properties(**{
            PROPERTY + "sweep_id": sweep.id,
            PROPERTY + "command": " ".join(sweep.command),
            PROPERTY + "overrides": " ".join(sweep.overrides),
            PROPERTY + "sweep_dir": sweep.dir or ""})
        parent.mark_started(force=True)
        self._sweep_tasks[sweep.id] = parent
        # Jobs started by this process, or by launcher workers it spawns, read it.
        os.environ[SWEEP_ENV] = f"{sweep.id}:{parent.id}"

    def end_sweep(self, sweep_id: str, ended_at: float, status: str = "finished") -> None:
        parent = self._sweep_tasks.pop(sweep_id, None)
        if parent is not None:
            parent.mark_completed(force=True)
        if os.environ.get(SWEEP_ENV, "").startswith(f"{sweep_id}:"):
            os.environ.pop(SWEEP_ENV, None)

    # -- misc ------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            open_ids = list(self._runs)
        for run_id in open_ids:
            logger.debug("ClearML task of run %s still open at close", run_id)

    def describe_run(self, run_id: str) -> Optional[str]:
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            return None
        if run.offline_dir:
            return run.offline_dir
        try:
            return str(run.task.get_output_log_web_page())
        except Exception:
            return None
