"""tracker=mlflow against a real `mlflow server` on 127.0.0.1 and a sqlite:/// file.

Everything is read back with MLflow's own client, as a user would.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from conftest import TELEMETRY_OFF, run_app

import mlflow  # noqa: E402,F401 - CI installs every backend: a missing one fails
from mlflow.tracking import MlflowClient  # noqa: E402

from align_track.backends.mlflow import (  # noqa: E402
    MLflowBackend,
    anchor_uri,
    clean_name,
    metric_name,
)
from align_track.records import RunEnd, RunRecord, SweepRecord  # noqa: E402
from align_track.settings import parse_settings  # noqa: E402

APP_SRC = Path(__file__).parent / "apps" / "mlflow_app"
DBL_MAX = 1.7976931348623157e308
LONG = "z" * 10_000
SERVER_ENV = {**TELEMETRY_OFF, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


# -- fixtures ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    """Start `mlflow server` at the first test of this module (it takes a while to
    boot; the tests that need no server run meanwhile) and stop its process group."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server",
         "--backend-store-uri", f"sqlite:///{root / 'm.db'}",
         "--default-artifact-root", str(root / "art"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=str(root), env={**os.environ, **SERVER_ENV}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    state = {"url": f"http://127.0.0.1:{port}", "proc": proc,
             "log": root / "server.log", "ready": False}
    try:
        yield state
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture()
def server(_server: Dict[str, Any]) -> str:
    """The URL of the running server, once /health answers."""
    if not _server["ready"]:
        deadline = time.time() + 180
        while time.time() < deadline:
            if _server["proc"].poll() is not None:
                pytest.fail("mlflow server exited:\n" + _tail(_server["log"]))
            try:
                with urllib.request.urlopen(_server["url"] + "/health", timeout=2):
                    _server["ready"] = True
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("mlflow server did not start:\n" + _tail(_server["log"]))
    return _server["url"]


def _tail(path: Path) -> str:
    return path.read_text()[-4000:]


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mlflow-app")
    for name in ("app.py", "config.yaml"):
        shutil.copy(APP_SRC / name, folder / name)
    return folder


def _runs(client: MlflowClient, experiment: str) -> List[Any]:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    return client.search_runs([exp.experiment_id], order_by=["start_time ASC"])


def _history(client: MlflowClient, run_id: str, key: str) -> List[Any]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def _text(client: MlflowClient, run_id: str, path: str) -> str:
    return Path(client.download_artifacts(run_id, path)).read_text()


def _files(client: MlflowClient, run_id: str, path: Any = None) -> List[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_files(client, run_id, item.path) if item.is_dir else [item.path])
    return out


# -- naming rules (no server) ----------------------------------------------------------


def test_names_are_made_valid_and_context_becomes_part_of_the_name() -> None:
    assert metric_name("acc", "") == "acc"
    assert metric_name("acc", json.dumps({"subset": "val"})) == "acc/subset/val"
    ctx = json.dumps({"subset": "val", "fold": 1}, sort_keys=True)
    assert metric_name("acc", ctx) == "acc/fold/1/subset/val"
    assert metric_name("acc", json.dumps({"path": "a/b"})) == "acc/path/a_b"
    assert clean_name("a=b") == "a_b"
    assert clean_name("x:y") == "x_y"
    assert clean_name("sp ace.ok-1/2") == "sp ace.ok-1/2"
    assert clean_name("/lead//double/") == "_/lead/_/double/_"
    long = clean_name("k" * 400)
    assert len(long) == 250 and long != clean_name("k" * 401)


def test_tracking_uri_is_anchored_to_the_launch_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = parse_settings({"backend": "mlflow"})
    key, kwargs = MLflowBackend.from_settings(default, str(tmp_path))
    assert key == kwargs["tracking_uri"] == f"sqlite:///{tmp_path}/mlflow.db"
    assert kwargs["artifact_root"] == str(tmp_path / "mlruns")
    assert anchor_uri("sqlite:///sub/x.db", "/l") == "sqlite:////l/sub/x.db"
    assert anchor_uri("sqlite:////abs/x.db", "/l") == "sqlite:////abs/x.db"
    assert anchor_uri("http://127.0.0.1:5000", "/l") == "http://127.0.0.1:5000"
    remote = parse_settings({"backend": "mlflow", "tracking_uri": "http://127.0.0.1:1"})
    assert MLflowBackend.from_settings(remote, "/l")[1] == {
        "tracking_uri": "http://127.0.0.1:1"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    assert MLflowBackend.from_settings(default, "/l")[0] == "sqlite:////l/from-env.db"


# -- a plain sqlite:/// store, no server -----------------------------------------------


def test_default_sqlite_store_lands_in_the_launch_dir(
    app_dir: Path, tmp_path: Path
) -> None:
    launch = tmp_path / "launch"
    launch.mkdir()
    run_app(app_dir / "app.py", "+tracker=mlflow", "hydra.job.chdir=true",
            f"hydra.run.dir={tmp_path / 'job'}", cwd=launch,
            env={"MLFLOW_TRACKING_URI": ""})
    assert (launch / "mlflow.db").is_file()
    assert not (tmp_path / "job" / "mlflow.db").exists()
    assert not (tmp_path / "job" / "mlruns").exists()
    client = MlflowClient(f"sqlite:///{launch / 'mlflow.db'}")
    (run,) = _runs(client, "app")
    assert run.info.status == "FINISHED"
    assert _history(client, run.info.run_id, "loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert _text(client, run.info.run_id, "reports/final.txt") == "report lr=0.1\n"
    assert run.info.artifact_uri.startswith(str(launch / "mlruns"))


# -- against a server ------------------------------------------------------------------


def test_single_run_on_a_server(server: str, app_dir: Path) -> None:
    proc = run_app(app_dir / "app.py", "+tracker=mlflow",
                   f"tracker.tracking_uri={server}", "tracker.experiment=single",
                   "+tracker.tags.team=vision",
                   # the long value comes through oc.env, whose values are masked
                   # unless masking is off: here the subject is MLflow's length limit
                   "tracker.redact=[]",
                   env={"LONG_VALUE": LONG})
    client = MlflowClient(server)
    (run,) = _runs(client, "single")
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "app"

    # params: every config leaf, as text; names made valid; long values marked
    params = run.data.params
    assert params["lr"] == "0.1" and params["value"] == "1"
    assert params["fail"] == "False"
    assert params["model.name"] == "mlp" and params["model.layers"] == "[1, 2, 3]"
    assert params["weird.a_b"] == "1" and params["weird.x_y"] == "2"
    assert params["weird.sp ace"] == "3"
    assert len(params["long"]) == 6000
    assert params["long"].endswith("...[truncated, see config_resolved.yaml]")
    assert params["notes"].endswith("...[truncated, see logged_params.json]")
    assert "MLflow does not accept these param names" in proc.stdout + proc.stderr

    # nothing is lost: the configs and the names mapping are artifacts
    assert "${oc.env:LONG_VALUE,short}" in _text(client, rid, "config.yaml")
    assert LONG in _text(client, rid, "config_resolved.yaml")
    assert json.loads(_text(client, rid, "logged_params.json")) == {"notes": "n" * 7000}
    names = json.loads(_text(client, rid, "align_track/names.json"))
    assert names["params"] == {"weird.a_b": "weird.a=b", "weird.x_y": "weird.x:y"}
    assert names["tags"] == {"bad tag_": "bad tag="}
    assert names["metrics"]["acc/subset/val"] == {
        "name": "acc", "context": {"subset": "val"}}
    assert names["metrics"]["odd name_"] == {"name": "odd name?", "context": {}}

    # metrics: steps, timestamps, context in the name, NaN and +-inf
    assert _history(client, rid, "loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert _history(client, rid, "acc/subset/val") == [(0, 0.5), (1, 0.6), (2, 0.7)]
    bad = _history(client, rid, "bad")
    assert [s for s, _ in bad] == [0, 1, 2] and math.isnan(bad[0][1])
    assert bad[1][1] in (math.inf, DBL_MAX) and bad[2][1] in (-math.inf, -DBL_MAX)
    assert json.loads(run.data.tags["align_track.infinite_values"]) == ["bad"]
    assert _history(client, rid, "from_thread") == [(0, 7.0)]
    assert _history(client, rid, "return_value") == [(0, 0.25)]
    (loss0,) = [m for m in client.get_metric_history(rid, "loss") if m.step == 0]
    assert abs(loss0.timestamp / 1000 - run.info.start_time / 1000) < 600

    # artifacts, with folders; Hydra's files
    files = _files(client, rid)
    assert "reports/final.txt" in files and ".hydra/config.yaml" in files
    assert _text(client, rid, "reports/final.txt") == "report lr=0.1\n"

    # tags: user tags, ours, MLflow's own
    tags = run.data.tags
    assert tags["model"] == "mlp" and tags["bad tag_"] == "v"
    assert tags["team"] == "vision"
    assert re.fullmatch(r"[0-9a-f]{32}", tags["align_track.run_id"])
    assert tags["align_track.run_id"] != rid
    assert tags["align_track.status"] == "finished"
    assert "tracker.experiment=single" in tags["align_track.overrides"]
    assert tags["align_track.host"] == socket.gethostname()
    assert tags["mlflow.source.name"].endswith("app.py")
    assert "mlflow.parentRunId" not in tags


def test_sweep_is_a_parent_with_nested_jobs_and_a_failing_job(
    server: str, app_dir: Path
) -> None:
    # one param takes a bool, a float, null and a string across the jobs; the job
    # with value=boom raises
    proc = run_app(app_dir / "app.py", "-m", "value=true,3.5,null,boom",
                   "+tracker=mlflow", f"tracker.tracking_uri={server}",
                   "tracker.experiment=sweep",
                   f"hydra.sweep.dir={app_dir / 'multirun'}", check=False)
    assert proc.returncode != 0  # Hydra re-raises the failed job's error at the end
    client = MlflowClient(server)
    runs = _runs(client, "sweep")
    parents = [r for r in runs if r.data.tags.get("align_track.kind") == "sweep"]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.run_name == "sweep value=true,3.5,null,boom"
    sweep_id = parent.data.tags["align_track.sweep_id"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["align_track.sweep_id"] == sweep_id
    by_job = {int(c.data.tags["align_track.job_num"]): c for c in children}
    assert sorted(by_job) == [0, 1, 2, 3]
    assert [by_job[i].data.params["value"] for i in range(4)] == ["True", "3.5", "None",
                                                                  "boom"]
    assert [by_job[i].info.status for i in range(4)] == ["FINISHED"] * 3 + ["FAILED"]

    failed = by_job[3]
    assert failed.data.tags["align_track.error_type"] == "RuntimeError"
    error = failed.data.tags["align_track.error"]
    assert error == "RuntimeError: boom in job value=boom"
    trace = _text(client, failed.info.run_id, "error.txt")
    assert "Traceback" in trace and "boom in job value=boom" in trace
    assert _history(client, failed.info.run_id, "loss")[-1] == (2, 1 / 3)
    # Hydra skips on_multirun_end when a job raised: the parent is closed anyway
    assert parent.info.status == "FAILED"


def test_jobs_in_other_processes_share_one_parent(server: str) -> None:
    """Backends that share nothing (as in launcher worker processes) start runs of
    one sweep at once, in an experiment none of them has seen: one experiment, one
    parent, every run nested under it."""
    experiment = f"race-{uuid.uuid4().hex[:8]}"
    sweep_id = uuid.uuid4().hex
    records = [RunRecord(id=uuid.uuid4().hex, experiment=experiment, name=f"job {i}",
                         started_at=time.time(), params={"i": i}, sweep_id=sweep_id,
                         job_num=i) for i in range(4)]
    backends = [MLflowBackend(server) for _ in records]
    errors: List[BaseException] = []
    barrier = threading.Barrier(len(records))

    def job(backend: MLflowBackend, record: RunRecord) -> None:
        try:
            barrier.wait()
            backend.start_run(record)
            backend.log_metrics(record.id, [("m", 0, 1.0, time.time(), "")])
            backend.end_run(record.id, RunEnd(status="finished", ended_at=time.time()))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=job, args=pair)
               for pair in zip(backends, records)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    client = MlflowClient(server)
    runs = _runs(client, experiment)
    parents = [r for r in runs if r.data.tags.get("align_track.kind") == "sweep"]
    assert len(parents) == 1
    children = [r for r in runs if r not in parents]
    assert len(children) == 4
    parent_ids = {c.data.tags["mlflow.parentRunId"] for c in children}
    assert parent_ids == {parents[0].info.run_id}

    # a sweep recorded by the launching process is found by a fresh backend
    launcher, worker = MLflowBackend(server), MLflowBackend(server)
    sweep = SweepRecord(id=uuid.uuid4().hex, experiment=experiment,
                        started_at=time.time(), overrides=["lr=1,2"])
    launcher.start_sweep(sweep)
    record = RunRecord(id=uuid.uuid4().hex, experiment=experiment, name="w",
                       started_at=time.time(), sweep_id=sweep.id, job_num=0)
    worker.start_run(record)
    worker.end_run(record.id, RunEnd(status="interrupted", ended_at=time.time()))
    launcher.end_sweep(sweep.id, time.time())
    run = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id],
        filter_string=f"tags.`align_track.run_id` = '{record.id}'")[0]
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["align_track.sweep_id"] == sweep.id
    assert parent.info.run_name == "sweep lr=1,2" and parent.info.status == "FINISHED"
    assert run.info.status == "KILLED"
    assert run.data.tags["align_track.status"] == "interrupted"


def test_a_parent_made_unseen_by_another_process_is_settled_at_run_end(server: str) -> None:
    """Two processes make a sweep's parent at the same instant and each search
    sees only its own (the other's not committed yet): at their runs' ends both
    runs sit under one parent, and the other parent is gone."""
    experiment = f"settle-{uuid.uuid4().hex[:8]}"
    sweep_id = uuid.uuid4().hex
    first, second = MLflowBackend(server), MLflowBackend(server)
    records = [RunRecord(id=uuid.uuid4().hex, experiment=experiment, name=f"job {i}",
                         started_at=time.time(), sweep_id=sweep_id, job_num=i)
               for i in range(2)]
    first.start_run(records[0])
    exp_id = first.client.get_experiment_by_name(experiment).experiment_id
    time.sleep(0.01)  # a later start time: the first process's parent comes first
    # the second process's start, as when its search ran before the first's commit
    unseen = second._create_parent(sweep_id, exp_id, None)
    second._parents[(sweep_id, exp_id)] = unseen
    second.start_run(records[1])
    for backend, record in zip((first, second), records):
        backend.end_run(record.id, RunEnd(status="finished", ended_at=time.time()))

    client = MlflowClient(server)
    runs = _runs(client, experiment)
    parents = [r for r in runs if r.data.tags.get("align_track.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.run_id != unseen
    children = [r for r in runs if r not in parents]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert len(children) == 2
    assert client.get_run(unseen).info.lifecycle_stage == "deleted"


def test_a_server_that_does_not_answer_fails_at_open() -> None:
    backend = MLflowBackend(f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(ConnectionError, match="no MLflow server answers"):
        backend.open()
