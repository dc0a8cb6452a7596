"""A job that logs a known number of points and then waits for a signal.

With OWN_SIGTERM_MARKER set, the app installs its own SIGTERM handler before Hydra
starts (as submitit does); the handler writes that file and exits with status 0.
"""
import multiprocessing
import os
import signal
import sys
import threading
import time

import hydra
from omegaconf import DictConfig

import align_track
from align_track import _context  # test scaffolding: to wait for the job's end

MARKER = os.environ.get("OWN_SIGTERM_MARKER")
if MARKER:
    def _own_handler(signum, frame):
        with open(MARKER, "w") as fh:
            fh.write(f"handled {signum}")
        sys.exit(0)

    signal.signal(signal.SIGTERM, _own_handler)


def _child(n: int) -> None:
    for i in range(n):
        align_track.log({"child": float(i)}, step=i)
    print("CHILD DONE", flush=True)


def _late_logger(run, logged_in_job: threading.Event) -> None:
    for i in range(10):
        # a thread with no run bound: log() reaches the only open run
        align_track.log({"tick": float(i)}, step=i)
    logged_in_job.set()
    while run.status == "running" or _context.open_runs():  # until the job has ended
        time.sleep(0.01)
    for i in range(10):
        align_track.log({"late": float(i)}, step=i)
        run.log({"late_direct": float(i)}, step=i)
    print("LATE DONE", flush=True)


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    if cfg.mode == "thread":
        logged = threading.Event()
        run = align_track.current_run()
        threading.Thread(target=_late_logger, args=(run, logged)).start()
        logged.wait()
        return
    if cfg.mode == "flood":  # log until a signal comes, most of the time in flush()
        i, ready_at, log = 0, cfg.points, align_track.log
        while True:
            log({"m": float(i)}, step=i)
            i += 1
            if i == ready_at:
                print("READY", flush=True)
    for i in range(cfg.start, cfg.start + cfg.points):
        align_track.log({"m": float(i)}, step=i)
    if cfg.mode == "fork":
        child = multiprocessing.get_context("fork").Process(target=_child, args=(5,))
        child.start()
        child.join()
        for i in range(cfg.start + cfg.points, cfg.start + 2 * cfg.points):
            align_track.log({"m": float(i)}, step=i)
        print(f"CHILD EXIT {child.exitcode}", flush=True)
        return
    time.sleep(cfg.wait)
    print("READY", flush=True)
    if cfg.mode == "block":
        time.sleep(cfg.hold)


if __name__ == "__main__":
    main()
