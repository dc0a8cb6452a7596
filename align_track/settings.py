"""The ``tracker`` settings: one typed schema for every backend."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional

from align_track.errors import AlignTrackConfigError

BACKENDS = ("sqlite", "aim", "mlflow", "clearml")


@dataclasses.dataclass
class TrackerSettings:
    # Which store: sqlite, aim, mlflow or clearml.
    backend: str = "sqlite"
    # Turn tracking off without removing the callback.
    enabled: bool = True
    # Experiment name; default: the Hydra job name.
    experiment: Optional[str] = None
    # Run name; default: the job name and the job's overrides.
    run_name: Optional[str] = None
    # Tags set on every run.
    tags: Dict[str, str] = dataclasses.field(default_factory=dict)
    # Raise instead of warning when log() gets a value it cannot store.
    strict: bool = False
    # Seconds between background writes.
    flush_interval: float = 1.0
    # Attach Hydra's .hydra/ files and the job log at job end.
    log_hydra_files: bool = True
    # Group single runs (e.g. from a shell loop) as one sweep; also $ALIGN_TRACK_GROUP.
    group: Optional[str] = None
    # Files to read at job end (globs relative to the output dir): JSON numbers
    # become metrics, short strings params; each file is stored as an artifact.
    collect: List[str] = dataclasses.field(default_factory=list)
    # Extra key patterns whose values are masked before anything is stored;
    # null: the built-in list (api_key, token, password, secret, ...); []: no masking.
    redact: Optional[List[str]] = None
    # sqlite: path of the store; default $ALIGN_TRACK_DB or ./experiments.db.
    db: Optional[str] = None
    # mlflow: tracking URI; default sqlite:///mlflow.db in the launch directory.
    tracking_uri: Optional[str] = None
    # aim: repo path or aim://host:port; default ./.aim... in the launch directory.
    repo: Optional[str] = None
    system_tracking_interval: Optional[float] = None
    log_system_params: bool = False
    # clearml
    project: Optional[str] = None
    task_name: Optional[str] = None
    offline: bool = False
    output_uri: Optional[str] = None


FIELDS = tuple(f.name for f in dataclasses.fields(TrackerSettings))


_parsed: Dict[str, TrackerSettings] = {}


def parse_settings(raw: Optional[Mapping[str, Any]]) -> TrackerSettings:
    """Validate settings; the same mapping is checked once per process (each job of
    a sweep reads its settings again, and OmegaConf's checks take tens of ms)."""
    import copy
    import json

    try:
        key = json.dumps(raw or {}, sort_keys=True)
    except (TypeError, ValueError):
        return _parse(raw)
    if key not in _parsed:
        _parsed[key] = _parse(raw)
    return copy.deepcopy(_parsed[key])


def _parse(raw: Optional[Mapping[str, Any]]) -> TrackerSettings:
    """Validate a plain mapping into :class:`TrackerSettings`.

    Raises:
        AlignTrackConfigError: an unknown key, an unknown backend or a value of the
            wrong type; the message names the key and what is accepted.
    """
    raw = dict(raw or {})
    unknown = sorted(k for k in raw if k not in FIELDS)
    if unknown:
        raise AlignTrackConfigError(
            f"tracker.{unknown[0]} is not a tracker setting; "
            f"accepted keys: {', '.join(FIELDS)}"
        )
    backend = raw.get("backend", "sqlite")
    if backend not in BACKENDS:
        raise AlignTrackConfigError(
            f"tracker.backend={backend!r} is unknown; expected one of {', '.join(BACKENDS)}"
        )
    from omegaconf import OmegaConf

    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrackerSettings), raw)
    except Exception as exc:  # omegaconf's ValidationError names the key and type
        key = getattr(exc, "full_key", None) or getattr(exc, "key", "?")
        raise AlignTrackConfigError(f"tracker.{key}: {exc}".splitlines()[0]) from None
    settings = OmegaConf.to_object(merged)
    assert isinstance(settings, TrackerSettings)
    if settings.redact:
        import re

        for pattern in settings.redact:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise AlignTrackConfigError(
                    f"tracker.redact: {pattern!r} is not a regular expression ({exc})"
                ) from None
    if settings.flush_interval <= 0:
        raise AlignTrackConfigError(
            f"tracker.flush_interval={settings.flush_interval} must be > 0 seconds"
        )
    return settings


def as_dict(settings: TrackerSettings) -> Dict[str, Any]:
    return dataclasses.asdict(settings)


def register_schema() -> None:
    """Put the schema in Hydra's ConfigStore so composition checks the types."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(
        group="align_track", name="tracker_schema", node=TrackerSettings, provider="align-track"
    )
