"""Backends, each imported only when selected."""
from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any, Callable, Dict, Tuple

from align_track.errors import BackendUnavailableError

if TYPE_CHECKING:
    from align_track.backends.base import Backend
    from align_track.settings import TrackerSettings

# backend name -> (module, class, SDK module to check, extra to install)
REGISTRY: Dict[str, Tuple[str, str, str, str]] = {
    "sqlite": ("align_track.backends.sqlite", "SQLiteBackend", "sqlite3", ""),
    "mlflow": ("align_track.backends.mlflow", "MLflowBackend", "mlflow", "mlflow"),
    "aim": ("align_track.backends.aim", "AimBackend", "aim", "aim"),
    "clearml": ("align_track.backends.clearml", "ClearMLBackend", "clearml", "clearml"),
}


def check_installed(backend: str) -> None:
    """Raise :class:`BackendUnavailableError` naming the extra if the SDK is missing."""
    _, _, sdk, extra = REGISTRY[backend]
    try:
        found = importlib.util.find_spec(sdk) is not None
    except (ImportError, ValueError):  # blocked or half-installed
        found = False
    if not found:
        raise BackendUnavailableError(
            f"tracker.backend={backend} needs the {sdk} package; install it with: "
            f'pip install "align-track[{extra}]"'
        )


def backend_class(backend: str) -> Callable[..., "Backend"]:
    module, cls, _, _ = REGISTRY[backend]
    check_installed(backend)
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise BackendUnavailableError(
                f"tracker.backend={backend} is not built into this align-track yet"
            ) from None
        raise
    return getattr(mod, cls)


def build(settings: "TrackerSettings", launch_dir: str) -> Tuple[Tuple[str, str], Callable[[], Any]]:
    """A cache key and a factory for the backend these settings select."""
    cls: Any = backend_class(settings.backend)
    key, kwargs = cls.from_settings(settings, launch_dir)
    if settings.backend == "sqlite":
        return (settings.backend, key), lambda: cls(**kwargs)

    def spooling() -> Any:
        # a server backend keeps its writes locally while the server is away
        from align_track.spool import Spool, SpoolingBackend, spool_path

        return SpoolingBackend(cls(**kwargs), Spool(spool_path(launch_dir)),
                               settings.backend, kwargs)

    return (settings.backend, key), spooling
