"""The benchmark suite runs end to end in quick mode and writes what it promises.

No test here asserts a time: only that every figure was produced as a number.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RATIOS = ("log_vs_list_append", "log_vs_mlflow_log_metric", "log_vs_aim_track",
          "ingest_vs_executemany", "callback_overhead_fraction", "bytes_vs_mlflow",
          "list_vs_mlflow_search")
# The cases that feed the ratios; the quick run of the whole suite adds the
# growth curves, memory and import figures (`python -m benchmarks --quick`).
CASES = ("log_cost", "peers", "ingest", "callback", "cli_scale", "mlflow_scale",
         "imports")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench-results")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-server", "--out", str(out),
         "--only", *CASES],
        cwd=str(ROOT), capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((out / "latest.json").read_text())
    doc["_out"] = str(out)
    doc["_stdout"] = proc.stdout
    return doc


def test_every_ratio_is_a_finite_number(results: dict) -> None:
    ratios = results["ratios"]
    for key in RATIOS:
        assert isinstance(ratios[key], (int, float)), key
        assert math.isfinite(ratios[key]), (key, ratios[key], results["notes"])


def test_versions_and_machine_are_recorded(results: dict) -> None:
    versions = results["versions"]
    for dist in ("python", "sqlite", "align-track", "mlflow", "aim", "clearml"):
        assert versions[dist], dist
    machine = results["machine"]
    assert machine["cpus"] >= 1 and machine["python"] and machine["platform"]
    assert results["mode"] == "quick"
    assert results["sizes"]["ingest_n"] > 0


def test_figures_have_min_and_median_and_no_case_failed(results: dict) -> None:
    assert not [n for n in results["notes"] if "failed" in n], results["notes"]
    fig = results["results"]["align_track_log"]["per_point"]
    assert fig["min"] <= fig["median"] and len(fig["samples"]) >= 2
    assert results["results"]["import"]["heavy_modules_loaded"] is not None


def test_paired_ratios_come_from_each_round(results: dict) -> None:
    # log() against the floor timed beside it, and each tracked sweep against the
    # untracked one of its round: one sample a round, and the ratio is their median
    sizes, r = results["sizes"], results["results"]
    log = r["align_track_log"]
    assert len(log["ratio"]["samples"]) == len(log["paired_floor"]["samples"]) == sizes["bursts"]
    assert results["ratios"]["log_vs_list_append"] == log["ratio"]["median"]
    assert results["ratios"]["bare_log_vs_list_append"] == log["bare_ratio"]["median"] > 1
    cb = r["callback"]
    assert len(cb["overhead_fraction"]["samples"]) == sizes["sweep_repeats"]
    assert results["ratios"]["callback_overhead_fraction"] == cb["overhead_fraction"]["median"]


def test_markdown_table_and_plots_are_written(results: dict) -> None:
    out = Path(results["_out"])
    table = (out / "latest.md").read_text()
    assert "| figure | min | median | N |" in table
    assert "align_track.log per point" in table
    assert table.strip() in results["_stdout"]
    assert {p.name for p in out.glob("*.png")} >= {"log_cost.png", "list_vs_runs.png"}
