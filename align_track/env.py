"""Environment variables align-track reads, and where data goes by default."""
from __future__ import annotations

import os
from typing import Optional

#: Path of the SQLite store, used when ``tracker.db`` is not set.
DB_VAR = "ALIGN_TRACK_DB"
#: File name of the default store, in the directory the app is launched from.
DEFAULT_DB = "experiments.db"


def default_db(launch_dir: Optional[str] = None) -> str:
    """``$ALIGN_TRACK_DB`` if set, else ``experiments.db`` in ``launch_dir``."""
    base = launch_dir or os.getcwd()
    value = os.environ.get(DB_VAR)
    return anchor(value if value else DEFAULT_DB, base)


def anchor(path: str, launch_dir: str) -> str:
    """An absolute path, taking a relative one from the launch directory."""
    path = os.path.expanduser(path)
    if not os.path.isabs(path):
        path = os.path.join(launch_dir, path)
    return os.path.abspath(path)
