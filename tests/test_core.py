"""The core path: Hydra jobs become runs in the SQLite store, read back through the CLI."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

import align_track
from conftest import experiments, experiments_json, run_app

APPS = Path(__file__).parent / "apps"


@pytest.fixture
def basic(tmp_path: Path) -> Path:
    shutil.copytree(APPS / "basic", tmp_path / "basic")
    return tmp_path / "basic" / "app.py"


def _runs(db: Path, *extra: str) -> list:
    return experiments_json("--db", str(db), "list", "--limit", "0", *extra)


def _show(db: Path, run_id: str) -> dict:
    return experiments_json("--db", str(db), "show", run_id)


def test_single_run_records_config_metrics_and_facts(basic: Path) -> None:
    run_app(basic, "+tracker=sqlite", "lr=0.5")

    db = basic.parent / "experiments.db"
    [summary] = _runs(db)
    run = _show(db, summary["id"])
    assert run["status"] == "finished"
    assert run["experiment"] == "app"
    assert run["name"] == "app lr=0.5"
    assert run["config"]["lr"] == 0.5
    assert run["params"] == {"lr": 0.5, "hidden": 32, "epochs": 3, "threads": 0,
                             "points": 0, "special": False, "fail": False}
    assert run["overrides"] == ["+tracker=sqlite", "lr=0.5"]
    assert run["choices"]["tracker"] == "sqlite"
    assert [p["step"] for p in run["metrics"]["loss"]] == [0, 1, 2]
    assert [p["value"] for p in run["metrics"]["loss"]] == pytest.approx([0.5, 0.25, 0.5 / 3])
    assert run["metrics"]["acc[subset=val]"][0]["value"] == 0.5
    assert run["metrics"]["acc[subset=val]"][0]["context"] == {"subset": "val"}
    assert run["metrics"]["return_value"][0]["value"] == 5.0
    assert run["return_value"] == 5.0
    assert run["tags"] == {"model": "mlp"}
    assert run["env"]["pid"] > 0 and run["env"]["python"]
    assert run["env"]["store"] == f"sqlite:///{db}"
    assert run["ended_at"] >= run["started_at"]
    assert {a["name"] for a in run["artifacts"]} >= {".hydra/config.yaml",
                                                     ".hydra/overrides.yaml", "app.log"}
    assert summary["metrics"]["loss"] == pytest.approx(0.5 / 3)


def _git(repo: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                           *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_state_of_the_launch_checkout(basic: Path) -> None:
    repo = basic.parent
    _git(repo, "init", "-q", "-b", "trial")
    _git(repo, "add", "app.py", "config.yaml")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")

    run_app(basic, "+tracker=sqlite")
    (repo / "config.yaml").write_text((repo / "config.yaml").read_text() + "\n# edited\n")
    run_app(basic, "-m", "+tracker=sqlite", "lr=0.1,0.2")

    db = repo / "experiments.db"
    runs = [_show(db, r["id"]) for r in _runs(db)]
    states = sorted((r["git"]["dirty"], r["name"]) for r in runs)
    assert [dirty for dirty, _ in states] == [False, True, True]
    for run in runs:
        assert run["git"]["commit"] == head and run["git"]["branch"] == "trial"
        assert Path(run["git"]["root"]).resolve() == repo.resolve()


def test_no_git_state_outside_a_checkout(basic: Path, tmp_path: Path) -> None:
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}  # stop git looking above
    run_app(basic, "+tracker=sqlite", env=env)

    db = basic.parent / "experiments.db"
    [run] = _runs(db)
    assert _show(db, run["id"])["git"] == {}


def test_multirun_records_one_run_per_job_in_one_sweep(basic: Path) -> None:
    run_app(basic, "-m", "+tracker=sqlite", "lr=0.01,0.1", "hidden=32,64")

    runs = _runs(basic.parent / "experiments.db")
    assert len(runs) == 4
    assert {(r["params"]["lr"], r["params"]["hidden"]) for r in runs} == {
        (0.01, 32), (0.01, 64), (0.1, 32), (0.1, 64)}
    assert {r["status"] for r in runs} == {"finished"}
    assert len({r["sweep_id"] for r in runs}) == 1 and runs[0]["sweep_id"]
    assert sorted(r["job_num"] for r in runs) == [0, 1, 2, 3]
    assert len({r["id"] for r in runs}) == 4


def test_failed_job_keeps_metrics_and_traceback(basic: Path) -> None:
    proc = run_app(basic, "+tracker=sqlite", "fail=true", check=False)
    assert proc.returncode != 0

    db = basic.parent / "experiments.db"
    [summary] = _runs(db)
    run = _show(db, summary["id"])
    assert run["status"] == "failed"
    assert run["error"]["type"] == "ValueError"
    assert "planned failure with lr=0.1" in run["error"]["message"]
    assert "raise ValueError" in run["error"]["traceback"]
    assert len(run["metrics"]["loss"]) == 3


def test_chdir_true_keeps_store_in_launch_dir(basic: Path, tmp_path: Path) -> None:
    run_app(basic, "+tracker=sqlite", "hydra.job.chdir=true", "tracker.db=runs/x.db")

    db = basic.parent / "runs" / "x.db"
    assert db.exists()
    [run] = _runs(db)
    assert run["status"] == "finished"
    assert not list(basic.parent.glob("outputs/**/runs"))


def test_env_var_picks_the_store(basic: Path, tmp_path: Path) -> None:
    db = tmp_path / "from_env.db"
    run_app(basic, "+tracker=sqlite", env={"ALIGN_TRACK_DB": str(db)})

    assert len(_runs(db)) == 1
    assert not (basic.parent / "experiments.db").exists()


def test_tricky_config_is_captured_without_breaking_the_job(tmp_path: Path) -> None:
    app_dir = tmp_path / "tricky"
    shutil.copytree(APPS / "tricky", app_dir)
    counter = tmp_path / "counter"
    counter.write_text("")

    run_app(app_dir / "app.py", "+tracker=sqlite", env={"COUNTER_FILE": str(counter)})

    db = app_dir / "experiments.db"
    [summary] = _runs(db)
    run = _show(db, summary["id"])
    assert run["status"] == "finished"
    params = run["params"]
    assert params["model.name"] == "${ref:mistral}"  # resolver exists only inside the task
    assert params["seed"] == 7
    assert params["missing_value"] == "???"
    assert params["alias"] == 64
    assert params['key with spaces."ADEPT-DryRun-Moral judgement-0.2"'] == 0.2
    assert params["key with spaces.a@b/c"] is True
    assert params['"dotted.key"'] == 1
    assert params["steps"] == [{"name": "first", "weight": 0.5},
                               {"name": "second", "weight": 64}]
    assert params["empty"] == {}
    assert params["nothing"] is None
    assert len(params["blob"]) == 70_000
    assert "${ref:mistral}" in run["config_yaml"] and "???" in run["config_yaml"]
    assert not any(k.startswith("hydra") for k in params)
    assert counter.read_text().count("x") == 1  # resolved once, at job start


def test_threads_lose_no_point(basic: Path) -> None:
    run_app(basic, "+tracker=sqlite", "threads=4", "points=5000")

    db = basic.parent / "experiments.db"
    [summary] = _runs(db)
    out = experiments_json("--db", str(db), "query",
                           "SELECT name, count(*) AS n, count(DISTINCT step) AS steps "
                           "FROM metrics WHERE name LIKE 'thread%' GROUP BY name")
    assert sorted(r["name"] for r in out) == ["thread0", "thread1", "thread2", "thread3"]
    assert all(r["n"] == 5000 and r["steps"] == 5000 for r in out)


def test_nan_and_inf_round_trip(basic: Path) -> None:
    run_app(basic, "+tracker=sqlite", "special=true")

    db = basic.parent / "experiments.db"
    run = _show(db, _runs(db)[0]["id"])
    assert math.isnan(run["metrics"]["nan"][0]["value"])
    assert run["metrics"]["pinf"][0]["value"] == math.inf
    assert run["metrics"]["ninf"][0]["value"] == -math.inf


def test_defaults_list_and_group_overrides(tmp_path: Path) -> None:
    app_dir = tmp_path / "own"
    shutil.copytree(APPS / "basic", app_dir)
    config = (app_dir / "config.yaml").read_text()
    (app_dir / "config.yaml").write_text("defaults:\n  - tracker: sqlite\n  - _self_\n" + config)

    run_app(app_dir / "app.py", "tracker.experiment=mine", "+tracker.tags.team=a")

    [run] = _runs(app_dir / "experiments.db")
    assert run["experiment"] == "mine"
    assert run["tags"] == {"team": "a", "model": "mlp"}


def test_app_tags_merge_whichever_comes_first_in_the_defaults(tmp_path: Path) -> None:
    # with _self_ before the option, the option's settings come last: its tags
    # mapping merges with the app's instead of replacing it
    app_dir = tmp_path / "own"
    shutil.copytree(APPS / "basic", app_dir)
    config = (app_dir / "config.yaml").read_text()
    (app_dir / "config.yaml").write_text("defaults:\n  - _self_\n  - tracker: sqlite\n"
                                         + config + "tracker:\n  tags:\n    owner: me\n")

    run_app(app_dir / "app.py", "+tracker.tags.team=a")

    [run] = _runs(app_dir / "experiments.db")
    assert run["tags"] == {"owner": "me", "team": "a", "model": "mlp"}


@pytest.mark.parametrize("override, message", [
    ("+tracker.dbb=x.db", "tracker.dbb is not a tracker setting; accepted keys: backend"),
    ("tracker.flush_interval=fast", "flush_interval"),
    ("tracker.flush_interval=inf", "must be a number of seconds > 0"),
    ("+tracker.tags={team: null}", "tracker.tags.team: null is not allowed"),
    ("tracker.tags=nlp", "write a mapping, as in tracker.tags={team: nlp}"),
    ("tracker.collect={a: 1}", "write a list, as in tracker.collect=[scores.json]"),
], ids=["misspelt-key", "bad-type", "infinite", "tag-entry", "tags-text", "collect-map"])
def test_bad_settings_fail_at_start(basic: Path, override: str, message: str) -> None:
    proc = run_app(basic, "+tracker=sqlite", override, check=False)

    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (basic.parent / "experiments.db").exists()


def test_a_setting_of_another_backend_is_named(basic: Path) -> None:
    proc = run_app(basic, "+tracker=sqlite", "+tracker.repo=aim-repo")

    assert "tracker.repo is a setting of the aim backend" in proc.stderr + proc.stdout
    assert "+tracker=aim" in proc.stderr + proc.stdout
    assert len(_runs(basic.parent / "experiments.db")) == 1  # the job still ran, tracked


def test_unknown_tracker_option_lists_the_choices(basic: Path) -> None:
    proc = run_app(basic, "+tracker=mlfow", check=False)

    assert proc.returncode != 0
    assert "sqlite" in proc.stderr and "mlflow" in proc.stderr


def test_callback_written_by_hand(tmp_path: Path) -> None:
    app_dir = tmp_path / "hand"
    shutil.copytree(APPS / "basic", app_dir)
    config = (app_dir / "config.yaml").read_text()
    (app_dir / "config.yaml").write_text(
        config + "hydra:\n  callbacks:\n    tracker:\n      _target_: align_track.TrackerCallback\n"
        "      db: hand.db\n      experiment: by-hand\n")

    run_app(app_dir / "app.py")

    [run] = _runs(app_dir / "hand.db")
    assert run["experiment"] == "by-hand"


def test_cli_version_and_whole_numbers_in_tables(tmp_path: Path) -> None:
    assert experiments("--version").stdout.strip() == f"align-track {align_track.__version__}"
    db = tmp_path / "e.db"
    with align_track.track_run("t", db=str(db)) as run:
        align_track.log({"tokens": 1999999.0, "loss": 0.25}, step=0)  # a count as a float

    shown = experiments("--db", str(db), "show", run.id).stdout
    assert "1999999" in shown and "2e+06" not in shown and "0.25" in shown


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    missing = experiments("--db", str(tmp_path / "none.db"), "list", check=False)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "no store at" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_cli_errors_on_a_real_store(basic: Path) -> None:
    run_app(basic, "+tracker=sqlite")
    db = str(basic.parent / "experiments.db")

    unknown = experiments("--db", db, "show", "ffffffff", check=False)
    bad_sql = experiments("--db", db, "query", "SELEC 1", check=False)

    for proc in (unknown, bad_sql):
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "no run with id 'ffffffff'" in unknown.stderr
    assert "syntax error" in bad_sql.stderr


@pytest.mark.parametrize("sql", [
    "DELETE FROM runs", "DROP TABLE runs", "UPDATE runs SET status = 'x'",
    "ATTACH DATABASE 'other.db' AS other", "INSERT INTO tags VALUES (1, 'a', 'b')",
    "PRAGMA user_version = 9", "SELECT load_extension('x')",
])
def test_query_is_read_only(basic: Path, sql: str) -> None:
    run_app(basic, "+tracker=sqlite")
    db = basic.parent / "experiments.db"
    before = db.read_bytes()

    proc = experiments("--db", str(db), "query", sql, check=False, cwd=basic.parent)

    assert proc.returncode == 1
    assert "read-only" in proc.stderr
    assert len(_runs(db)) == 1
    assert experiments_json("--db", str(db), "query", "SELECT count(*) AS n FROM tags") == [{"n": 1}]
    assert not (basic.parent / "other.db").exists()
    assert db.read_bytes() == before


def test_compare_shows_params_that_differ(basic: Path) -> None:
    run_app(basic, "-m", "+tracker=sqlite", "lr=0.01,0.1")
    db = str(basic.parent / "experiments.db")
    ids = [r["id"] for r in _runs(Path(db))]

    out = experiments_json("--db", db, "compare", *ids)
    table = experiments("--db", db, "compare", ids[0][:6], ids[1][:6]).stdout

    assert set(out["params"]) == {"lr"}
    assert sorted(out["params"]["lr"]) == [0.01, 0.1]
    assert {m["last"] for m in out["metrics"]["return_value"]} == {0.1, 1.0}
    assert "lr" in table and "hidden" not in table
