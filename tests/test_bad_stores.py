"""A broken store never breaks the job, never gets overwritten, and says what to do."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import experiments, experiments_json, run_app

APP = Path(__file__).parent / "apps" / "basic"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    shutil.copytree(APP, tmp_path / "app")
    return tmp_path / "app" / "app.py"


def _make_newer_store(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (id TEXT)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()


def _make_foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"this is not a database at all" * 100),
     "is not a usable align-track store"),
    (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\x00" * 80 + b"garbage" * 50),
     "is not a usable align-track store"),
    (_make_newer_store, "newer than this align-track knows"),
    (_make_foreign_sqlite, "is an SQLite file but not an align-track store"),
], ids=["not-sqlite", "truncated", "newer-schema", "foreign-sqlite"])
def test_bad_store_job_still_runs_and_file_is_untouched(app: Path, make, message: str) -> None:
    db = app.parent / "experiments.db"
    make(db)
    before = db.read_bytes()

    proc = run_app(app, "+tracker=sqlite")

    assert "tracking is off for this job" in proc.stderr + proc.stdout
    assert message in proc.stderr + proc.stdout
    assert db.read_bytes() == before
    cli = experiments("--db", str(db), "list", check=False)
    assert cli.returncode == 1 and cli.stderr.count("\n") == 1


def test_read_only_folder_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # CI runs as root, which ignores permission bits: check the message through the
    # same test the store makes.
    from align_track import store
    from align_track.errors import StoreError

    monkeypatch.setattr(store.os, "access", lambda path, mode: False)
    with pytest.raises(StoreError, match="its folder is read-only; set tracker.db"):
        store.connect(str(tmp_path / "x.db"))
    assert not (tmp_path / "x.db").exists()


def test_full_disk_keeps_the_job_running_and_earlier_points(tmp_path: Path) -> None:
    # A store whose file may not grow: SQLite's max_page_count makes every write past
    # the limit fail with SQLITE_FULL, as a full disk does.
    import align_track
    from align_track import reader, store

    db = tmp_path / "full.db"
    with align_track.track_run("full", db=str(db)) as run:
        align_track.log({"early": 1.0}, step=0)
        run.flush()
        conn = run.backend.conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        for step in range(20000):
            align_track.log({"late": float(step)}, step=step)
        run.flush()
        conn.execute("PRAGMA max_page_count = 1073741823")
    got = reader.get_run(store.connect_readonly(str(db)), run.id)
    assert got["metrics"]["early"][0]["value"] == 1.0
    assert len(got["metrics"]["late"]) == 20000  # kept in memory, written once space returned
    assert got["status"] == "finished"


def test_where_filters_are_bound_not_pasted(app: Path) -> None:
    run_app(app, "-m", "+tracker=sqlite", "lr=0.001,0.01,0.1")
    db = str(app.parent / "experiments.db")

    hits = experiments_json("--db", db, "list", "--where", "params.lr > 0.005 and metrics.loss < 0.01")
    inject = experiments("--db", db, "list", "--where", "name = 'x'; DROP TABLE runs; --'",
                         check=False)
    sneaky = experiments_json("--db", db, "list", "--where", "params.`lr) OR 1=1 --` = 1")

    assert sorted(r["params"]["lr"] for r in hits) == [0.01]
    assert inject.returncode == 1 and "--where" in inject.stderr
    assert sneaky == []
    assert len(experiments_json("--db", db, "list")) == 3


def test_older_store_is_backed_up_and_migrated(tmp_path: Path) -> None:
    import align_track
    from align_track import reader, store

    db = tmp_path / "old.db"
    with align_track.track_run("old", db=str(db), config={"lr": 0.1}) as run:
        align_track.log({"loss": 0.5}, step=3)
    conn = sqlite3.connect(db)  # what version 1 of align-track wrote
    conn.execute("ALTER TABLE sweeps DROP COLUMN status")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    listed = experiments_json("--db", str(db), "list")
    with align_track.track_run("new", db=str(db)):
        align_track.log({"loss": 0.25}, step=0)

    backup = tmp_path / "old.db.v1.bak"
    assert sqlite3.connect(backup).execute("PRAGMA user_version").fetchone()[0] == 1
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert [r["id"] for r in listed] == [run.id]
    old = reader.get_run(store.connect_readonly(str(db)), run.id)
    assert old["params"] == {"lr": 0.1} and old["metrics"]["loss"][0]["step"] == 3
    assert len(experiments_json("--db", str(db), "list")) == 2


def test_reading_a_store_that_is_being_created(tmp_path: Path) -> None:
    """A reader that opens the file between its creation and its schema's commit
    (a job starting now) is told there is no store yet, not that the file is bad;
    a job then creates the store in that same file."""
    import align_track

    db = tmp_path / "new.db"
    db.write_bytes(b"")  # what SQLite leaves on disk before the first commit
    cli = experiments("--db", str(db), "list", check=False)
    assert cli.returncode == 1
    assert "no store at" in cli.stderr and "yet" in cli.stderr
    with align_track.track_run("created", db=str(db)):
        align_track.log({"loss": 0.5}, step=0)
    assert [r["name"] for r in experiments_json("--db", str(db), "list")] == ["created"]


def test_a_folder_as_the_store_is_named_as_such(tmp_path: Path) -> None:
    import align_track

    folder = tmp_path / "runs"
    folder.mkdir()
    cli = experiments("--db", str(folder), "list", check=False)
    assert cli.returncode == 1 and "is a folder" in cli.stderr
    assert str(folder / "experiments.db") in cli.stderr
    from align_track.errors import StoreError

    with pytest.raises(StoreError, match="is a folder; set tracker.db"):
        align_track.track_run("x", db=str(folder))
