"""Plain records passed from the run handle to a backend."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

# One metric point as the handle buffers it: (name, step, value, wall time, context).
# ``step`` is None when the caller gave none; the writer numbers it before a backend
# sees it. ``context`` is a canonical JSON text ("" for no context).
Point = Tuple[str, Optional[int], float, float, str]

FINISHED = "finished"
FAILED = "failed"
INTERRUPTED = "interrupted"
CRASHED = "crashed"
RUNNING = "running"
STATUSES = (RUNNING, FINISHED, FAILED, INTERRUPTED, CRASHED)


@dataclasses.dataclass
class RunRecord:
    """Everything known about a run when it opens.

    ``config`` is the composed config as plain containers, resolved leaf by leaf;
    ``config_yaml`` is the same config unresolved. ``params`` is ``config`` flattened
    to dotted keys (see :mod:`align_track.flatten`).
    """

    id: str
    experiment: str
    name: str
    started_at: float
    config: Dict[str, Any] = dataclasses.field(default_factory=dict)
    config_yaml: str = ""
    params: Dict[str, Any] = dataclasses.field(default_factory=dict)
    overrides: List[str] = dataclasses.field(default_factory=list)
    choices: Dict[str, Any] = dataclasses.field(default_factory=dict)
    tags: Dict[str, str] = dataclasses.field(default_factory=dict)
    output_dir: Optional[str] = None
    sweep_id: Optional[str] = None
    job_num: Optional[int] = None
    sweep_dir: Optional[str] = None
    env: Dict[str, Any] = dataclasses.field(default_factory=dict)
    git: Dict[str, Any] = dataclasses.field(default_factory=dict)
    # Same for a job requeued by its scheduler: such a run resumes (see env.py).
    identity: Optional[str] = None


@dataclasses.dataclass
class RunEnd:
    """How a run closed."""

    status: str
    ended_at: float
    error: Optional[Dict[str, str]] = None  # type, message, traceback
    return_value: Any = None
    dropped: int = 0  # values log() refused


@dataclasses.dataclass
class SweepRecord:
    """A multirun as one unit."""

    id: str
    experiment: str
    started_at: float
    dir: Optional[str] = None
    command: List[str] = dataclasses.field(default_factory=list)
    overrides: List[str] = dataclasses.field(default_factory=list)
    sweeper: Optional[str] = None
    launcher: Optional[str] = None
    jobs_expected: Optional[int] = None  # when the sweeper's plan is known up front
    ended_at: Optional[float] = None
