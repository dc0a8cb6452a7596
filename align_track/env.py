"""Environment variables align-track reads, and where data goes by default."""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # the CLI imports this module: typing stays unloaded at run time
    from typing import Optional

#: Path of the SQLite store, used when ``tracker.db`` is not set.
DB_VAR = "ALIGN_TRACK_DB"
#: Groups single runs as one sweep, like ``tracker.group``.
GROUP_VAR = "ALIGN_TRACK_GROUP"
#: Scheduler job ids that survive a requeue: a run with the same one resumes.
SCHEDULER_JOB_VARS = ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID")
#: Where server-backend writes wait while the server is away (launch directory).
SPOOL_FILE = "align-track-spool.db"
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


def scheduler_job_id() -> Optional[str]:
    """The batch scheduler's id for this job (kept across requeues), if any."""
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"slurm:{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    for var in SCHEDULER_JOB_VARS[1:]:
        if os.environ.get(var):
            return f"{var}:{os.environ[var]}"
    return None
