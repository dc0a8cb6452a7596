"""tracker.collect: results an app writes to files become metrics, params and artifacts.

tests/apps/collect/app.py writes align-system style files into its output dir; the
job is run in a subprocess and the store read back through the `experiments` CLI.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import experiments_json, run_app

APPS = Path(__file__).parent / "apps"
PATTERNS = ("[scores.json,timing.json,steps.json,missing.json,bad.json,deep.json,"
            "results/*.json]")


@pytest.fixture
def app(tmp_path: Path) -> Path:
    shutil.copytree(APPS / "collect", tmp_path / "collect",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "collect" / "app.py"


def _only_run(app: Path) -> dict:
    db = str(app.parent / "experiments.db")
    [summary] = experiments_json("--db", db, "list")
    return experiments_json("--db", db, "show", summary["id"])


def _points(run: dict, metric: str) -> list:
    return [(p["step"], p["value"]) for p in run["metrics"][metric]]


def test_result_files_become_metrics_params_and_artifacts(app: Path) -> None:
    proc = run_app(app, "+tracker=sqlite", f"tracker.collect={PATTERNS}")

    run = _only_run(app)
    assert run["status"] == "finished"
    # scores.json: cumulative records without step, the last one is the final value
    assert _points(run, "scores.score") == [(0, 0.75)]
    assert _points(run, "scores.n") == [(0, 3)]
    assert _points(run, "scores.alignment.kdma") == [(0, 0.3)]
    # timing.json: an object; numbers are metrics, short strings and booleans params
    assert _points(run, "timing.total") == [(0, 12.5)]
    assert _points(run, "timing.per_probe.p1") == [(0, 1.5)]
    assert run["params"]["timing.model"] == "llama"
    assert run["params"]["timing.cached"] is True
    assert "timing.notes" not in run["params"]  # long text stays in the artifact
    # steps.json: every record is a step
    assert _points(run, "steps.loss") == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert _points(run, "steps.acc") == [(2, 0.9)]
    # a glob into a subfolder
    assert _points(run, "results/probe.accuracy") == [(0, 0.8)]
    artifacts = {a["name"] for a in run["artifacts"]}
    assert {"scores.json", "timing.json", "steps.json", "results/probe.json",
            "bad.json"} <= artifacts

    # missing, malformed and unreadable files: one warning naming each, no failure
    out = proc.stdout + proc.stderr
    warnings = [line for line in out.splitlines() if "tracker.collect" in line]
    assert len(warnings) == 3, warnings
    assert any("missing.json" in line for line in warnings)
    assert any("bad.json" in line for line in warnings)
    assert any("deep.json" in line for line in warnings)
    assert not any(m.startswith(("bad.", "deep.", "missing.")) for m in run["metrics"])


def test_a_file_matched_by_several_patterns_is_read_once(app: Path) -> None:
    run_app(app, "+tracker=sqlite", "files=[scores,steps]",
            "tracker.collect=[scores.json,'*.json',steps.json]")

    run = _only_run(app)
    assert run["status"] == "finished"
    assert _points(run, "scores.score") == [(0, 0.75)]
    assert _points(run, "steps.loss") == [(0, 1.0), (1, 0.5), (2, 0.25)]
    stored = sorted(a["name"] for a in run["artifacts"] if a["name"].endswith(".json"))
    assert stored == ["scores.json", "steps.json"]


def test_collect_reads_the_files_of_a_failed_job_too(app: Path) -> None:
    proc = run_app(app, "+tracker=sqlite", "files=[scores,fail]",
                   "tracker.collect=[scores.json]", check=False)
    assert proc.returncode != 0

    run = _only_run(app)
    assert run["status"] == "failed"
    assert _points(run, "scores.score") == [(0, 0.75)]
