"""`experiments plot`, `experiments export` and align_track.read."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Iterator

import pytest

from tests.conftest import experiments

pytest.importorskip("matplotlib")
pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, str]]:
    """A store with three runs logged through align_track.track_run."""
    from align_track import track_run

    path = tmp_path_factory.mktemp("plot") / "runs.db"
    ids = {}
    for lr in (0.1, 0.01, 0.001):
        with track_run("plots", {"lr": lr, "model": {"depth": 2}}, name="train",
                       db=str(path), tags={"kind": "demo"}, group="lr-scan") as run:
            for step in range(20):
                run.log({"loss": lr * 100 / (step + 1), "acc": step / 20}, step=step)
        ids[lr] = run.id
    yield {"path": str(path), **{str(k): v for k, v in ids.items()}}


def _png_pixels(path: Path):
    from matplotlib import image

    return image.imread(str(path))


def test_plot_writes_a_png_with_curves(db: Dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    proc = experiments("--db", db["path"], "plot", db["0.1"], db["0.01"][:8],
                       "--metric", "loss", "-o", str(out))
    assert str(out) in proc.stdout
    pixels = _png_pixels(out)
    height, width = pixels.shape[:2]
    assert (width, height) == (800, 450)
    assert pixels[..., :3].std() > 0.05  # not blank: lines, axes and text are drawn


def test_plot_and_export_take_latest_and_prefixes_for_a_sweep(
        db: Dict[str, str], tmp_path: Path) -> None:
    for sweep in ("latest", "lr-s"):
        out = tmp_path / f"{sweep}.png"
        experiments("--db", db["path"], "plot", "--sweep", sweep, "--metric", "loss",
                    "-o", str(out))
        assert _png_pixels(out)[..., :3].std() > 0.05
    exported = experiments("--db", db["path"], "export", "--sweep", "latest").stdout
    unknown = experiments("--db", db["path"], "export", "--sweep", "nope", check=False)

    assert len(exported.strip().splitlines()) == 4  # a header and three runs
    assert unknown.returncode == 1 and "no sweep with id 'nope'" in unknown.stderr


def test_plot_one_file_per_metric_and_time_axis(db: Dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "fig.png"
    proc = experiments("--db", db["path"], "plot", db["0.1"], db["0.01"], db["0.001"],
                       "--metric", "loss", "--metric", "acc", "--x", "time", "-o", str(out))
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["fig-acc.png", "fig-loss.png"]
    assert "fig-loss.png" in proc.stdout
    for name in written:
        assert _png_pixels(tmp_path / name)[..., :3].std() > 0.05


def test_plot_labels_runs_by_the_params_that_differ(db: Dict[str, str]) -> None:
    from align_track import plot, reader, store

    conn = store.connect_readonly(db["path"])
    runs = [reader.get_run(conn, db[k], history=False) for k in ("0.1", "0.01")]
    conn.close()
    assert sorted(plot.labels(runs).values()) == ["train (lr=0.01)", "train (lr=0.1)"]


def test_plot_in_the_terminal(db: Dict[str, str]) -> None:
    pytest.importorskip("plotext")
    proc = experiments("--db", db["path"], "plot", db["0.1"], db["0.01"], "--metric", "loss")
    assert "loss" in proc.stdout and "train (lr=0.1)" in proc.stdout
    assert "\x1b[" not in proc.stdout  # no colour codes when piped


def test_plot_names_a_missing_metric(db: Dict[str, str]) -> None:
    proc = experiments("--db", db["path"], "plot", db["0.1"], "--metric", "nope", "-o",
                       "x.png", check=False)
    assert proc.returncode == 1
    assert "no run has metric 'nope'" in proc.stderr and "loss" in proc.stderr


def test_read_runs_is_a_dataframe(db: Dict[str, str]) -> None:
    from align_track import read

    df = read.runs(db["path"])
    assert len(df) == 3
    assert {"id", "status", "params.lr", "params.model.depth", "metrics.loss",
            "tags.kind"} <= set(df.columns)
    best = df.sort_values("metrics.loss").iloc[0]
    assert best["params.lr"] == 0.001 and best["metrics.loss"] == pytest.approx(0.1 / 20)
    assert str(df["started_at"].dtype).startswith("datetime64")
    points = read.metrics(db["path"], ids=[db["0.1"]], names=["loss"])
    assert list(points["step"]) == list(range(20))
    assert points["value"].iloc[0] == pytest.approx(10.0)


def test_export_csv_json_parquet(db: Dict[str, str], tmp_path: Path) -> None:
    import io

    csv = experiments("--db", db["path"], "export").stdout
    frame = pd.read_csv(io.StringIO(csv))
    assert sorted(frame["params.lr"]) == [0.001, 0.01, 0.1]
    rows = json.loads(experiments("--db", db["path"], "export", "--format", "json",
                                  "--metrics").stdout)
    assert len(rows) == 3 * 2 * 20
    assert {"run_id", "metric", "step", "value", "timestamp"} == set(rows[0])
    pytest.importorskip("pyarrow")
    out = tmp_path / "runs.parquet"
    experiments("--db", db["path"], "export", "--format", "parquet", "-o", str(out))
    assert sorted(pd.read_parquet(out)["params.lr"]) == [0.001, 0.01, 0.1]
    refused = experiments("--db", db["path"], "export", "--format", "parquet", check=False)
    assert refused.returncode == 1 and "-o FILE" in refused.stderr


def test_export_json_keeps_nan_infinities_and_every_digit(tmp_path: Path) -> None:
    from align_track import track_run

    db = str(tmp_path / "odd.db")
    with track_run("odd", db=db) as run:
        run.log({"nan": math.nan, "pinf": math.inf, "ninf": -math.inf,
                 "exact": 0.989755859375}, step=0)

    out = experiments("--db", db, "export", "--format", "json", "--metrics").stdout
    values = {row["metric"]: row["value"] for row in json.loads(out)}
    assert math.isnan(values["nan"])
    assert values["pinf"] == math.inf and values["ninf"] == -math.inf
    assert values["exact"] == 0.989755859375
    [summary] = json.loads(experiments("--db", db, "export", "--format", "json").stdout)
    assert summary["metrics.pinf"] == math.inf and summary["id"] == run.id
    assert summary["started_at"].startswith("20")  # ISO 8601 time
