"""tracker=clearml against the real ClearML SDK, offline, read back from the session.

Every app runs in a subprocess with CLEARML_OFFLINE_MODE=1, its cache (where offline
sessions go), HOME and clearml.conf inside tmp_path, under the network guard. A test
reads each offline session folder back from disk: task.json (config, hyperparameters,
user properties, tags, artifacts), metrics.jsonl (scalars) and log.jsonl (console).
"""
from __future__ import annotations

import hashlib
import json
import signal
import zipfile
from pathlib import Path
from typing import Any, Dict, List

import pytest

from align_track.backends.clearml import NONFINITE_ARTIFACT, title_series
from conftest import run_app, write_app

import clearml  # noqa: E402,F401 - CI installs every backend: a missing one fails

APP = '''
import json
import os
import signal
import threading

import hydra

import align_track


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg):
    for step in range(3):
        align_track.log({"train/loss": cfg.lr * (step + 1), "acc": step / 10},
                        step=step)
    align_track.log({"loss": 0.5}, step=7, context={"subset": "val"})
    if cfg.rich:
        align_track.log({"odd": float("nan")}, step=0)
        align_track.log({"odd": float("inf")}, step=1)
        align_track.log({"odd": 2.0}, step=2)
        align_track.set_tags(model="mlp", stage="a")
        align_track.set_tags(stage="b")
        align_track.log_params({"extra": {"k": 1}})
        with open("weights.bin", "wb") as fh:
            fh.write(bytes(range(256)) * 8)
        stored = align_track.log_artifact("weights.bin", name="model/weights.bin")
        launch = hydra.utils.get_original_cwd()
        with open(os.path.join(launch, "stored.json"), "w") as fh:
            json.dump(stored, fh)

        def worker(i):
            for s in range(50):
                align_track.log({f"thread/t{i}": float(s)}, step=s)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        os.kill(os.getpid(), signal.SIGTERM)
    if cfg.x == 3:
        raise ValueError("job three fails")
    return cfg.lr * 10


if __name__ == "__main__":
    main()
'''

CONFIG = """\
x: 0
lr: 0.1
rich: false
label: run-${x}
long: "%s"
model:
  layers: [64, 32]
  name: mlp
""" % ("v" * 600)


@pytest.fixture
def clearml_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Any]:
    """Offline ClearML confined to tmp_path: cache, HOME and clearml.conf."""
    for var in ("CLEARML_API_HOST", "TRAINS_API_HOST", "CLEARML_PROC_MASTER_ID",
                "CLEARML_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    conf = tmp_path / "clearml.conf"
    conf.write_text("# written by test_backend_clearml: no server configured\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {"CLEARML_OFFLINE_MODE": "1", "CLEARML_CACHE_DIR": str(tmp_path / "cache"),
           "CLEARML_CONFIG_FILE": str(conf), "HOME": str(home)}
    app = write_app(tmp_path / "app", APP, CONFIG)
    return {"env": env, "app": app, "offline": tmp_path / "cache" / "offline"}


def read_sessions(offline: Path) -> List[Dict[str, Any]]:
    """Every offline session under ``offline``: task.json, scalars and console lines."""
    sessions = []
    for folder in sorted(p for p in offline.iterdir() if p.is_dir()):
        task = json.loads((folder / "task.json").read_text())
        events: List[Dict[str, Any]] = []
        metrics = folder / "metrics.jsonl"
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                if line.strip():
                    events.extend(json.loads(line))
        logs: List[Dict[str, Any]] = []
        for line in (folder / "log.jsonl").read_text().splitlines():
            if line.strip():
                logs.extend(json.loads(line))
        scalars: Dict[Any, Dict[int, float]] = {}
        for ev in events:
            if ev.get("type") == "training_stats_scalar":
                series = scalars.setdefault((ev["metric"], ev["variant"]), {})
                series[ev["iter"]] = ev["value"]
        hyper = task["hyperparams"]
        props = {k: v["value"] for k, v in hyper.get("properties", {}).items()}
        params = {k: v["value"] for k, v in hyper.get("Config", {}).items()}
        artifacts = {a["key"]: a for a in task["execution"].get("artifacts", [])}
        sessions.append({"folder": folder, "task": task, "scalars": scalars,
                         "logs": logs, "props": props, "params": params,
                         "artifacts": artifacts})
    return sessions


def test_title_series_rule():
    assert title_series("train/loss") == ("train", "loss")
    assert title_series("a/b/c") == ("a/b", "c")
    assert title_series("loss") == ("loss", "loss")
    assert title_series("loss", '{"subset":"val"}') == ("loss", "loss [subset=val]")
    assert title_series("train/acc", '{"fold":2,"subset":"val"}') == (
        "train", "acc [fold=2, subset=val]")
    assert title_series("/x") == ("/x", "/x")


def test_sweep_of_four_jobs_one_failing(clearml_env: Dict[str, Any]):
    proc = run_app(clearml_env["app"], "-m", "+tracker=clearml", "tracker.offline=true",
                   "x=0,1,2,3", env=clearml_env["env"], check=False)
    assert proc.returncode != 0  # Hydra re-raises job 3's error after the sweep
    assert "job three fails" in proc.stderr
    sessions = read_sessions(clearml_env["offline"])
    assert len(sessions) == 4, proc.stderr[-3000:]
    by_job = {int(s["props"]["align_track.job_num"]): s for s in sessions}
    assert sorted(by_job) == [0, 1, 2, 3]
    assert len({s["task"]["id"] for s in sessions}) == 4
    sweep_ids = {s["props"]["align_track.sweep_id"] for s in sessions}
    assert len(sweep_ids) == 1
    sweep_tag = f"sweep={sweep_ids.pop()}"

    for job, s in by_job.items():
        task = s["task"]
        assert sweep_tag in task["tags"]
        assert task["project_name"] == "app"
        assert task["name"] == f"app x={job}"
        # the Hydra config, unresolved, as ClearML shows Hydra's
        config = task["configuration"]["OmegaConf"]["value"]
        assert f"x: {job}\n" in config and "label: run-${x}" in config
        assert "tracker" not in config and "hydra:" not in config
        facts = json.loads(task["configuration"]["align_track"]["value"])
        assert facts["job_num"] == job and "x=%d" % job in facts["overrides"]
        # the flattened, resolved params
        assert s["params"]["x"] == str(job)
        assert s["params"]["label"] == f"run-{job}"
        assert s["params"]["long"] == "v" * 600
        assert s["params"]["model.name"] == "mlp"
        assert json.loads(s["params"]["model.layers"]) == [64, 32]
        # scalars: title/series from the name, step -> iteration, context in series
        assert s["scalars"][("train", "loss")] == pytest.approx(
            {0: 0.1, 1: 0.2, 2: 0.3})
        assert s["scalars"][("acc", "acc")] == pytest.approx({0: 0.0, 1: 0.1, 2: 0.2})
        assert s["scalars"][("loss", "loss [subset=val]")] == {7: 0.5}
        # Hydra's files attached by the callback
        for name in (".hydra/config.yaml", ".hydra/overrides.yaml"):
            art = s["artifacts"][name]
            assert Path(art["uri"]).is_file()
            assert str(art["uri"]).startswith(str(s["folder"]))
        assert Path(str(s["folder"]) + ".zip").is_file()

    for job in (0, 1, 2):
        s = by_job[job]
        assert s["props"]["align_track.status"] == "finished"
        assert "align_track.error" not in s["props"]
        assert s["scalars"][("return_value", "return_value")] == pytest.approx({0: 1.0})
        assert "traceback.txt" not in s["artifacts"]

    failed = by_job[3]
    assert failed["props"]["align_track.status"] == "failed"
    assert failed["props"]["align_track.error"] == "ValueError: job three fails"
    tb = Path(failed["artifacts"]["traceback.txt"]["uri"]).read_text()
    assert "ValueError: job three fails" in tb and "app.py" in tb
    errors = [e["msg"] for e in failed["logs"] if e.get("level") == "error"]
    assert any("job three fails" in m for m in errors)
    assert ("return_value", "return_value") not in failed["scalars"]


def test_single_run_tags_artifacts_nonfinite_threads_interrupted(
        clearml_env: Dict[str, Any]):
    proc = run_app(clearml_env["app"], "+tracker=clearml", "tracker.offline=true",
                   "rich=true", "++tracker.tags={team: nlp}", env=clearml_env["env"],
                   check=False)
    assert proc.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM), proc.stderr
    sessions = read_sessions(clearml_env["offline"])
    assert len(sessions) == 1, proc.stderr[-3000:]
    s = sessions[0]
    task = s["task"]
    assert task["name"] == "app rich=true"
    assert "align_track.sweep_id" not in s["props"]
    assert not any(t.startswith("sweep=") for t in task["tags"])
    # tags: settings' tags and set_tags(), a key set twice keeps the last value
    assert sorted(task["tags"]) == ["model=mlp", "stage=b", "team=nlp"]
    # status: SIGTERM closes the run as interrupted
    assert s["props"]["align_track.status"] == "interrupted"
    assert "SIGTERM" in s["props"]["align_track.error"]
    # params added by log_params()
    assert s["params"]["extra.k"] == "1"
    # artifact: stored bytes, and what log_artifact() returned
    data = bytes(range(256)) * 8
    art = s["artifacts"]["model/weights.bin"]
    assert Path(art["uri"]).read_bytes() == data
    assert art["hash"] == hashlib.sha256(data).hexdigest()
    (stored,) = json.loads((clearml_env["app"].parent / "stored.json").read_text())
    assert stored["name"] == "model/weights.bin"
    assert stored["size"] == len(data)
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    # NaN/inf: ClearML would plot 0.0, so they are left out of the scalars...
    assert s["scalars"][("odd", "odd")] == {2: 2.0}
    # ...and listed in an artifact instead
    listed = json.loads(Path(s["artifacts"][NONFINITE_ARTIFACT]["uri"]).read_text())
    assert listed["count"] == 2
    points = [(p["step"], p["value"]) for p in listed["points"]]
    assert points == [(0, "nan"), (1, "inf")]
    # points logged from 4 threads all arrive
    for i in range(4):
        assert s["scalars"][("thread", f"t{i}")] == {k: float(k) for k in range(50)}
    # the zip that clearml-task --import-offline-session takes
    with zipfile.ZipFile(str(s["folder"]) + ".zip") as zf:
        names = zf.namelist()
    assert "task.json" in names and "metrics.jsonl" in names


def test_online_without_a_server_never_falls_back_to_hosted(
        clearml_env: Dict[str, Any]):
    env = dict(clearml_env["env"])
    env.pop("CLEARML_OFFLINE_MODE")
    env["CLEARML_OFFLINE_MODE"] = "0"
    proc = run_app(clearml_env["app"], "+tracker=clearml", env=env)
    # the job runs untracked and says why; the network guard saw no connection
    assert "needs your ClearML server" in proc.stderr + proc.stdout
    assert "tracking is off for this job" in proc.stderr + proc.stdout
    assert not clearml_env["offline"].exists()
