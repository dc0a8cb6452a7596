"""Interrupted, terminated, killed, forked, and many writers at once.

Each case runs tests/apps/faults/app.py in a subprocess and sends the signal as a shell
(Ctrl-C: SIGINT to the process group) or a scheduler (SIGTERM, SIGKILL to the process)
would; the store is then read back through the `experiments` CLI's JSON.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from align_track.backends.sqlite import warn_if_network_fs as warn
from conftest import experiments, experiments_json, run_app

APPS = Path(__file__).parent / "apps"
WRITER = APPS / "concurrency" / "writer.py"
POINTS = 200


@pytest.fixture
def app(tmp_path: Path) -> Path:
    shutil.copytree(APPS / "faults", tmp_path / "faults",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "faults" / "app.py"


class Started:
    """A process whose merged stdout/stderr is read by a thread, line by line."""

    def __init__(self, cmd: List[str], cwd: Path, env: Optional[Dict[str, str]] = None):
        self.proc = subprocess.Popen(
            cmd, cwd=str(cwd), env={**os.environ, **(env or {})}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.output: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.lines.get(timeout=0.2):
                    return
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
        self.proc.kill()
        raise AssertionError(f"no {text!r} line:\n{self.text()}")

    def finish(self, timeout: float = 90) -> int:
        rc = self.proc.wait(timeout=timeout)
        time.sleep(0.1)  # let the reader thread take the last lines
        return rc

    def text(self) -> str:
        return "".join(self.output)


def _start(app: Path, *args: str, env: Optional[Dict[str, str]] = None) -> Started:
    return Started([sys.executable, str(app), *args], app.parent, env)


def _db(app: Path) -> str:
    return str(app.parent / "experiments.db")


def _only_run(app: Path) -> dict:
    [summary] = experiments_json("--db", _db(app), "list", "--limit", "0")
    return experiments_json("--db", _db(app), "show", summary["id"])


def _steps(run: dict, metric: str = "m") -> List[int]:
    return [p["step"] for p in run["metrics"].get(metric, [])]


def _signal_tracked_and_untracked(app: Path, sig: int, group: bool,
                                  env: Optional[Dict[str, str]] = None) -> tuple:
    """Start the app with and without tracking, signal both once ready; exit codes."""
    # flush_interval=60: no point reaches the store before the signal unless the
    # signal handling itself flushes them
    tracked = _start(app, "+tracker=sqlite", "tracker.flush_interval=60", env=env)
    plain = _start(app, "hydra.run.dir=untracked", env=env)
    for started in (tracked, plain):
        started.wait_for("READY")
    time.sleep(1.2)
    for started in (tracked, plain):
        if group:
            os.killpg(started.proc.pid, sig)
        else:
            started.proc.send_signal(sig)
    return tracked.finish(), plain.finish(), tracked


def test_ctrl_c_marks_the_run_interrupted_and_exits_as_without_tracking(
        app: Path) -> None:
    rc_tracked, rc_plain, tracked = _signal_tracked_and_untracked(
        app, signal.SIGINT, group=True)

    assert rc_tracked == rc_plain, tracked.text()
    assert "KeyboardInterrupt" in tracked.text()
    run = _only_run(app)
    assert run["status"] == "interrupted"
    assert run["error"]["type"] in ("SIGINT", "KeyboardInterrupt")
    assert run["ended_at"] is not None
    assert _steps(run) == list(range(POINTS))


def test_sigterm_marks_the_run_interrupted_and_exits_as_without_tracking(
        app: Path) -> None:
    rc_tracked, rc_plain, tracked = _signal_tracked_and_untracked(
        app, signal.SIGTERM, group=False)

    assert rc_plain == -signal.SIGTERM
    assert rc_tracked == rc_plain, tracked.text()
    run = _only_run(app)
    assert run["status"] == "interrupted"
    assert run["error"]["type"] == "SIGTERM"
    assert _steps(run) == list(range(POINTS))


def test_sigterm_chains_to_the_handler_installed_before(
        app: Path, tmp_path: Path) -> None:
    marker = tmp_path / "handled"
    plain_marker = tmp_path / "handled-plain"
    tracked = _start(app, "+tracker=sqlite", "tracker.flush_interval=60",
                     env={"OWN_SIGTERM_MARKER": str(marker)})
    plain = _start(app, "hydra.run.dir=untracked",
                   env={"OWN_SIGTERM_MARKER": str(plain_marker)})
    for started in (tracked, plain):
        started.wait_for("READY")
    time.sleep(1.2)
    for started in (tracked, plain):
        started.proc.send_signal(signal.SIGTERM)

    assert tracked.finish() == plain.finish() == 0, tracked.text()
    assert marker.read_text() == f"handled {int(signal.SIGTERM)}"
    run = _only_run(app)
    assert run["status"] == "interrupted"
    assert run["error"]["type"] == "SIGTERM"
    assert _steps(run) == list(range(POINTS))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_store_write_loses_nothing(app: Path, sig: int) -> None:
    # The job logs without pause and the writer thread never runs (flush_interval),
    # so the main thread spends most of its time in back-pressure flushes: the signal
    # lands inside a transaction.
    job = _start(app, "+tracker=sqlite", "mode=flood", "points=150000",
                 "tracker.flush_interval=1000")
    job.wait_for("READY")
    time.sleep(0.5)
    os.killpg(job.proc.pid, sig)

    assert job.finish() == -sig, job.text()[-3000:]
    assert "could not" not in job.text() and "transaction" not in job.text()
    [run] = experiments_json("--db", _db(app), "query",
                             "SELECT status, error FROM runs")
    assert run["status"] == "interrupted"
    assert json.loads(run["error"])["type"] == signal.Signals(sig).name
    [count] = experiments_json("--db", _db(app), "query",
                               "SELECT count(*) AS n, max(step) AS last,"
                               " count(DISTINCT step) AS steps FROM metrics")
    # every point from step 0 to the last one stored: no batch lost, none twice
    assert count["n"] == count["steps"] == count["last"] + 1
    assert count["n"] >= 150000


def test_sigkill_leaves_a_crashed_run_with_its_flushed_points(app: Path) -> None:
    # wait=2.5: the writer (every 1 s) has stored the points before READY
    job = _start(app, "+tracker=sqlite", "wait=2.5")
    job.wait_for("READY")
    job.proc.kill()
    assert job.finish() == -signal.SIGKILL

    db = _db(app)
    [summary] = experiments_json("--db", db, "list")
    assert summary["status"] == "crashed"  # the process is gone
    [crashed] = experiments_json("--db", db, "list", "--status", "crashed")
    assert crashed["id"] == summary["id"]
    assert experiments_json("--db", db, "query", "SELECT count(*) AS n,"
                            " count(DISTINCT step) AS steps FROM metrics") == [
        {"n": POINTS, "steps": POINTS}]
    stored = "SELECT status FROM runs WHERE id = '%s'" % summary["id"]
    assert experiments_json("--db", db, "query", stored) == [{"status": "running"}]

    run_app(app, "+tracker=sqlite", "mode=quick", "points=3")  # the next job opens it

    assert experiments_json("--db", db, "query", stored) == [{"status": "crashed"}]
    statuses = {r["id"]: r["status"] for r in experiments_json("--db", db, "list")}
    assert sorted(statuses.values()) == ["crashed", "finished"]
    assert experiments_json("--db", db, "sweeps") == []


def test_requeued_job_resumes_its_run(app: Path) -> None:
    # submitit and SLURM requeue a preempted job with the same job id
    # and the same composed config, so the same output dir
    env = {"SUBMITIT_LOCAL_JOB_ID": "123"}
    first = _start(app, "+tracker=sqlite", "points=5", "hydra.run.dir=outputs/job",
                   env=env)
    first.wait_for("READY")
    time.sleep(1.2)
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish() == -signal.SIGTERM
    [interrupted] = experiments_json("--db", _db(app), "list")
    assert interrupted["status"] == "interrupted"

    run_app(app, "+tracker=sqlite", "mode=quick", "points=5", "start=5",
            "hydra.run.dir=outputs/job", env=env)

    run = _only_run(app)
    assert run["id"] == interrupted["id"]
    assert run["status"] == "finished"
    assert run["error"] is None
    assert _steps(run) == list(range(10))
    # the same (reused) local job id for another job's output dir is a new run
    run_app(app, "+tracker=sqlite", "mode=quick", "points=1", "hydra.run.dir=outputs/other",
            env=env)
    assert len(experiments_json("--db", _db(app), "list")) == 2


def test_forked_child_neither_corrupts_nor_duplicates(app: Path) -> None:
    proc = run_app(app, "+tracker=sqlite", "mode=fork", "points=100")

    out = proc.stdout + proc.stderr
    assert "CHILD DONE" in out and "CHILD EXIT 0" in out
    run = _only_run(app)
    assert run["status"] == "finished"
    # each point once: none written twice by a flush in the child
    assert _steps(run) == list(range(200))
    assert "child" not in run["metrics"]
    # the child is told once that its points are not recorded
    assert out.count("forked from pid") == 1


def test_thread_logging_after_the_job_ended_is_dropped_with_one_warning(
        app: Path) -> None:
    proc = run_app(app, "+tracker=sqlite", "mode=thread")

    out = proc.stdout + proc.stderr
    assert "LATE DONE" in out
    run = _only_run(app)
    assert run["status"] == "finished"
    assert _steps(run, "tick") == list(range(10))
    assert "late" not in run["metrics"] and "late_direct" not in run["metrics"]
    # align_track.log() and run.log() in the late thread: one warning for each path
    warnings = [line for line in out.splitlines()
                if "[WARNING]" in line and "align_track" in line]
    assert len(warnings) == 2, warnings
    [summary] = experiments_json("--db", _db(app), "list")
    assert summary["ended_at"] == run["ended_at"]


def test_eight_writers_at_once_into_a_new_store(tmp_path: Path) -> None:
    db, go = tmp_path / "new.db", tmp_path / "go"
    n, writers = 50_000, 8
    procs = [Started([sys.executable, str(WRITER), str(db), str(go), str(n)], tmp_path)
             for _ in range(writers)]
    for p in procs:
        p.wait_for("WAITING")
    go.touch()  # all start together, on a file that does not exist yet

    # readers beside the writers, the whole time
    failures: List[str] = []
    reads = {"n": 0}
    stop = threading.Event()

    def read_loop() -> None:
        while not stop.is_set() and not db.exists():
            time.sleep(0.05)
        while not stop.is_set():
            for args in (["list", "--format", "json"],
                         ["query", "SELECT count(*) FROM metrics"]):
                proc = experiments("--db", str(db), *args, check=False)
                if proc.returncode != 0:
                    failures.append(f"{args}: {proc.stderr}")
                reads["n"] += 1
                if args[0] == "list" and proc.returncode == 0 and '"id"' in proc.stdout:
                    run_id = proc.stdout.split('"id": "')[1].split('"')[0]
                    shown = experiments("--db", str(db), "show", run_id, check=False)
                    if shown.returncode != 0:
                        failures.append(f"show: {shown.stderr}")

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        codes = [p.finish(timeout=300) for p in procs]
    finally:
        stop.set()
        reader.join()

    outputs = "".join(p.text() for p in procs)
    assert codes == [0] * writers, outputs
    assert "database is locked" not in outputs
    assert "Traceback" not in outputs
    assert not failures, failures[:3]
    assert reads["n"] > 0
    counts = experiments_json(
        "--db", str(db), "query",
        "SELECT run_id, count(*) AS n, count(DISTINCT step) AS steps,"
        " sum(value) AS total FROM metrics GROUP BY run_id")
    assert len(counts) == writers
    for row in counts:
        assert (row["n"], row["steps"], row["total"]) == (n, n, n * (n - 1) / 2)
    assert experiments_json("--db", str(db), "query",
                            "SELECT name FROM experiments") == [{"name": "shared"}]
    runs = experiments_json("--db", str(db), "list")
    assert len(runs) == writers and {r["status"] for r in runs} == {"finished"}


def test_network_file_system_is_detected_from_the_mount_table(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "overlay / overlay rw,relatime 0 0\n"
        "server:/export /mnt/shared nfs4 rw,relatime,vers=4.2 0 0\n"
        "//nas/lab /mnt/lab\\040data cifs rw 0 0\n"
        "tmpfs /mnt/shared/local tmpfs rw 0 0\n")
    on_nfs = "/mnt/shared/runs/experiments.db"
    table = str(mounts)

    with caplog.at_level(logging.WARNING, logger="align_track.backends.sqlite"):
        assert warn(on_nfs, mounts_file=table)
        assert not warn(on_nfs, mounts_file=table)  # once per store
        assert warn("/mnt/lab data/x.db", mounts_file=table)  # \040 is a space
        assert not warn("/mnt/shared/local/x.db", mounts_file=table)  # longest match
        assert not warn("/home/me/x.db", mounts_file=table)

    nfs_warnings = [r.getMessage() for r in caplog.records if on_nfs in r.getMessage()]
    assert len(nfs_warnings) == 1
    assert "nfs4" in nfs_warnings[0]
    assert "local disk" in nfs_warnings[0] and "server backend" in nfs_warnings[0]
    assert not warn(str(tmp_path / "experiments.db"))  # the real /proc/mounts
