"""The digits demo of examples/ runs as the README says and its runs read back whole."""
from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import ROOT, experiments, experiments_json, run_app

APP = ROOT / "examples" / "train_digits.py"
SWEEP = ("model.lr=0.01,0.1", "model.hidden=32,64")
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")


def stored_object(db: Path, sha256: str) -> Path:
    """Where the store keeps an artifact's bytes (layout documented in store.py)."""
    return db.with_name(db.stem + "-artifacts") / "objects" / sha256[:2] / sha256


def load_model(db: Path, run: Dict[str, Any]) -> Any:
    """Unpickle the run's stored ``model.pkl`` and check its recorded size."""
    (artifact,) = [a for a in run["artifacts"] if a["name"] == "model.pkl"]
    path = stored_object(db, artifact["sha256"])
    assert path.stat().st_size == artifact["size"] > 0
    with open(path, "rb") as f:
        return pickle.load(f)


def check_epochs(run: Dict[str, Any], epochs: int) -> None:
    """Every epoch metric has one finite point per epoch, steps 1..epochs."""
    for name in EPOCH_METRICS:
        points: List[Dict[str, Any]] = run["metrics"][name]
        assert [p["step"] for p in points] == list(range(1, epochs + 1)), name
        assert all(math.isfinite(p["value"]) for p in points), name
        assert all(p["timestamp"] for p in points), name
    for name in ("train_acc", "val_acc"):
        assert all(0.0 <= p["value"] <= 1.0 for p in run["metrics"][name])
    for name in ("train_loss", "val_loss"):
        assert all(p["value"] > 0.0 for p in run["metrics"][name])


def test_demo_sweep_records_four_trained_runs(tmp_path: Path) -> None:
    db = tmp_path / "experiments.db"
    run_app(APP, "-m", *SWEEP, f"tracker.db={db}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}", cwd=tmp_path)

    runs = experiments_json("--db", str(db), "list")
    assert len(runs) == 4
    assert {r["status"] for r in runs} == {"finished"}
    assert {r["experiment"] for r in runs} == {"digits"}
    grid = {(float(r["params"]["model.lr"]), int(r["params"]["model.hidden"]))
            for r in runs}
    assert grid == {(0.01, 32), (0.01, 64), (0.1, 32), (0.1, 64)}
    for r in runs:
        val_acc = r["metrics"]["val_acc"]
        assert 0.5 < val_acc <= 1.0
        # The task function returns the final val accuracy: it is a metric too.
        assert r["metrics"]["return_value"] == pytest.approx(val_acc)
        assert r["started_at"] <= r["ended_at"]

    digits_x, digits_y = _digits()
    for listed in runs:
        run = experiments_json("--db", str(db), "show", listed["id"])
        assert run["status"] == "finished"
        lr, hidden = run["params"]["model.lr"], run["params"]["model.hidden"]
        assert f"model.lr={lr}" in run["overrides"]
        assert f"model.hidden={hidden}" in run["overrides"]
        assert run["params"]["model.name"] == "mlp"
        assert run["tags"]["model"] == "mlp"
        check_epochs(run, int(run["params"]["epochs"]))
        model = load_model(db, run)
        # The stored model is the trained one: it classifies the digits well.
        assert model.score(digits_x, digits_y) > 0.5

    ids = [r["id"] for r in runs]
    compared = experiments("--db", str(db), "compare", *ids)
    assert "model.lr" in compared.stdout and "val_acc" in compared.stdout
    assert experiments("--db", str(db), "list").stdout.strip()


def test_single_run_goes_to_experiments_db_where_launched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALIGN_TRACK_DB", raising=False)
    run_app(APP, "model=sgd", "epochs=3", cwd=tmp_path)

    db = tmp_path / "experiments.db"
    (listed,) = experiments_json("--db", str(db), "list")
    assert listed["status"] == "finished"
    assert listed["params"]["model.name"] == "sgd"
    assert 0.5 < listed["metrics"]["val_acc"] <= 1.0
    run = experiments_json("--db", str(db), "show", listed["id"])
    check_epochs(run, 3)
    assert load_model(db, run).score(*_digits()) > 0.5


def _digits() -> Any:
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)
