"""A tracking server that goes away mid-run: the job goes on, the spool keeps
everything, and `experiments sync` replays it exactly once into the same run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import experiments
from servers import MLflowServer

import mlflow  # noqa: E402,F401
APP = Path(__file__).parent / "apps" / "outage"
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def test_server_lost_mid_run_then_synced(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    server = MLflowServer(tmp_path / "server").start()
    app_dir = tmp_path / "app"
    shutil.copytree(APP, app_dir)
    try:
        job = subprocess.Popen(
            [sys.executable, "app.py", "+tracker=mlflow", f"tracker.tracking_uri={server.url}",
             "tracker.experiment=outage"],
            cwd=app_dir, env={**os.environ, **FAST_FAIL}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 240
        while not (app_dir / "ready").exists():
            assert job.poll() is None, job.communicate()
            assert time.time() < deadline, "the job never got ready"
            time.sleep(0.2)
        server.stop()
        (app_dir / "go").touch()
        out, err = job.communicate(timeout=300)

        assert job.returncode == 0, err
        assert "experiments sync" in out + err
        waiting = experiments("list", cwd=app_dir).stdout
        assert "1 run awaits sync to mlflow" in waiting

        server.start()
        first = experiments("sync", cwd=app_dir)
        second = experiments("sync", cwd=app_dir)
    finally:
        server.stop()
    # read the server's own store back (no third server start)
    client = MlflowClient(f"sqlite:///{server.root / 'm.db'}")
    exp = client.get_experiment_by_name("outage")
    [run] = client.search_runs([exp.experiment_id])
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))

    assert "replayed" in first.stdout
    assert "nothing to sync" in second.stdout
    assert [s for s, _ in history] == list(range(20))  # every point, exactly once
    assert history[-1][1] == pytest.approx(1 / 20)
    assert run.info.status == "FINISHED"
    assert run.data.tags["phase"] == "after-outage"
