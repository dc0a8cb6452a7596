"""Helpers shared by the orchestrator and the workers: timing, environment, files."""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
NETGUARD = ROOT / "tests" / "netguard"
#: Set in every process the suite starts: no telemetry, ClearML offline only.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "AIM_UI_TELEMETRY_ENABLED": "0",
    "CLEARML_OFFLINE_MODE": "1",
    "CLEARML_NO_DEFAULT_SERVER": "1",
    "CLEARML_API_HOST": "http://127.0.0.1:9",
    "CLEARML_WEB_HOST": "http://127.0.0.1:9",
    "CLEARML_FILES_HOST": "http://127.0.0.1:9",
    "GIT_PYTHON_REFRESH": "quiet",
    "HYDRA_FULL_ERROR": "1",
}
MARK = "@@BENCH@@"


def stats(values: Sequence[float]) -> Dict[str, Any]:
    """min, median and every sample of a repeated figure."""
    vals = [float(v) for v in values]
    return {"min": min(vals), "median": statistics.median(vals), "samples": vals}


def best(values: Sequence[float]) -> Dict[str, Any]:
    """Like :func:`stats` for figures where larger is better (rates): ``min`` is the
    worst sample and ``max`` the best."""
    out = stats(values)
    out["max"] = max(out["samples"])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(tmp: Path, extra: Optional[Dict[str, str]] = None,
              guard: bool = True) -> Dict[str, str]:
    """The environment of every benchmark subprocess.

    With ``guard``, the tests' network guard is put on PYTHONPATH: a connection
    outside 127.0.0.0/8 fails and is logged in ``tmp/netguard.log`` (reported in the
    results). Without it, a process starts as a user's would (the guard's imports
    cost tens of ms); used to time align-track's own commands, which the tests run
    under the guard.
    """
    env = dict(os.environ)
    # a user's Python caches bytecode: a shell that turns that off would have every
    # align-track command compile its modules, while the peers' came compiled by pip
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(QUIET_ENV)
    conf = tmp / "clearml.conf"
    if not conf.exists():
        cache = tmp / "clearml-cache"
        cache.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            "api { api_server: \"http://127.0.0.1:9\", web_server: \"http://127.0.0.1:9\","
            " files_server: \"http://127.0.0.1:9\" }\n"
            f"sdk {{ storage {{ cache {{ default_base_dir: \"{cache}\" }} }} }}\n"
        )
    env["CLEARML_CONFIG_FILE"] = str(conf)
    env["CLEARML_CACHE_DIR"] = str(tmp / "clearml-cache")
    paths = ([str(NETGUARD)] if guard else []) + [str(ROOT)] + [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if guard:
        env["ALIGN_TRACK_NETGUARD"] = str(tmp / "netguard.log")
    env.update(extra or {})
    return env


def run_worker(case: str, params: Dict[str, Any], tmp: Path, timeout: float = 600,
               env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run ``benchmarks.workers`` ``case`` in a fresh interpreter; return its result."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.workers", case, json.dumps(params)],
        cwd=str(tmp), env=env or child_env(tmp), capture_output=True, text=True,
        timeout=timeout,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"worker {case} failed ({proc.returncode}):\n"
                       f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def emit(result: Dict[str, Any]) -> None:
    """Print a worker's result where :func:`run_worker` finds it."""
    sys.stdout.write(MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def timed_cmd(argv: List[str], cwd: Path, env: Dict[str, str], timeout: float = 600) -> float:
    """Wall seconds of one command; raises if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=timeout)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (or of the file itself)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def sqlite_bytes(db: Path) -> int:
    """The database file plus its -wal and -shm files, if any."""
    return sum(Path(str(db) + s).stat().st_size for s in ("", "-wal", "-shm")
               if Path(str(db) + s).exists())


def checkpoint(db: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(str(db))
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def per_point(fn: Callable[[int], None], n: int) -> float:
    """Seconds per point of ``fn(n)``, which does ``n`` points of work."""
    t0 = time.perf_counter()
    fn(n)
    return (time.perf_counter() - t0) / n
