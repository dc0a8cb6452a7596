"""The writer process that stores the points of a run logging faster than a thread can.

A run that hands the SQLite backend a full batch (20,000 points within one flush
interval) gets its points written by a child process. These tests check what a user
would: every point is in the store, in every way the writer process can end.
"""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import align_track
from align_track.backends.sqlite import BULK_AFTER, BULK_AT

N = (BULK_AFTER + 2) * BULK_AT + 123  # enough full batches in a row, and a remainder


def _points(db: Path) -> tuple:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*), count(DISTINCT step), min(step), max(step)"
                            " FROM points").fetchone()


def _status(db: Path) -> list:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT status FROM runs")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_fast_run_is_written_by_a_writer_process(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    with align_track.track_run("bulk", db=str(db)) as run:
        for i in range(N):
            align_track.log({"loss": 1.0 / (i + 1)}, step=i)
        run.flush()
        writer = run.backend._bulk
        assert writer is not None, "a run logging full batches should get a writer process"
        child = writer.child_pid
        assert child != os.getpid() and _alive(child)
        assert _points(db) == (N, N, 0, N - 1)  # flush() waited for the writer
    assert _status(db) == ["finished"]
    run.backend.close()
    assert not _alive(child), "the writer process should exit when its store closes"
    with sqlite3.connect(db) as conn:
        last_step, last_value, count = conn.execute(
            "SELECT last_step, last_value, count FROM series WHERE name = 'loss'").fetchone()
    assert (last_step, count) == (N - 1, N) and last_value == pytest.approx(1.0 / N)


class _Name(str):
    """A str subclass, as numpy.str_ is: marshal, which feeds the writer process,
    does not keep it a str."""


def test_names_of_a_str_subclass_or_only_equal_to_a_str_through_the_writer_process(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from collections import UserString

    db = tmp_path / "e.db"
    with caplog.at_level(logging.WARNING):
        with align_track.track_run("bulk", db=str(db)) as run:
            for i in range(N):
                align_track.log({"loss": 0.5}, step=i)
                if i == BULK_AT + 7:
                    align_track.log({_Name("acc"): 0.9}, step=i)
                    align_track.log({UserString("loss"): 99.0}, step=i)  # type: ignore[dict-item]
            run.flush()
            assert run.backend._bulk is not None and run.backend._bulk.child_pid
    with sqlite3.connect(db) as conn:
        series = dict(conn.execute(
            "SELECT s.name, count(*) FROM points p JOIN series s ON s.id = p.series_id "
            "GROUP BY s.name"))
        dropped = conn.execute("SELECT dropped FROM runs").fetchone()[0]
        values = {v for (v,) in conn.execute("SELECT DISTINCT value FROM points")}
    assert series == {"loss": N, "acc": 1}  # every point, each once
    assert dropped == 1 and 99.0 not in values
    assert any("'loss' (UserString)" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if "could not" in r.getMessage()]


def test_small_runs_stay_in_process(tmp_path: Path) -> None:
    with align_track.track_run("small", db=str(tmp_path / "e.db")) as run:
        for i in range((BULK_AFTER - 1) * BULK_AT // 2):  # two metrics a call
            align_track.log({"loss": 0.5, "acc": 0.1}, step=i)
        run.flush()
        assert run.backend._bulk is None


def test_switched_off_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGN_TRACK_BULK", "0")
    db = tmp_path / "e.db"
    with align_track.track_run("off", db=str(db)) as run:
        for i in range(N):
            align_track.log({"loss": 0.5}, step=i)
        run.flush()
        assert run.backend._bulk is None
    assert _points(db) == (N, N, 0, N - 1)


def _start_writer(run) -> int:
    for i in range(BULK_AFTER * BULK_AT):
        align_track.log({"loss": 0.5}, step=i)
    run.flush()  # full batches in a row: the writer process starts
    assert run.backend._bulk is not None
    return run.backend._bulk.child_pid


def test_killed_writer_process_loses_no_point(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "e.db"
    with caplog.at_level(logging.WARNING, logger="align_track"):
        with align_track.track_run("killed", db=str(db)) as run:
            child = _start_writer(run)
            for i in range(BULK_AFTER * BULK_AT, (BULK_AFTER + 1) * BULK_AT):
                align_track.log({"loss": 0.5}, step=i)
            run.flush(wait=False)  # handed to the writer process, maybe not stored yet
            os.kill(child, signal.SIGKILL)
            for i in range((BULK_AFTER + 1) * BULK_AT, N):
                align_track.log({"loss": 0.5}, step=i)
    count, distinct, lo, hi = _points(db)
    # a batch committed just before the kill, its reply unsent, may be stored twice
    assert (distinct, lo, hi) == (N, 0, N - 1)
    assert count - distinct in (0, BULK_AT)
    assert _status(db) == ["finished"]
    assert "writing in this process" in caplog.text


def test_writer_process_ignores_ctrl_c_meant_for_the_job(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    with align_track.track_run("sigint", db=str(db)) as run:
        child = _start_writer(run)
        os.kill(child, signal.SIGINT)
        for i in range(BULK_AFTER * BULK_AT, N):
            align_track.log({"loss": 0.5}, step=i)
        run.flush()
        assert run.backend._bulk is not None and run.backend._bulk.child_pid == child
    assert _points(db) == (N, N, 0, N - 1)


def test_points_handed_over_survive_the_job_being_killed(tmp_path: Path) -> None:
    """SIGKILL of the job: the writer process still stores what it was given."""
    db = tmp_path / "e.db"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        import align_track
        with align_track.track_run("killed-job", db={str(db)!r}) as run:
            for i in range({N}):
                align_track.log({{"loss": 0.5}}, step=i)
            run.flush()  # stored; now hand over more and die before they are
            for i in range({N}, {N + BULK_AT}):
                align_track.log({{"loss": 0.5}}, step=i)
            run.flush(wait=False)
            print(run.backend._bulk.child_pid, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    child = int(proc.stdout.split()[0])
    deadline = time.time() + 60
    while _alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the writer process should exit once its job is gone"
    assert _points(db) == (N + BULK_AT, N + BULK_AT, 0, N + BULK_AT - 1)
