"""Close runs that Hydra never reports as ended: Ctrl-C, SIGTERM, an early exit."""
from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from typing import Any, Dict, List, Optional

from align_track import _context
from align_track.records import FAILED, INTERRUPTED

logger = logging.getLogger(__name__)

_previous: Dict[int, Any] = {}
_interrupted_by: Optional[str] = None
_atexit_registered = False


def install() -> None:
    """Catch SIGINT and SIGTERM while a job runs; chains to the handlers found."""
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_close_at_exit)
        _atexit_registered = True
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for sig in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        if current is _on_signal:
            continue
        _previous[sig] = current
        signal.signal(sig, _on_signal)


def uninstall() -> None:
    """Put back the handlers found by :func:`install` (at job end)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, previous in list(_previous.items()):
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
    _previous.clear()


def close_open_runs(status: str, error: Optional[Dict[str, str]]) -> None:
    from align_track.tracker import all_trackers

    for tracker in all_trackers():
        tracker.close_all(status, error=error)


def _on_signal(signum: int, frame: Any) -> None:
    global _interrupted_by
    name = signal.Signals(signum).name
    _interrupted_by = name
    held = _locks_held()
    if held:
        # The signal stopped this thread inside a store write (or while it held one
        # of our locks): raising here would lose the batch being written, and closing
        # runs here would nest a write inside it. Let the write finish, then take
        # the signal again.
        threading.Thread(target=_resignal_after, args=(signum, held),
                         name="align-track-signal", daemon=True).start()
        return
    previous = _previous.get(signum, signal.SIG_DFL)
    if signum == signal.SIGINT:
        # KeyboardInterrupt unwinds the job; runs are closed at exit.
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt
        return
    logger.warning("received %s: closing open runs as interrupted", name)
    close_open_runs(INTERRUPTED, {"type": name, "message": f"process received {name}",
                                  "traceback": ""})
    uninstall()
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _locks_held() -> List[Any]:
    """The tracking locks this thread owns (or, for plain locks, anyone holds).

    Reads the registries without taking their locks: this runs in a signal handler,
    which may have stopped the thread while it held them.
    """
    from align_track import tracker as tracker_module

    held: List[Any] = []
    plain = [tracker_module._registry_lock, _context._lock]
    for tracker in list(tracker_module._trackers.values()):
        plain.append(tracker._lock)
        reentrant = [run._io_lock for run in list(tracker._runs.values())]
        reentrant.append(getattr(tracker.backend, "_lock", None))
        for lock in reentrant:
            is_owned = getattr(lock, "_is_owned", None)
            if is_owned is not None and is_owned():
                held.append(lock)
    held.extend(lock for lock in plain if lock.locked())
    return held


def _resignal_after(signum: int, locks: List[Any]) -> None:
    for lock in locks:  # each returns as soon as the interrupted thread lets it go
        with lock:
            pass
    os.kill(os.getpid(), signum)


def _close_at_exit() -> None:
    if _interrupted_by is not None:
        status = INTERRUPTED
        error = {"type": _interrupted_by,
                 "message": f"process received {_interrupted_by}", "traceback": ""}
    else:
        exc = getattr(sys, "last_value", None)
        if isinstance(exc, KeyboardInterrupt):
            status, error = INTERRUPTED, {"type": "KeyboardInterrupt", "message": "",
                                          "traceback": ""}
        else:
            status = FAILED
            error = {"type": type(exc).__name__ if exc else "Exit",
                     "message": str(exc) if exc else
                     "the process exited before the job ended (sys.exit or an "
                     "uncaught BaseException)", "traceback": ""}
    close_open_runs(status, error)
