"""The log API without Hydra: track_run, SQLiteTracker, and what log() accepts."""
from __future__ import annotations

import decimal
import fractions
import logging
import math
import threading
from pathlib import Path

import pytest

import align_track
from align_track import reader, store
from align_track.tracker import SQLiteTracker


def _read(db: Path) -> dict:
    conn = store.connect_readonly(str(db))
    [summary] = reader.list_runs(conn)
    return reader.get_run(conn, summary["id"])


def test_track_run_logs_and_closes(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    with align_track.track_run("seed", config={"lr": 0.1, "model": {"layers": [1, 2]}},
                               db=str(db), tags={"who": "me"}) as run:
        for step in range(3):
            align_track.log({"loss": 1.0 / (step + 1)}, step=step)
        align_track.log_artifact(Path(__file__))

    got = _read(db)
    assert run.status == "finished"
    assert got["params"] == {"lr": 0.1, "model.layers": [1, 2]}
    assert [p["value"] for p in got["metrics"]["loss"]] == pytest.approx([1, 0.5, 1 / 3])
    assert got["tags"] == {"who": "me"}
    assert got["artifacts"][0]["name"] == Path(__file__).name


def test_exception_in_block_marks_failed_and_propagates(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    with pytest.raises(RuntimeError):
        with align_track.track_run("seed", db=str(db)):
            align_track.log({"loss": 1.0})
            raise RuntimeError("bad batch")

    got = _read(db)
    assert got["status"] == "failed"
    assert got["error"]["message"] == "bad batch"
    assert got["metrics"]["loss"][0]["value"] == 1.0


def test_sqlite_tracker_start_run(tmp_path: Path) -> None:
    tracker = SQLiteTracker(str(tmp_path / "t.db"))
    run = tracker.start_run("exp", name="first", config={"a": 1})
    run.log({"x": 2.0}, step=5)
    run.end()

    got = _read(tmp_path / "t.db")
    assert (got["name"], got["status"], got["params"]) == ("first", "finished", {"a": 1})
    assert got["metrics"]["x"] == [{"step": 5, "value": 2.0, "timestamp": pytest.approx(
        got["metrics"]["x"][0]["timestamp"])}]


def test_log_without_run_warns_once(caplog: pytest.LogCaptureFixture,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from align_track import _context

    monkeypatch.setattr(_context, "_ended", False)  # as in a process where no run ended
    with caplog.at_level(logging.WARNING):
        align_track.log({"loss": 1.0})
        align_track.log({"loss": 2.0})

    _context._warned.discard("no-run")
    assert sum("no open run" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("bad", [[("loss", 1.0)], "loss", 3.0], ids=["list", "str", "float"])
def test_wrong_shape_raises_type_error(bad: object, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="mapping"):
        align_track.log(bad)  # type: ignore[arg-type]
    with align_track.track_run("t", db=str(tmp_path / "e.db")):
        with pytest.raises(TypeError, match="mapping"):
            align_track.log(bad)  # type: ignore[arg-type]


def test_accepted_and_refused_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    np = pytest.importorskip("numpy")
    db = tmp_path / "e.db"
    with caplog.at_level(logging.WARNING):
        with align_track.track_run("t", db=str(db)) as run:
            align_track.log({"flag": True, "dec": decimal.Decimal("0.25"),
                             "frac": fractions.Fraction(1, 4), "np": np.float32(0.5),
                             "np0d": np.array(2.0), "np1": np.array([3.0])}, step=0)
            align_track.log({"text": "high", "none": None, "vec": np.array([1.0, 2.0])}, step=0)
            align_track.log({"text": "again"}, step=1)

    got = _read(db)
    values = {k: v[0]["value"] for k, v in got["metrics"].items()}
    assert values == {"flag": 1.0, "dec": 0.25, "frac": 0.25, "np": 0.5, "np0d": 2.0, "np1": 3.0}
    assert run.dropped == 4 and got["dropped"] == 4
    warnings = [r.getMessage() for r in caplog.records if "not a number" in r.getMessage()]
    assert len(warnings) == 3  # one per metric name
    assert any("'text'" in w and "str" in w for w in warnings)


def test_strict_raises_on_refused_value(tmp_path: Path) -> None:
    with align_track.track_run("t", db=str(tmp_path / "e.db"), strict=True):
        with pytest.raises(TypeError, match="'text'"):
            align_track.log({"text": "high"})


def test_a_reused_dict_keeps_the_values_of_each_call(tmp_path: Path) -> None:
    # the writer thread stores the points later: what is stored must be what the
    # dict held at the call, not after the caller changed it
    db = tmp_path / "e.db"
    metrics = {"loss": 0.0}
    with align_track.track_run("t", db=str(db)):
        for step in range(5):
            metrics["loss"] = float(step)
            align_track.log(metrics, step=step)
        metrics["loss"] = 99.0
        metrics["late"] = 1.0

    got = _read(db)
    assert [p["value"] for p in got["metrics"]["loss"]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert "late" not in got["metrics"]


def test_an_array_changed_in_place_keeps_the_logged_values(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    db = tmp_path / "e.db"
    one, zero_d = np.zeros(1), np.zeros(())
    with align_track.track_run("t", db=str(db)):
        for step in range(4):
            one[0] = step  # a running value updated in place, as a tensor would be
            zero_d[...] = 10 * step
            align_track.log({"one": one, "zero_d": zero_d}, step=step)
        one[0], zero_d[...] = 999, 999

    got = _read(db)
    assert [p["value"] for p in got["metrics"]["one"]] == [0.0, 1.0, 2.0, 3.0]
    assert [p["value"] for p in got["metrics"]["zero_d"]] == [0.0, 10.0, 20.0, 30.0]


def test_a_name_that_is_not_a_string_is_skipped_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "e.db"
    with caplog.at_level(logging.WARNING):
        with align_track.track_run("t", db=str(db)) as run:
            align_track.log({"loss": 0.5, 3: 1.0, "": 2.0}, step=0)  # type: ignore[dict-item]
            align_track.log({"loss": 0.25}, step=1)

    got = _read(db)
    assert [p["value"] for p in got["metrics"]["loss"]] == [0.5, 0.25]
    assert run.dropped == 2 and got["dropped"] == 2
    warnings = [r.getMessage() for r in caplog.records if "metric names" in r.getMessage()]
    assert any("3 (int)" in w for w in warnings) and any("'' (str)" in w for w in warnings)
    with align_track.track_run("t", db=str(db), strict=True):
        with pytest.raises(TypeError, match="3 \\(int\\)"):
            align_track.log({3: 1.0}, step=0)  # type: ignore[dict-item]


def test_bad_names_are_dropped_with_masking_off_and_across_batches(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # log() leaves the name check to the run's writer: it must hold whatever the
    # masking setting, for a name first seen in a later batch, and from a thread
    db = tmp_path / "e.db"
    with caplog.at_level(logging.WARNING):
        with align_track.track_run("t", db=str(db), redact=[]) as run:
            align_track.log({"loss": 1.0, None: 2.0}, step=0)  # type: ignore[dict-item]
            run.flush()
            worker = threading.Thread(target=lambda: align_track.log(
                {"loss": 0.5, b"acc": 0.9}, step=1))  # type: ignore[dict-item]
            worker.start()
            worker.join()
    got = _read(db)
    assert {k: [p["value"] for p in v] for k, v in got["metrics"].items()} == {
        "loss": [1.0, 0.5]}
    assert got["dropped"] == 2
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "None (NoneType)" in warned and "b'acc' (bytes)" in warned


def test_a_name_whose_hash_breaks_later_costs_only_its_own_point(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Key:  # hashable when logged, not when the writer reads it
        def __init__(self) -> None:
            self.parts: tuple = ("a",)

        def __hash__(self) -> int:
            return hash(self.parts)

        def __repr__(self) -> str:
            return "Key(token=sk-live-0123456789abcdef0123)"

    db = tmp_path / "e.db"
    key = Key()
    with caplog.at_level(logging.WARNING):
        with align_track.track_run("t", db=str(db)) as run:
            for step in range(100):
                align_track.log({"loss": float(step)}, step=step)
            align_track.log({key: 1.0}, step=100)  # type: ignore[dict-item]
            key.parts = (["now", "unhashable"],)
            for step in range(101, 200):
                align_track.log({"loss": float(step)}, step=step)
    got = _read(db)
    assert got["status"] == "finished" and run.dropped == got["dropped"] == 1
    assert [p["step"] for p in got["metrics"]["loss"]] == list(range(100)) + list(range(101, 200))
    [warning] = [r.getMessage() for r in caplog.records if "metric names" in r.getMessage()]
    assert "(Key)" in warning and "0123456789abcdef" not in warning  # the secret masked


def test_binding_an_ended_run_does_not_open_it_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "e.db"
    with align_track.track_run("a", db=str(db)) as first:
        align_track.log({"x": 1.0}, step=0)

    def late() -> None:
        with align_track.bind(first):
            align_track.log({"late": 1.0}, step=0)

    worker = threading.Thread(target=late)
    worker.start()
    worker.join()
    with caplog.at_level(logging.WARNING):
        with align_track.track_run("b", db=str(db)) as second:
            helper = threading.Thread(target=lambda: align_track.log({"y": 2.0}, step=0))
            helper.start()
            helper.join()
    conn = store.connect_readonly(str(db))
    got = reader.get_run(conn, second.id)
    conn.close()
    assert list(got["metrics"]) == ["y"]  # the thread reached the one open run
    assert not [r for r in caplog.records if "runs are open" in r.getMessage()]


def test_contexts_that_print_alike_stay_apart(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    with align_track.track_run("t", db=str(db)):
        align_track.log({"c": 1.0}, step=0, context={"a": 1})
        align_track.log({"c": 2.0}, step=0, context={"a": "1"})
        align_track.log({"c": 3.0}, step=0, context={"a": "x", "b": "y"})
        align_track.log({"c": 4.0}, step=0, context={"a": "x,b=y"})
        align_track.log({"c": 5.0}, step=0, context={"subset": "val"})
        align_track.log({"c": 6.0}, step=0, context={"a=x,b": "y"})
        align_track.log({"c[a=1]": 7.0}, step=0)  # a name that looks like a context

    got = _read(db)
    assert {k: [p["value"] for p in v] for k, v in got["metrics"].items()} == {
        "c[a=1]": [1.0], 'c[a="1"]': [2.0], "c[a=x,b=y]": [3.0], 'c[a="x,b=y"]': [4.0],
        "c[subset=val]": [5.0], 'c["a=x,b"=y]': [6.0], '"c[a=1]"': [7.0]}
    conn = store.connect_readonly(str(db))
    [summary] = reader.list_runs(conn)
    assert len(summary["metrics"]) == 7


def test_steps_follow_the_order_of_the_calls(tmp_path: Path) -> None:
    # calls with a step and calls without one reach the buffer by two paths
    db = tmp_path / "e.db"
    with align_track.track_run("t", db=str(db)):
        align_track.log({"a": 1.0})  # step 0
        align_track.log({"a": 2.0}, step=0)
        align_track.log({"a": 3.0})  # after step 0: 1
        align_track.log({"a": 4.0}, step=7)
        align_track.log({"a": 5.0}, context={"subset": "val"})  # its own series: 0
        align_track.log({"a": 6.0})  # 8

    got = _read(db)
    points = [(p["step"], p["value"]) for p in got["metrics"]["a"] if not p.get("context")]
    assert points == [(0, 1.0), (0, 2.0), (1, 3.0), (7, 4.0), (8, 6.0)]


def test_omitted_step_is_next_step_per_metric(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    with align_track.track_run("t", db=str(db)):
        align_track.log({"a": 1.0, "b": 1.0})
        align_track.log({"a": 2.0}, step=10)
        align_track.log({"a": 3.0, "b": 2.0})

    got = _read(db)
    assert [p["step"] for p in got["metrics"]["a"]] == [0, 10, 11]
    assert [p["step"] for p in got["metrics"]["b"]] == [0, 1]


def test_two_runs_in_two_threads_do_not_mix(tmp_path: Path) -> None:
    db = str(tmp_path / "e.db")
    barrier = threading.Barrier(2)

    def job(name: str) -> None:
        with align_track.track_run(name, db=db):
            barrier.wait()
            for step in range(2000):
                align_track.log({name: float(step)}, step=step)

    threads = [threading.Thread(target=job, args=(n,)) for n in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    conn = store.connect_readonly(db)
    for run in reader.list_runs(conn):
        full = reader.get_run(conn, run["id"])
        assert list(full["metrics"]) == [run["experiment"]]
        assert len(full["metrics"][run["experiment"]]) == 2000


def test_points_after_end_are_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "e.db"
    with align_track.track_run("t", db=str(db)) as run:
        align_track.log({"a": 1.0})
    with caplog.at_level(logging.WARNING):
        run.log({"a": 2.0})

    assert len(_read(db)["metrics"]["a"]) == 1
    assert any("is closed" in r.getMessage() for r in caplog.records)


def test_nan_inf_through_the_store(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    with align_track.track_run("t", db=str(db)):
        align_track.log({"v": math.nan}, step=0)
        align_track.log({"v": math.inf}, step=1)
        align_track.log({"v": -math.inf}, step=2)

    values = [p["value"] for p in _read(db)["metrics"]["v"]]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf]


def test_steps_are_stored_as_given(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    np = pytest.importorskip("numpy")
    db = tmp_path / "e.db"
    with caplog.at_level(logging.WARNING):
        with align_track.track_run("t", db=str(db)) as run:
            for step, value in [(5, 1.0), (-3, 2.0), (2**62, 3.0), (1, 4.0), (1, 5.0),
                                (np.int64(7), 6.0), (8.0, 7.0)]:
                align_track.log({"m": value}, step=step)
            align_track.log({"m": 9.0}, step=2.5)

    points = _read(db)["metrics"]["m"]
    assert [(p["step"], p["value"]) for p in points] == [
        (-3, 2.0), (1, 4.0), (1, 5.0), (5, 1.0), (7, 6.0), (8, 7.0), (2**62, 3.0)]
    assert _read(db)["last_metrics"]["m"] == 7.0  # the last logged, whatever its step
    assert run.dropped == 1
    assert any("step 2.5 (float) is not an integer" in r.getMessage() for r in caplog.records)
