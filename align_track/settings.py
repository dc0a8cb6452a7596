"""The ``tracker`` settings: one typed schema for every backend."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, List, Mapping, Optional

from align_track.errors import AlignTrackConfigError

logger = logging.getLogger(__name__)

#: The settings of one backend only; every option holds the others.
BACKEND_FIELDS = {
    "sqlite": ("db",),
    "aim": ("repo", "system_tracking_interval", "log_system_params"),
    "mlflow": ("tracking_uri",),
    "clearml": ("project", "task_name", "offline", "output_uri"),
}
BACKENDS = tuple(BACKEND_FIELDS)


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
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrackerSettings)
             if f.default is not dataclasses.MISSING}
#: Each setting's type, as written in the class (annotations are text here).
_TYPES = {f.name: str(f.type) for f in dataclasses.fields(TrackerSettings)}
#: Container settings whose null means empty (``collect`` in the tracker options).
_EMPTY = {"Dict[str, str]": dict, "List[str]": list}
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _convert(value: Any, kind: str) -> Any:
    """``value`` as a setting of type ``kind`` takes it, converting as OmegaConf
    would (``"1.5"`` to 1.5, ``"yes"`` to True, a number to its text)."""
    if kind.startswith("Optional["):
        return None if value is None else _convert(value, kind[len("Optional["):-1])
    if value is None:
        if kind in _EMPTY:  # how the tracker option stores an empty list or mapping
            return _EMPTY[kind]()
        raise ValueError("null is not allowed")
    if kind == "str":
        if isinstance(value, (str, int, float)):  # bool is an int
            return value if isinstance(value, str) else str(value)
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind == "Dict[str, str]":
        if isinstance(value, Mapping):
            return {str(k): _convert(v, "str") for k, v in value.items()}
    elif kind == "List[str]":
        if isinstance(value, (list, tuple)):
            return [_convert(v, "str") for v in value]
    else:  # a type this function does not know: the class changed without it
        raise TypeError(f"no conversion to {kind}")
    raise ValueError(f"{value!r} ({type(value).__name__}) is not a valid value")


def parse_settings(raw: Optional[Mapping[str, Any]]) -> TrackerSettings:
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
    values = {}
    for name, value in raw.items():
        kind = _TYPES[name]
        _check_entries(name, value, kind)
        try:
            values[name] = _convert(value, kind)
        except (TypeError, ValueError) as exc:
            raise AlignTrackConfigError(
                f"tracker.{name}: {exc} (expected {kind}){_hint(name, value, kind)}"
            ) from None
    settings = TrackerSettings(**values)
    if settings.redact:
        import re

        for pattern in settings.redact:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise AlignTrackConfigError(
                    f"tracker.redact: {pattern!r} is not a regular expression ({exc})"
                ) from None
    _warn_other_backends(raw, settings.backend)
    if not 0 < settings.flush_interval < float("inf"):
        raise AlignTrackConfigError(
            f"tracker.flush_interval={settings.flush_interval} must be a number of "
            "seconds > 0"
        )
    return settings


#: An entry of each list setting, for messages.
_EXAMPLE = {"collect": "scores.json", "redact": "my_token"}


def _check_entries(name: str, value: Any, kind: str) -> None:
    """Name the entry of a list or mapping setting that is not text."""
    if "Dict[" in kind and isinstance(value, Mapping):
        entries: Any = ((f"tracker.{name}.{key}", entry) for key, entry in value.items())
    elif "List[" in kind and isinstance(value, (list, tuple)):
        entries = ((f"tracker.{name}[{i}]", entry) for i, entry in enumerate(value))
    else:
        return
    for where, entry in entries:
        try:
            _convert(entry, "str")
        except ValueError as exc:
            raise AlignTrackConfigError(
                f"{where}: {exc} (expected text); write it as in "
                + ("+tracker.tags.team=nlp" if "Dict[" in kind
                   else _list_example(name))) from None


def _list_example(name: str) -> str:
    return f"tracker.{name}=[{_EXAMPLE.get(name, 'x')}]"


def _hint(name: str, value: Any, kind: str) -> str:
    if "List[" in kind and isinstance(value, str):
        return f"; write a list, as in tracker.{name}=[{value}]"
    if "List[" in kind:
        return f"; write a list, as in {_list_example(name)}"
    if "Dict[" in kind:
        return f"; write a mapping, as in tracker.{name}={{team: nlp}}"
    return ""


_warned_keys: set = set()


def _warn_other_backends(raw: Mapping[str, Any], backend: str) -> None:
    """Say (once per key) that a setting of another backend has no effect."""
    for other, keys in BACKEND_FIELDS.items():
        for key in keys:
            if other != backend and key in raw and raw[key] != _DEFAULTS[key] \
                    and (key, backend) not in _warned_keys:
                _warned_keys.add((key, backend))
                logger.warning(
                    "tracker.%s is a setting of the %s backend; with tracker.backend=%s "
                    "it has no effect\n  use +tracker=%s to track with %s", key, other,
                    backend, other, other)


def as_dict(settings: TrackerSettings) -> Dict[str, Any]:
    """The settings as a mapping (containers shared: parse_settings copies them)."""
    return {name: getattr(settings, name) for name in FIELDS}


def register_options() -> None:
    """Put the ``tracker`` config group (one option per backend) in Hydra's
    ConfigStore.

    Each option sets every setting of its backend to its default (so
    ``tracker.db=...`` overrides it without a ``+``) and registers the callback
    under ``hydra.callbacks.tracker``. The nodes are plain mappings, without the
    other backends' settings: Hydra composes them twice a job in a sweep, and each
    key, a typed node or a schema in a defaults list adds to that every time. The
    types are checked by :func:`parse_settings` when the callback reads them.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    defaults = dataclasses.asdict(TrackerSettings())
    others = {key for keys in BACKEND_FIELDS.values() for key in keys}
    for backend, own in BACKEND_FIELDS.items():
        # an empty list is stored as null: Hydra builds a node for each container
        # in every composition, twice a job in a sweep. (A list an app sets before
        # this option is replaced either way; tags stay a mapping, so an app's own
        # tags merge with the option's.)
        settings = {key: None if value == [] else value
                    for key, value in defaults.items() if key not in others or key in own}
        store.store(
            group="tracker", name=backend, package="_global_", provider="align-track",
            node={
                "tracker": {**settings, "backend": backend},
                "hydra": {"callbacks": {"tracker": {
                    "_target_": "align_track.TrackerCallback",
                    "settings": "${tracker}",
                }}},
            },
        )
