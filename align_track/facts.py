"""Facts about the process and the code a run comes from."""
from __future__ import annotations

import getpass
import logging
import os
import platform
import socket
import sys
import threading
from typing import Any, Dict, Optional

logger = logging.getLogger(__name__)

_git_cache: Dict[str, Dict[str, Any]] = {}


_process_facts: Dict[int, Dict[str, Any]] = {}


def environment(store: Optional[str] = None) -> Dict[str, Any]:
    """Host, process and interpreter facts. Environment variables are not captured.

    What cannot change in a process is read once per process (by pid, so a forked
    launcher worker reads its own); the command line and cwd are read every time.
    """
    pid = os.getpid()
    if pid not in _process_facts:
        _process_facts.clear()
        _process_facts[pid] = _read_process_facts(pid)
    facts: Dict[str, Any] = {
        **_process_facts[pid],
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
    }
    if store is not None:
        facts["store"] = store
    return facts


def _read_process_facts(pid: int) -> Dict[str, Any]:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = None
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "user": user,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
    }


_git_pending: Dict[str, threading.Thread] = {}


def prefetch_git(directory: str) -> None:
    """Start reading :func:`git_state` of ``directory`` on a thread: git runs while
    Hydra composes the jobs' configs, and the first job does not wait for it (on a
    large checkout ``git status`` takes a while)."""
    directory = os.path.abspath(directory)
    if directory in _git_cache or directory in _git_pending:
        return

    def read() -> None:
        _git_cache[directory] = _read_git(directory)

    thread = threading.Thread(target=read, name="align-track-git", daemon=True)
    _git_pending[directory] = thread
    thread.start()


def git_state(directory: str) -> Dict[str, Any]:
    """Commit, branch and dirtiness of the checkout holding ``directory``.

    Empty when ``directory`` is not in a git checkout or git is not installed.
    Cached per directory for the life of the process: a sweep asks once.
    """
    directory = os.path.abspath(directory)
    pending = _git_pending.pop(directory, None)
    if pending is not None:
        pending.join()
    if directory not in _git_cache:
        _git_cache[directory] = _read_git(directory)
    return dict(_git_cache[directory])


def _read_git(directory: str) -> Dict[str, Any]:
    if not _may_be_checkout(directory):
        return {}  # no git process to start: nothing to read
    import shutil

    if shutil.which("git") is None:
        return {}
    # one call for the three names (rev-parse prints one line per argument)
    names = _git(directory, "rev-parse", "--show-toplevel", "HEAD", "--abbrev-ref", "HEAD")
    lines = names.splitlines() if names is not None else []
    if len(lines) != 3:
        return {}  # not a checkout, or one with no commit yet
    root, commit, branch = lines
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "branch": None if branch == "HEAD" else branch,  # a detached HEAD has none
        "dirty": bool(status) if status is not None else None,
        "root": root,
    }


def _may_be_checkout(directory: str) -> bool:
    """False when git would find no repository for ``directory``: no ``.git`` in it
    or above it, and no ``GIT_DIR`` naming one elsewhere."""
    if os.environ.get("GIT_DIR") or os.environ.get("GIT_WORK_TREE"):
        return True
    path = os.path.abspath(directory)
    while True:
        if os.path.exists(os.path.join(path, ".git")):
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


def _git(directory: str, *args: str) -> Optional[str]:
    import subprocess

    try:
        out = subprocess.run(
            ["git", *args],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("git %s failed: %s", args[0], exc)
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip()
