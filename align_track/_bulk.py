"""A writer process for runs that log faster than one thread can store.

A Python process has one interpreter lock: a writer thread that inserts points holds
it for most of each insert and slows the training loop that logs them. When a run
hands the SQLite backend a full batch, the backend starts this writer process and
sends it the points instead, so that the inserts run on another core.

The protocol, over the child's stdin and stdout:

- parent -> child: frames of a 4-byte little-endian length and a marshalled
  ``(run_id, points)``;
- child -> parent: one byte ``k`` per frame once its transaction committed, or ``e``
  followed by the error text, after which the child exits.

The parent keeps each frame's points until its ``k`` arrives. If the child fails
or dies, the backend writes the points that were not acknowledged itself, so none
is lost (a batch the child committed just before it was killed, with its reply
still unsent, can be stored twice).
"""
from __future__ import annotations

import collections
import logging
import marshal
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Deque, List, Optional, Tuple

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# -S: no site-packages (the child needs only the standard library and this package)
_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); "
          "from align_track._bulk import serve; sys.exit(serve(sys.argv[2]))")
_F_SETPIPE_SZ = 1031  # Linux: grow the pipe so a whole batch fits without blocking
_PIPE_BYTES = 1 << 20

Batch = Tuple[str, List[Any]]


class BulkWriter:
    """The parent's end: sends batches, tracks which the child has stored.

    Args:
        db: absolute path of the SQLite store.
    """

    def __init__(self, db: str):
        self.db = db
        self.pid = os.getpid()
        self.error: Optional[str] = None
        self._unacked: Deque[Batch] = collections.deque()
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _CHILD, _PACKAGE_ROOT, db],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
        )
        try:
            import fcntl

            fcntl.fcntl(self._proc.stdin.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
        except (ImportError, OSError):
            pass  # a smaller pipe only means more waits
        logger.info("points of %s are written by process %d", db, self._proc.pid)

    @property
    def child_pid(self) -> int:
        return self._proc.pid

    def send(self, run_id: str, points: List[Any]) -> bool:
        """Hand over one batch; False once the child has failed (see :meth:`take_back`)."""
        if self.error is not None or os.getpid() != self.pid:
            return False
        data = marshal.dumps((run_id, points))
        with self._lock:
            self._unacked.append((run_id, points))
            try:
                self._proc.stdin.write(len(data).to_bytes(4, "little") + data)
                self._proc.stdin.flush()
            except (OSError, ValueError) as exc:
                self._read_last_replies()  # what it stored before it went
                self._fail(f"the writer process stopped ({exc})")
                return False
            self._read_replies(block=False)
        return self.error is None

    def wait(self) -> bool:
        """Block until the child has stored every batch sent; False if it failed."""
        with self._lock:
            while self._unacked and self.error is None:
                self._read_replies(block=True)
        return self.error is None

    def take_back(self) -> List[Batch]:
        """The batches the child did not store, oldest first; the writer is done."""
        with self._lock:
            batches = list(self._unacked)
            self._unacked.clear()
        self.close()
        return batches

    def close(self) -> None:
        """Let the child finish what it holds and exit."""
        proc = self._proc
        if proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            logger.warning("writer process %d did not exit; stopping it", proc.pid)
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def _read_replies(self, block: bool) -> None:
        fd = self._proc.stdout.fileno()
        while self._unacked:
            if not block and not select.select([fd], [], [], 0)[0]:
                return
            data = os.read(fd, 65536)
            if not data:
                self._fail("the writer process exited")
                return
            oks = len(data) - len(data.lstrip(b"k"))
            for _ in range(oks):
                self._unacked.popleft()
            if oks < len(data):  # b"e" and the child's error text
                rest = data[oks + 1:] + self._proc.stdout.read()
                self._fail(rest.decode("utf-8", "replace").strip() or "unknown error")
                return
            if block:
                return

    def _read_last_replies(self) -> None:
        """The child has gone: count the replies it wrote before, so that the
        batches it stored are not written again."""
        fd = self._proc.stdout.fileno()
        while self._unacked and select.select([fd], [], [], 5.0)[0]:
            data = os.read(fd, 65536)
            if not data:
                return
            oks = len(data) - len(data.lstrip(b"k"))
            for _ in range(min(oks, len(self._unacked))):
                self._unacked.popleft()
            if oks < len(data):
                return

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
            logger.warning("writer process for %s failed: %s; writing in this process",
                           self.db, why)


def serve(db: str) -> int:
    """The child: store each batch read from stdin, reply on stdout, exit at EOF."""
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group: the parent
    # decides when the runs end, and this process stops when its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from align_track.backends.sqlite import SQLiteBackend

    backend = SQLiteBackend(db, bulk=False)
    stdin = sys.stdin.buffer
    replies = _Replies(sys.stdout.fileno())
    try:
        while True:
            head = stdin.read(4)
            if len(head) < 4:
                return 0
            run_id, points = marshal.loads(stdin.read(int.from_bytes(head, "little")))
            try:
                backend.log_metrics(run_id, points)
            except Exception as exc:  # reported to the parent, which takes over
                replies.send(b"e" + f"{type(exc).__name__}: {exc}".encode())
                return 1
            replies.send(b"k")
    finally:
        backend.close()


class _Replies:
    """The child's replies; once the parent is gone, the batches still in the pipe
    are stored all the same, with nobody to tell."""

    def __init__(self, fd: int):
        self.fd: Optional[int] = fd

    def send(self, data: bytes) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, data)
        except OSError:  # BrokenPipeError: the parent died
            self.fd = None
