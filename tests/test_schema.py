"""Schema version 3: each run's params and last metric values also as one JSON
object each (``runs.params_json``, ``runs.metrics_json``).

What a user sees must not change: ``list`` and ``show`` print the same params as
when they were read from the params rows, a version 2 store is migrated in place
(after a backup), and params added after the run started show up.
"""
from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any, Dict

import pytest

import align_track
from align_track import reader, store
from align_track.errors import StoreError
from conftest import experiments, experiments_json

#: One value of every kind a param can hold (NaN is checked apart: NaN != NaN).
CONFIG: Dict[str, Any] = {
    "int": 3, "neg": -7, "zero": 0, "big": 2**80, "small": -(2**70),
    "edge": 2**63 - 1, "float": 0.1, "third": 1 / 3, "tiny": 5e-324, "huge": 1e308,
    "whole": 2.0, "inf": math.inf, "minus_inf": -math.inf, "nan": math.nan,
    "yes": True, "no": False, "none": None, "text": "adam", "empty": "",
    "unicode": "héllo ✓", "quote": 'say "hi"\n\\', "numeric_text": "12",
    "list": [1, 2.5, "a", None, True], "nested": {"deep": {"x": [1, {"y": 2}]}},
    "empty_map": {}, "empty_list": [],
}


def _dump(value: Any) -> str:
    """JSON as the CLI prints it (NaN as NaN), so NaN compares equal to itself."""
    return json.dumps(value, sort_keys=False, allow_nan=True)


def _rows_params(db: Path, run_id: str) -> Dict[str, Any]:
    """The params as read from the params rows (what the reader returned in v2)."""
    conn = store.connect_readonly(str(db))
    try:
        key = store.find_run_key(conn, run_id)["key"]
        return reader._params_by_run(conn, [key])[key]
    finally:
        conn.close()


def _make_store(db: Path) -> str:
    with align_track.track_run("schema", db=str(db), config=CONFIG) as run:
        align_track.log({"loss": 0.5}, step=1)
        align_track.log({"loss": 0.1 + 0.2, "acc": float("nan"), "big": 1e308}, step=2)
        align_track.log({"loss": float("-inf")}, step=3, context={"subset": "val"})
    with align_track.track_run("schema", db=str(db), config={"lr": 0.01}):
        pass
    return run.id


def test_params_of_every_type_list_and_show_as_the_params_rows_do(
        tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    run_id = _make_store(db)
    expected = _rows_params(db, run_id)
    assert expected["big"] == 2**80 and math.isnan(expected["nan"])

    # the same store with params_json and metrics_json cleared reads the params and
    # series rows: as before v3
    rows_db = tmp_path / "rows.db"
    conn = sqlite3.connect(rows_db)
    with sqlite3.connect(db) as source:
        source.backup(conn)  # the file alone would miss what is still in the WAL
    conn.execute("UPDATE runs SET params_json = NULL, metrics_json = NULL")
    conn.commit()
    conn.close()

    for args in (["list"], ["show", run_id], ["compare", run_id, run_id[:8]]):
        new = experiments("--db", str(db), *args, "--format", "json").stdout
        old = experiments("--db", str(rows_db), *args, "--format", "json").stdout
        assert new == old
    listed = experiments_json("--db", str(db), "list")
    mine = next(r for r in listed if r["id"] == run_id)
    assert list(mine["params"]) == sorted(mine["params"])
    assert _dump(mine["params"]) == _dump(expected)
    metrics = mine["metrics"]
    assert metrics["loss"] == 0.1 + 0.2 and metrics["big"] == 1e308
    assert math.isnan(metrics["acc"]) and metrics["loss[subset=val]"] == float("-inf")
    shown = experiments_json("--db", str(db), "show", run_id)
    assert _dump(shown["params"]) == _dump(expected)
    assert experiments("--db", str(db), "list").stdout == \
        experiments("--db", str(rows_db), "list").stdout


def test_params_logged_after_start_show_up_and_replace(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    config = {"lr": 0.1, "opt": "sgd"}
    with align_track.track_run("late", db=str(db), config=config) as run:
        align_track.log_params({"seed": 7, "opt": "adam", "extra": {"n": [1, 2]}})
        align_track.log_params({"late": {"float": math.inf}})
    want = {"extra.n": [1, 2], "late.float": math.inf, "lr": 0.1, "opt": "adam",
            "seed": 7}
    (listed,) = experiments_json("--db", str(db), "list")
    shown = experiments_json("--db", str(db), "show", run.id)
    assert listed["params"] == want and list(listed["params"]) == sorted(want)
    assert shown["params"] == want
    assert _rows_params(db, run.id) == want
    hits = experiments_json("--db", str(db), "list", "--where", "params.seed = 7")
    assert [r["id"] for r in hits] == [run.id]


def _as_version_2(db: Path) -> None:
    """Turn a store into what version 2 of align-track wrote: no params_json, no
    metrics_json."""
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE runs DROP COLUMN params_json")
    conn.execute("ALTER TABLE runs DROP COLUMN metrics_json")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def test_version_2_store_is_backed_up_migrated_and_lists_the_same_params(
        tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    run_id = _make_store(db)
    expected = {r["id"]: _dump(r["params"])
                for r in experiments_json("--db", str(db), "list")}
    metrics = {r["id"]: _dump(r["metrics"])
               for r in experiments_json("--db", str(db), "list")}
    _as_version_2(db)

    listed = experiments_json("--db", str(db), "list")

    assert {r["id"]: _dump(r["params"]) for r in listed} == expected
    assert {r["id"]: _dump(r["metrics"]) for r in listed} == metrics
    backup = tmp_path / "old.db.v2.bak"
    assert sqlite3.connect(backup).execute("PRAGMA user_version").fetchone()[0] == 2
    conn = sqlite3.connect(db)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    assert version == store.SCHEMA_VERSION == 3
    assert conn.execute("SELECT count(*) FROM runs WHERE params_json IS NULL"
                        " OR metrics_json IS NULL").fetchone()[0] == 0
    conn.close()
    shown = experiments_json("--db", str(db), "show", run_id)
    assert _dump(shown["params"]) == expected[run_id]
    with align_track.track_run("schema", db=str(db), config={"after": 1}):
        pass
    assert len(experiments_json("--db", str(db), "list")) == 3


def test_store_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    _make_store(db)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this align-track knows"):
        store.connect_readonly(str(db))
    with pytest.raises(StoreError, match="newer than this align-track knows"):
        store.connect(str(db))
    proc = experiments("--db", str(db), "list", check=False)
    assert proc.returncode != 0 and "upgrade align-track" in proc.stderr
