"""Sweeps: each job of each launcher tracked exactly once; a sweep browsable as a unit.

Each test runs tests/apps/sweep/app.py (or a copy) in a subprocess, as a user would,
and reads the store back through the `experiments` CLI's JSON.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import experiments_json, run_app

APPS = Path(__file__).parent / "apps"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    shutil.copytree(APPS / "sweep", tmp_path / "sweep",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "sweep" / "app.py"


def _db(app: Path) -> str:
    return str(app.parent / "experiments.db")


def _runs(app: Path, *extra: str) -> List[dict]:
    return experiments_json("--db", _db(app), "list", "--limit", "0", *extra)


def _by_job(runs: List[dict]) -> Dict[int, dict]:
    by_job = {r["job_num"]: r for r in runs}
    assert len(by_job) == len(runs), "two runs carry the same job number"
    return by_job


def _job_points(app: Path) -> Dict[str, dict]:
    """Per run: count, min, max and distinct steps of the `job` metric."""
    rows = experiments_json(
        "--db", _db(app), "query",
        "SELECT run_id, count(*) AS n, min(value) AS lo, max(value) AS hi,"
        " count(DISTINCT step) AS steps, min(step) AS first FROM metrics"
        " WHERE name = 'job' GROUP BY run_id")
    return {r["run_id"]: r for r in rows}


def _pids(app: Path, runs: List[dict]) -> set:
    return {experiments_json("--db", _db(app), "show", r["id"])["env"]["pid"]
            for r in runs}


def _assert_one_run_per_job(app: Path, jobs: int, points: int) -> List[dict]:
    """Each job one run, and each run holds only its own job's points."""
    runs = _runs(app)
    by_job = _by_job(runs)
    assert sorted(by_job) == list(range(jobs))
    assert len({r["id"] for r in runs}) == jobs
    assert len({r["sweep_id"] for r in runs}) == 1 and runs[0]["sweep_id"]
    points_of = _job_points(app)
    for num, run in by_job.items():
        x = run["params"]["x"]
        got = points_of[run["id"]]
        # values encode x: a point from another job would fall outside this range
        assert (got["n"], got["steps"], got["first"]) == (points, points, 0), (num, got)
        assert (got["lo"], got["hi"]) == (x * 1000, x * 1000 + points - 1), (num, got)
        # log() reached this job's own run
        assert run["params"]["seen.run"] == run["id"]
    return runs


def test_basic_launcher_isolates_jobs_and_counts_the_failure(app: Path) -> None:
    proc = run_app(app, "-m", "+tracker=sqlite", "x=0,1,2,3", "fail_at=2", check=False)
    assert "job with x=2 fails on purpose" in proc.stderr

    runs = _assert_one_run_per_job(app, jobs=4, points=3)
    by_job = _by_job(runs)
    assert {n: r["status"] for n, r in by_job.items()} == {
        0: "finished", 1: "finished", 2: "failed", 3: "finished"}
    failed = experiments_json("--db", _db(app), "show", by_job[2]["id"])
    assert failed["error"]["type"] == "ValueError"
    assert failed["metrics"]["job"][-1]["value"] == 2002  # logged before the raise
    # nothing of job 0 (its tag, its extra metric) reaches the jobs after it
    assert by_job[0]["tags"] == {"first": "yes"}
    assert "first_only" in by_job[0]["metrics"]
    for num in (1, 2, 3):
        assert by_job[num]["tags"] == {}
        assert "first_only" not in by_job[num]["metrics"]
        assert by_job[num]["params"]["seen.tags"] == ""
    # the job after the failure got a fresh run, with steps counted from 0
    third = experiments_json("--db", _db(app), "show", by_job[3]["id"])
    assert [p["step"] for p in third["metrics"]["job"]] == [0, 1, 2]
    assert third["return_value"] == 3.0
    # Hydra's env_set is applied per job; no job sees variables another job left
    assert {r["params"]["seen.env"] for r in runs} == {"from-env-set"}
    env_keys = {Path(r["output_dir"], "env_keys.json").read_text() for r in runs}
    assert len(env_keys) == 1

    [sweep] = experiments_json("--db", _db(app), "sweeps")
    assert sweep["id"] == runs[0]["sweep_id"]
    assert (sweep["jobs"], sweep["finished"], sweep["failed"], sweep["interrupted"],
            sweep["jobs_expected"], sweep["missing"]) == (4, 3, 1, 0, 4, 0)
    assert sweep["sweeper"].endswith("BasicSweeper")
    assert sweep["launcher"].endswith("BasicLauncher")
    assert sweep["dir"] == str(Path(runs[0]["output_dir"]).parent)
    assert sweep["overrides"] == ["+tracker=sqlite", "x=0,1,2,3", "fail_at=2"]
    latest = _runs(app, "--sweep", "latest")
    assert {r["id"] for r in latest} == {r["id"] for r in runs}


def test_settings_swept_per_job_apply_to_that_job(app: Path) -> None:
    run_app(app, "-m", "+tracker=sqlite", "x=0", "tracker.log_hydra_files=false,true")

    stored = {num: {a["name"] for a in experiments_json(
                  "--db", _db(app), "show", run["id"])["artifacts"]}
              for num, run in _by_job(_runs(app)).items()}
    assert set(stored) == {0, 1}
    assert not any(name.startswith(".hydra/") for name in stored[0])  # false
    assert {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"} <= stored[1]


def test_a_sweep_whose_jobs_never_start_shows_them_missing(app: Path) -> None:
    # Hydra applies env_set before on_job_start: a bad interpolation there fails the
    # launch of the first job, so no job ever opens a run.
    proc = run_app(app, "-m", "+tracker=sqlite", "x=0,1",
                   "+hydra.job.env_set.BROKEN=${no_such_key}", check=False)
    assert proc.returncode != 0
    assert _runs(app) == []

    [sweep] = experiments_json("--db", _db(app), "sweeps")
    assert (sweep["jobs"], sweep["jobs_expected"], sweep["missing"]) == (0, 2, 2)


def test_joblib_launcher_processes(app: Path) -> None:
    run_app(app, "-m", "+tracker=sqlite", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=4", "x=0,1,2,3", "points=20", "sleep=0.01")

    runs = _assert_one_run_per_job(app, jobs=4, points=20)
    assert {r["status"] for r in runs} == {"finished"}
    assert len(_pids(app, runs)) > 1  # the jobs really ran in several worker processes
    [sweep] = experiments_json("--db", _db(app), "sweeps")
    assert sweep["launcher"].endswith("JoblibLauncher")
    assert (sweep["jobs"], sweep["finished"], sweep["missing"]) == (4, 4, 0)


def test_jobs_in_threads_of_one_process_log_to_their_own_runs(app: Path) -> None:
    # hydra-joblib-launcher runs `backend=threading` as loky processes; the test
    # launcher in tests/apps/sweep/hydra_plugins really runs the jobs in 4 threads.
    run_app(app, "-m", "+tracker=sqlite", "hydra/launcher=threads", "x=0,1,2,3",
            "points=30", "sleep=0.01")

    runs = _assert_one_run_per_job(app, jobs=4, points=30)
    assert {r["status"] for r in runs} == {"finished"}
    assert len(_pids(app, runs)) == 1
    by_job = _by_job(runs)
    assert [n for n, r in by_job.items() if r["tags"]] == [0]


def test_submitit_local_launcher_carries_the_sweep(app: Path) -> None:
    run_app(app, "-m", "+tracker=sqlite", "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=2", "x=0,1", "points=5")

    runs = _assert_one_run_per_job(app, jobs=2, points=5)
    assert {r["status"] for r in runs} == {"finished"}
    [sweep] = experiments_json("--db", _db(app), "sweeps")
    assert sweep["id"] == runs[0]["sweep_id"]
    assert sweep["launcher"].endswith("submitit_launcher.LocalLauncher")
    assert (sweep["jobs"], sweep["finished"], sweep["missing"]) == (2, 2, 0)
    for run in runs:
        shown = experiments_json("--db", _db(app), "show", run["id"])
        assert shown["sweep_id"] == sweep["id"]
        assert shown["output_dir"].startswith(sweep["dir"])


def test_optuna_sweeper_records_every_trial(app: Path) -> None:
    # two batches of two trials; the last trial returns NaN. hydra-optuna-sweeper
    # 1.3 with optuna 2.10 then raises in study.tell ("Values were told...") after
    # the batch: the sweep fails, but every trial must be in the store.
    proc = run_app(app, "-m", "+tracker=sqlite", "hydra/sweeper=optuna",
                   "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
                   "hydra.sweeper.sampler.seed=3", "x=range(0,10)", "nan_job=3",
                   check=False)

    runs = _assert_one_run_per_job(app, jobs=4, points=3)
    by_job = _by_job(runs)
    assert {r["status"] for r in runs} == {"finished"}, proc.stderr[-2000:]
    for num, run in by_job.items():
        value = run["metrics"]["return_value"]
        if num == 3:
            assert math.isnan(value)  # the NaN trial is recorded, not lost
        else:
            assert value == run["params"]["x"]
    nan_run = experiments_json("--db", _db(app), "show", by_job[3]["id"])
    assert math.isnan(nan_run["metrics"]["return_value"][0]["value"])
    assert math.isnan(nan_run["return_value"])
    [sweep] = experiments_json("--db", _db(app), "sweeps")
    assert sweep["sweeper"].endswith("OptunaSweeper")
    assert (sweep["jobs"], sweep["jobs_expected"], sweep["missing"]) == (4, 4, 0)
    # the sweeper hands jobs no trial number of its own: hydra.job.num stands in
    assert sorted(r["params"]["trial"] for r in runs) == [0, 1, 2, 3]


def test_group_puts_single_runs_in_one_sweep(app: Path) -> None:
    # a shell loop, `for x in 1 3 2; do python app.py x=$x; done`, grouped two ways
    env = {**os.environ, "ALIGN_TRACK_GROUP": "seeds"}
    cmds = [([sys.executable, str(app), "+tracker=sqlite", "x=1"], env),
            ([sys.executable, str(app), "+tracker=sqlite", "x=3"], env),
            ([sys.executable, str(app), "+tracker=sqlite", "tracker.group=seeds",
              "x=2"], dict(os.environ)),
            ([sys.executable, str(app), "+tracker=sqlite", "x=9"],  # not in the group
             dict(os.environ))]
    # started together to keep the test short; each is a single run all the same
    procs = [subprocess.Popen(c, cwd=app.parent, env=e, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c, e in cmds]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs

    db = _db(app)
    [group] = experiments_json("--db", db, "sweeps")
    assert (group["id"], group["jobs"], group["finished"]) == ("seeds", 3, 3)
    grouped = _runs(app, "--sweep", "seeds")
    assert sorted(r["params"]["x"] for r in grouped) == [1, 2, 3]
    assert {r["job_num"] for r in grouped} == {None}
    assert len(_runs(app)) == 4

    out = experiments_json("--db", db, "compare", "--sweep", "seeds",
                           "--sort", "return_value", "--desc")
    best = next(r for r in grouped if r["params"]["x"] == 3)
    assert out["best"] == best["id"]
    assert [r["id"] for r in out["runs"]][0] == best["id"]
    assert sorted(out["params"]["x"]) == [1, 2, 3]
    assert "points" not in out["params"]  # only the params that vary are shown


def test_run_ids_are_unique_and_do_not_depend_on_the_output_dir(app: Path) -> None:
    # two jobs started at the same moment, writing into the same fixed output dir
    cmd = [sys.executable, str(app), "+tracker=sqlite", "hydra.run.dir=fixed"]
    procs = [subprocess.Popen(cmd, cwd=app.parent, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs

    runs = _runs(app)
    assert len(runs) == 2
    assert runs[0]["id"] != runs[1]["id"]
    assert {r["output_dir"] for r in runs} == {str(app.parent / "fixed")}
    assert {r["status"] for r in runs} == {"finished"}
    assert {r["sweep_id"] for r in runs} == {None}
    assert {r["params"]["seen.run"] for r in runs} == {r["id"] for r in runs}
