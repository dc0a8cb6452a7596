"""Read a Hydra job's config into a :class:`RunRecord`."""
from __future__ import annotations

import os
import sys
import time
from enum import Enum
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig, Node, OmegaConf

from align_track.capture import (mentions_env, resolve_leafwise, to_plain, unresolved,
                                  unresolved_tree, unresolved_yaml)
from align_track.env import scheduler_job_id
from align_track.facts import environment, git_state
from align_track.flatten import flatten
from align_track.records import RunRecord, SweepRecord
from align_track.redact import Redactor, env_references
from align_track.settings import TrackerSettings
from align_track.tracker import new_run_id

#: Top-level nodes left out of params: Hydra's own (recorded as runtime facts) and
#: the tracker settings.
NOT_PARAMS = ("hydra", "tracker")


_selected: Dict[Tuple[int, str], Any] = {}


def select(config: DictConfig, key: str, default: Any = None) -> Any:
    """``key`` of a job's config as plain data, or ``default``. Memoised for the job
    in hand (a job reads its hydra node some twenty times); see :func:`forget_job`."""
    memo = (id(config), key)
    if memo in _selected:
        value = _selected[memo]
        return default if value is None else value
    value = _plain_leaf(config, key)
    if value is _NOT_PLAIN:
        try:
            value = to_plain(OmegaConf.select(config, key, default=None,
                                              throw_on_missing=False))
        except Exception:  # an interpolation in the hydra node that does not resolve
            value = None
    _selected[memo] = value
    return default if value is None else value


_NOT_PLAIN = object()


def _stored(config: DictConfig, key: str) -> Any:
    """What the node at ``key`` holds, unresolved, read straight from the nodes;
    None where a node on the way is missing; _NOT_PLAIN where the way is not a
    chain of mappings or the node holds no plain value (a container, an enum)."""
    node: Any = config
    try:
        for part in key.split("."):
            node = node._get_node(part)
            if node is None:
                return None
        value = node._value()
    except Exception:  # a list index, or a node of another kind: the general path
        return _NOT_PLAIN
    if isinstance(value, _SCALARS) or value is None:
        return value
    if isinstance(value, (list, dict)):  # a container's nodes, as OmegaConf keeps them
        return _plain_container(value)
    return _NOT_PLAIN


_SCALARS = (str, int, float, bool, Enum)


def _plain_container(content: Any) -> Any:
    """A list or mapping of plain leaves (Hydra's overrides and choices), read from
    its nodes; _NOT_PLAIN if any leaf is a container, an interpolation or missing."""
    # keys as to_plain writes them (text)
    pairs = enumerate(content) if isinstance(content, list) else (
        (str(key), child) for key, child in content.items())
    out: Dict[Any, Any] = {}
    for key, child in pairs:
        value = child._value() if isinstance(child, Node) else _NOT_PLAIN
        if isinstance(value, str):
            if _unresolved_text(value):
                return _NOT_PLAIN
        elif not (value is None or isinstance(value, _SCALARS)):
            return _NOT_PLAIN
        out[key] = value
    return list(out.values()) if isinstance(content, list) else out


def _plain_leaf(config: DictConfig, key: str) -> Any:
    """The value at ``key`` when it is a plain stored value (no interpolation, not
    missing) or a container of such values; else _NOT_PLAIN. A job reads a dozen
    such keys of the hydra node, and OmegaConf.select costs more."""
    value = _stored(config, key)
    if isinstance(value, str) and _unresolved_text(value):
        return _NOT_PLAIN
    return value


def _unresolved_text(value: str) -> bool:
    """Whether stored text is an interpolation or ``???`` rather than its value."""
    return "${" in value or value == "???"


def forget_job() -> None:
    """Drop memoised reads: called when a job starts and ends."""
    _selected.clear()


def launch_dir(config: DictConfig) -> str:
    """The directory the user launched from, whatever hydra.job.chdir says."""
    return select(config, "hydra.runtime.cwd") or os.getcwd()


def is_multirun(config: DictConfig) -> bool:
    return str(select(config, "hydra.mode", "")).endswith("MULTIRUN")


def job_num(config: DictConfig) -> Optional[int]:
    num = select(config, "hydra.job.num")
    return num if isinstance(num, int) and is_multirun(config) else None


def run_name(config: DictConfig, redactor: Redactor) -> str:
    """The job name and the job's overrides (tracker settings left out)."""
    job = select(config, "hydra.job.name", "job")
    overrides = [o for o in redactor.overrides(task_overrides(config))
                 if not o.lstrip("+~").startswith("tracker")]
    return f"{job} {' '.join(overrides)}" if overrides else job


def task_overrides(config: DictConfig) -> List[str]:
    return list(select(config, "hydra.overrides.task", []) or [])


def experiment_name(config: DictConfig, settings: TrackerSettings) -> str:
    return settings.experiment or select(config, "hydra.job.name") or "default"


def run_record(
    config: DictConfig,
    settings: TrackerSettings,
    sweep_id: Optional[str],
    store: str,
    redactor: Redactor,
    sweep_dir: Optional[str] = None,
) -> RunRecord:
    """Everything known about the job at its start, with secrets masked.
    ``sweep_dir``: hydra.sweep.dir as resolved at the sweep's start, if known."""
    resolved, _ = resolve_leafwise(config, skip=NOT_PARAMS)
    raw = unresolved_tree(config, skip=NOT_PARAMS)
    redactor.mask_env(env_references(_all_unresolved(config, raw)))
    known = redactor.remembered
    user_config: Dict[str, Any] = redactor.tree(resolved)
    if redactor.remembered != known:
        # a secret found under its key (llm.api_key: ${creds.key}) may sit under a
        # harmless key read earlier in the walk: walk again, masking it there too
        user_config = redactor.tree(resolved)
    overrides = redactor.overrides(task_overrides(config))
    env = {**environment(store), "launch_dir": launch_dir(config),
           "hydra_version": _hydra_version(), "job_id": select(config, "hydra.job.id")}
    env["argv"] = redactor.overrides(env["argv"])
    # paths may hold override values (hydra.job.override_dirname): mask those
    for key in ("cwd", "launch_dir"):
        env[key] = redactor.text(env[key])
    out_dir = select(config, "hydra.runtime.output_dir")
    if is_multirun(config):
        sweep_dir = sweep_dir or select(config, "hydra.sweep.dir")
    else:
        sweep_dir = None
    return RunRecord(
        id=new_run_id(),
        experiment=experiment_name(config, settings),
        name=settings.run_name or run_name(config, redactor),
        started_at=time.time(),
        config=user_config,
        config_yaml=unresolved_yaml(config, NOT_PARAMS, redactor, plain=raw),
        params=_params(config, user_config),
        overrides=overrides,
        choices=dict(select(config, "hydra.runtime.choices", {}) or {}),
        tags=redactor.flat({str(k): str(v) for k, v in settings.tags.items()}),
        output_dir=redactor.text(out_dir) if out_dir else out_dir,
        sweep_id=sweep_id,
        job_num=job_num(config),
        sweep_dir=redactor.text(sweep_dir) if sweep_dir else sweep_dir,
        env=env,
        git=git_state(launch_dir(config)),
        identity=_identity(config),
    )


def _all_unresolved(config: DictConfig, raw: Dict[Any, Any]) -> Dict[Any, Any]:
    """The whole config with interpolations kept, as far as its ``${oc.env:...}``
    references go: ``raw`` for the user's keys; the other nodes (Hydra's, some
    hundred values) are converted only when they mention ``oc.env``."""
    whole: Dict[Any, Any] = {}
    for key in config.keys():
        if key in raw:
            whole[key] = raw[key]
        else:
            node = config._get_node(key)
            whole[key] = unresolved(node) if mentions_env(node) else None
    return whole


def _params(config: DictConfig, user_config: Dict[str, Any]) -> Dict[str, Any]:
    """Flat config keys, plus an optimizing sweeper's trial number as ``trial``."""
    params = flatten(user_config)
    num = job_num(config)
    sweeper = str(select(config, "hydra.sweeper._target_", ""))
    if num is not None and not sweeper.endswith("BasicSweeper"):
        params.setdefault("trial", num)
    return params


def _identity(config: DictConfig) -> Optional[str]:
    """Scheduler job id, job number and output dir: kept by a requeue, and unlike
    any other job's (scheduler ids such as local pids get reused)."""
    scheduler_id = scheduler_job_id()
    if scheduler_id is None:
        return None
    out_dir = select(config, "hydra.runtime.output_dir")
    return f"{scheduler_id}/{job_num(config)}/{out_dir}"


def expected_jobs(config: DictConfig) -> Optional[int]:
    """How many jobs the sweeper will launch, where that is known up front."""
    sweeper = str(select(config, "hydra.sweeper._target_", ""))
    if sweeper.endswith("BasicSweeper"):
        params = select(config, "hydra.sweeper.params") or {}
        overrides = [f"{k}={v}" for k, v in params.items()] + task_overrides(config)
        try:
            from hydra.core.override_parser.overrides_parser import OverridesParser

            count = 1
            for override in OverridesParser.create().parse_overrides(overrides):
                if override.is_sweep_override():
                    count *= len(list(override.sweep_string_iterator()))
            return count
        except Exception:  # a sweep Hydra can parse but not enumerate here
            return None
    n_trials = select(config, "hydra.sweeper.n_trials")
    return n_trials if isinstance(n_trials, int) else None


def sweep_record(
    config: DictConfig, sweep_id: str, experiment: str, redactor: Redactor
) -> SweepRecord:
    return SweepRecord(
        id=sweep_id,
        experiment=experiment,
        started_at=time.time(),
        dir=_abs(select(config, "hydra.sweep.dir"), launch_dir(config)),
        command=redactor.overrides(sys.argv),
        overrides=redactor.overrides(task_overrides(config)),
        sweeper=select(config, "hydra.sweeper._target_"),
        launcher=select(config, "hydra.launcher._target_"),
        jobs_expected=expected_jobs(config),
    )


def hydra_files(config: DictConfig) -> List[str]:
    """Paths of Hydra's .hydra/*.yaml and the job log file, where they exist."""
    out_dir = select(config, "hydra.runtime.output_dir")
    if not out_dir:
        return []
    files = []
    subdir = select(config, "hydra.output_subdir")
    if subdir:
        folder = os.path.join(out_dir, subdir)
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            files.append(os.path.join(folder, name))
    log_file = _log_file_name(config, out_dir)
    if not log_file:
        log_file = os.path.join(out_dir, f"{select(config, 'hydra.job.name', 'job')}.log")
    files.append(_abs(log_file, out_dir))
    return [f for f in files if f and os.path.isfile(f)]


#: Hydra's default job log file name (hydra/job_logging/default.yaml).
_DEFAULT_LOG_FILE = "${hydra.runtime.output_dir}/${hydra.job.name}.log"


def _log_file_name(config: DictConfig, out_dir: str) -> Optional[str]:
    """``hydra.job_logging.handlers.file.filename``; Hydra's default is filled in
    here, as resolving it through OmegaConf costs milliseconds a job."""
    if _stored(config, "hydra.job_logging.handlers.file.filename") == _DEFAULT_LOG_FILE:
        return f"{out_dir}/{select(config, 'hydra.job.name')}.log"
    return select(config, "hydra.job_logging.handlers.file.filename")


def _abs(path: Optional[str], base: str) -> Optional[str]:
    if path is None:
        return None
    return path if os.path.isabs(path) else os.path.abspath(os.path.join(base, path))


def _hydra_version() -> Optional[str]:
    try:
        import hydra

        return hydra.__version__
    except Exception:
        return None
