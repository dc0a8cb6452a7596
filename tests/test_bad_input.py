"""Bad input that is not about values or stores: missing SDKs, slow queries,
params set twice, and imports that must stay light."""
from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import align_track
from align_track import reader, store
from conftest import experiments, experiments_json, run_app

APPS = Path(__file__).parent / "apps"
BLOCKED = Path(__file__).parent / "blocked"


@pytest.mark.parametrize("backend, extra", [("mlflow", "mlflow"), ("aim", "aim"),
                                            ("clearml", "clearml")])
def test_backend_not_installed_fails_at_start_naming_the_extra(
        tmp_path: Path, backend: str, extra: str) -> None:
    shutil.copytree(APPS / "basic", tmp_path / "app")
    env = {"ALIGN_TRACK_BLOCK": backend,
           "PYTHONPATH": os.pathsep.join([str(BLOCKED), os.environ.get("PYTHONPATH", "")])}

    proc = run_app(tmp_path / "app" / "app.py", f"+tracker={backend}", env=env, check=False)

    assert proc.returncode != 0
    assert f'pip install "align-track[{extra}]"' in proc.stderr
    assert not list((tmp_path / "app").glob("outputs/*/*/app.log"))  # no job ran


def test_import_stays_light() -> None:
    code = ("import sys, align_track; align_track.log({'x': 1.0});"
            "heavy = [m for m in ('mlflow', 'aim', 'clearml', 'numpy', 'torch', 'hydra',"
            " 'omegaconf', 'sqlite3') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_selecting_sqlite_imports_no_other_sdk(tmp_path: Path) -> None:
    code = ("import sys, align_track\n"
            f"with align_track.track_run('x', db={str(tmp_path / 'e.db')!r}):\n"
            "    align_track.log({'x': 1.0})\n"
            "print([m for m in ('mlflow', 'aim', 'clearml') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_query_past_its_time_limit_is_stopped(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    with align_track.track_run("t", db=str(db)):
        align_track.log({"x": 1.0})
    slow = ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) "
            "SELECT count(*) FROM c")

    proc = experiments("--db", str(db), "query", slow, "--timeout", "1", check=False)

    assert proc.returncode == 1
    assert proc.stderr.strip() == "experiments: error: query stopped after 1 s (raise --timeout)"


def test_param_set_again_keeps_both(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "e.db"
    with caplog.at_level(logging.WARNING):
        with align_track.track_run("t", config={"lr": 0.1, "model": {"depth": 2}},
                                   db=str(db)) as run:
            align_track.log_params({"lr": 0.5, "extra": {"seed": 7}})

    got = reader.get_run(store.connect_readonly(str(db)), run.id)
    assert got["params"]["lr"] == 0.5 and got["params"]["extra.seed"] == 7
    assert got["config"]["lr"] == 0.1  # the captured config stays as captured
    assert sum("param 'lr' was 0.1" in r.getMessage() for r in caplog.records) == 1


def test_context_must_be_a_mapping(tmp_path: Path) -> None:
    with align_track.track_run("t", db=str(tmp_path / "e.db")):
        with pytest.raises(TypeError, match="context must be a mapping"):
            align_track.log({"x": 1.0}, context="val")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="context must be a mapping"):  # no run open
        align_track.log({"x": 1.0}, context=3)  # type: ignore[arg-type]


def test_ints_and_steps_beyond_64_bits_lose_no_other_point(tmp_path: Path) -> None:
    """An int too large for SQLite's INTEGER is stored as a float; one beyond a
    float, or a step beyond 64 bits, is skipped and counted: the other points of
    the same calls and batches are all stored."""
    import align_track

    db = tmp_path / "big.db"
    with align_track.track_run("big", db=str(db)):
        align_track.log({"ok": 1.0, "big": 2**70, "huge": 10**400}, step=0)
        align_track.log({"ok": 2.0}, step=2**64)
        align_track.log({"ok": 3.0, "nan": float("nan")}, step=1)
    (run,) = experiments_json("--db", str(db), "list")
    assert run["status"] == "finished" and run["dropped"] == 2
    assert run["metrics"]["ok"] == 3.0 and run["metrics"]["big"] == float(2**70)
    assert "huge" not in run["metrics"] and math.isnan(run["metrics"]["nan"])
    shown = experiments_json("--db", str(db), "show", run["id"])
    assert [p["step"] for p in shown["metrics"]["ok"]] == [0, 1]


def test_odd_numbers_are_stored_or_skipped_never_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Values a training loop may hand over (numpy's long double, a masked value,
    a signaling NaN), a context with keys of mixed types and several bad names: each
    point is stored or skipped with a warning naming it; log() never raises."""
    import decimal

    import numpy as np

    db = tmp_path / "odd.db"
    with align_track.track_run("odd", db=str(db)):
        align_track.log({"long": np.longdouble(1.5), "complex": np.clongdouble(1.5)}, step=0)
        align_track.log({"masked": np.ma.masked, "kept": np.ma.array([2.0], mask=[False])},
                        step=0)
        align_track.log({"snan": decimal.Decimal("sNaN")}, step=0)
        align_track.log({"ctx": 1.0}, step=0, context={1: "a", "b": 2})
        align_track.log({1: 1.0}, step=0)
        align_track.log({2: 1.0}, step=0)
    (run,) = experiments_json("--db", str(db), "list")
    assert run["status"] == "finished" and run["dropped"] == 5
    assert run["metrics"] == {"long": 1.5, "kept": 2.0, 'ctx["1"=a,b=2]': 1.0}
    warned = caplog.text
    for name in ("'complex'", "'masked'", "'snan'", "got 1 (int)", "got 2 (int)"):
        assert name in warned, name
