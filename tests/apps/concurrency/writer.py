"""Log N points to one run of experiment ``shared`` in DB once the file GO exists.

Usage: python writer.py DB GO N
"""
import os
import sys
import time
from pathlib import Path

from align_track.backends import sqlite  # noqa: F401 - imported before the start line
from align_track.tracker import track_run


def main() -> None:
    db, go, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    print("WAITING", flush=True)
    while not go.exists():
        time.sleep(0.002)
    with track_run("shared", db=db, name=f"writer-{os.getpid()}") as run:
        print("OPEN", run.id, flush=True)
        for i in range(n):
            run.log({"v": float(i)}, step=i)
    print("DONE", run.id, flush=True)


if __name__ == "__main__":
    main()
