"""The Aim backend against the real ``aim`` package, read back with ``aim.Repo``.

Runs are written by Hydra apps in subprocesses (or, for the backend's own API, in
this process) and read back here with ``Repo.query_runs`` / ``query_metrics``, so
each test also checks that a finished run is visible to a new reader without
``aim storage reindex``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import run_app, write_app

import aim  # noqa: E402 - CI installs every backend: a missing one fails, never skips

from align_track.backends.aim import AimBackend, to_aim  # noqa: E402
from align_track.records import FAILED, FINISHED, RunEnd, RunRecord  # noqa: E402
from align_track.settings import parse_settings  # noqa: E402

NO_REPORT = 0  # aim's QueryReportMode.DISABLED: no progress bar on stderr

CONFIG = """\
x: 0
fail_on: -1
model:
  name: mlp
  lr: 0.01
  layers: [64, 32]
"""

APP = """\
import hydra
import align_track


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg):
    for i in range(5):
        align_track.log({"loss": 1.0 / (i + 1)}, step=i, context={"subset": "train"})
    align_track.log({"loss": 0.25}, step=4, context={"subset": "val"})
    align_track.log({"odd": float("nan")}, step=0)
    align_track.log({"odd": float("inf")}, step=1)
    align_track.log({"odd": float("-inf")}, step=2)
    align_track.log({"x": cfg.x}, step=0)
    align_track.set_tags(model=cfg.model.name)
    align_track.log_params({"extra.seed": 7})
    with open("weights.bin", "wb") as fh:
        fh.write(bytes(range(256)) * 8)
    align_track.log_artifact("weights.bin", name="ckpt/weights.bin")
    if cfg.x == cfg.fail_on:
        raise RuntimeError(f"job {cfg.x} failed on purpose")
    return cfg.x


if __name__ == "__main__":
    main()
"""


def runs_of(repo: Any, query: str) -> List[Any]:
    found = repo.query_runs(query, report_mode=NO_REPORT)
    return [item.run for item in found.iter_runs()]


def metrics_of(repo: Any, query: str) -> Dict[tuple, Any]:
    """``{(run hash, name, context items): (steps, values, timestamps)}``."""
    out = {}
    for metric in repo.query_metrics(query, report_mode=NO_REPORT).iter():
        steps, (values, _epochs, times) = metric.data.items_list()
        context = tuple(sorted(metric.context.to_dict().items()))
        key = (metric.run.hash, metric.name, context)
        out[key] = (list(steps), list(values), list(times))
    return out


def same(a: List[float], b: List[float]) -> bool:
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b))


_TEMPLATE: Dict[str, Path] = {}


@pytest.fixture
def new_repo(tmp_path_factory: pytest.TempPathFactory, netguard: Path):
    """Put an empty Aim repo into a folder.

    Aim creates a repo's run database with migrations in a subprocess (seconds), so
    the backend creates one repo per session and tests get copies of it.
    """
    if "repo" not in _TEMPLATE:
        folder = tmp_path_factory.mktemp("aim-template")
        AimBackend(repo=str(folder)).open()  # creates it, like `aim init`
        assert (folder / ".aim" / "VERSION").exists()
        status = aim.Repo.check_repo_status(str(folder))
        assert status == aim.sdk.repo.RepoStatus.UPDATED
        _TEMPLATE["repo"] = folder / ".aim"

    def place(folder: Path) -> Path:
        shutil.copytree(_TEMPLATE["repo"], folder / ".aim")
        return folder

    return place


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return write_app(tmp_path / "project", APP, CONFIG)


# -- conversions ----------------------------------------------------------------------


def test_to_aim_keeps_what_aim_holds_and_converts_the_rest():
    import enum

    class Color(enum.Enum):
        RED = 1

    value = {
        "a.b": 1, "nested": {"lr": 0.1, "none": None, "nan": float("nan")},
        "list": [1, "a", None, {"k": (1, 2)}], "long": "x" * 50_000, "flag": True,
        "": "empty key", 3: "int key", "big": 2**70, "small": -(2**63),
        "color": Color.RED,
        "set": {2, 1}, "path": Path("/tmp/x"), "bytes": b"\x00",
    }
    out = to_aim(value)
    assert out["a.b"] == 1 and out["nested"]["none"] is None
    assert math.isnan(out["nested"]["nan"])
    assert out["list"] == [1, "a", None, {"k": [1, 2]}]
    assert out["long"] == "x" * 50_000 and out["flag"] is True
    assert out["bytes"] == b"\x00"
    assert out['""'] == "empty key" and out["3"] == "int key"
    assert out["big"] == str(2**70) and out["small"] == -(2**63)
    assert out["color"] == "RED" and out["set"] == [1, 2] and out["path"] == "/tmp/x"


def test_settings_anchor_the_repo_at_the_launch_directory(tmp_path: Path):
    def key(**raw: Any) -> str:
        return AimBackend.from_settings(parse_settings({"backend": "aim", **raw}),
                                        str(tmp_path))[0]

    assert key() == str(tmp_path)
    assert key(repo="runs") == str(tmp_path / "runs")
    assert key(repo="runs/.aim") == str(tmp_path / "runs")
    assert key(repo="aim://127.0.0.1:53800/") == "aim://127.0.0.1:53800"
    settings = parse_settings({"backend": "aim"})
    _, kwargs = AimBackend.from_settings(settings, str(tmp_path))
    assert kwargs["system_tracking_interval"] is None  # Aim's own default is on
    assert kwargs["log_system_params"] is False


# -- the backend API in this process ------------------------------------------------


def test_backend_api_round_trip(tmp_path: Path, new_repo: Any):
    """Two runs in one process: config with keys Aim mangles, metrics with wall times,
    context, NaN/inf, params, replaced tags, an artifact and a failure."""
    backend = AimBackend(repo=str(new_repo(tmp_path / "store")))
    backend.open()
    config = {"opt": {"lr": 0.1, "betas": [0.9, 0.99]}, "": 1, "a.b": None,
              "big": 2**70}
    records = [RunRecord(id=f"id{i}", experiment="api", name=f"run {i}", started_at=1.0,
                         config=config, overrides=[f"x={i}"], tags={"team": "a"},
                         sweep_id="S", job_num=i) for i in range(2)]
    artifact = tmp_path / "model.txt"
    artifact.write_text("weights")
    for record in records:
        backend.start_run(record)
        backend.log_metrics(record.id, [
            ("loss", 0, 0.5, 1000.0, '{"subset":"train"}'),
            ("loss", 1, float("nan"), 1001.0, '{"subset":"train"}'),
            ("loss", 2, float("inf"), 1002.0, '{"subset":"train"}'),
            ("loss", 0, 0.7, 1003.0, ""),
            ("count", 0, 2**70, 1004.0, ""),
        ])
        backend.log_params(record.id, {"opt.lr": 0.2, "extra.seed": 3})
        backend.set_tags(record.id, {"team": "b", "model": "mlp"})
        info = backend.log_artifact(record.id, str(artifact), "out/model.txt")
        assert info["size"] == 7
        assert info["sha256"] == hashlib.sha256(b"weights").hexdigest()
    backend.end_run("id0", RunEnd(status=FINISHED, ended_at=2.0))
    error = {"type": "ValueError", "message": "bad",
             "traceback": "Traceback ...\nValueError: bad"}
    backend.end_run("id1", RunEnd(status=FAILED, ended_at=3.0, error=error))
    backend.close()

    repo = aim.Repo(str(tmp_path / "store"))
    runs = {r["align_track_id"]: r for r in runs_of(repo, 'run.sweep_id == "S"')}
    assert set(runs) == {"id0", "id1"}
    ok, bad = runs["id0"], runs["id1"]
    assert ok.name == "run 0" and ok.experiment == "api" and not ok.active
    assert ok["hparams"] == {"opt": {"lr": 0.2, "betas": [0.9, 0.99]}, '""': 1,
                             "a.b": None, "big": str(2**70), "extra": {"seed": 3}}
    assert ok["overrides"] == ["x=0"] and ok["job_num"] == 0
    assert sorted(ok.tags) == ["model=mlp", "team=b"]
    assert ok["align_track_tags"] == {"team": "b", "model": "mlp"}
    assert ok["align_track_status"] == FINISHED and ok.get("error") is None
    assert bad["align_track_status"] == FAILED and "failed" in bad.tags
    assert bad["error"]["type"] == "ValueError"
    assert "ValueError: bad" in bad["error"]["traceback"]

    stored = Path(ok.artifacts["out/model.txt"].uri.replace("file://", ""))
    assert stored.read_text() == "weights"
    assert ok["align_track_artifacts"]["out/model.txt"]["sha256"] == info["sha256"]

    metrics = metrics_of(repo, 'run.sweep_id == "S"')
    steps, values, times = metrics[(ok.hash, "loss", (("subset", "train"),))]
    assert steps == [0, 1, 2] and same(values, [0.5, float("nan"), float("inf")])
    assert times == [1000.0, 1001.0, 1002.0]  # the time of log(), not of the write
    assert metrics[(ok.hash, "loss", ())][1] == [0.7]
    assert metrics[(bad.hash, "count", ())][1] == [float(2**70)]


def test_batches_read_back_as_aims_own_track_stores_them(tmp_path: Path, new_repo: Any):
    """The backend stores a batch's values in bulk and each sequence's summary once;
    Aim must read back the same series and summaries (last, min, max, first) as for
    a run whose points went through ``Run.track`` one by one."""
    points = [("loss", s, v, 1000.0 + s, ctx) for s, v, ctx in [
        (0, 0.9, ""), (1, 0.5, ""), (3, 0.7, ""), (2, 0.2, ""), (3, 0.4, ""),
        (0, float("nan"), '{"subset":"val"}'), (1, 1.5, '{"subset":"val"}'),
        (2, -3.0, '{"subset":"val"}'), (1, 0.1, '{"subset":"val"}'),
    ]] + [("acc", s, s / 10, 2000.0 + s, "") for s in range(6)]
    # negative steps: Aim rewrites a sequence's first value until a step >= 0
    points += [("neg", s, v, 3000.0, "") for s, v in [(-3, 3.0), (-1, 2.0), (0, 1.0),
                                                      (2, 0.5)]]
    ours = AimBackend(repo=str(new_repo(tmp_path / "ours")))
    ours.open()
    ours.start_run(RunRecord(id="batched", experiment="eq", name="batched", started_at=1.0))
    ours.log_metrics("batched", points[:4])  # a sequence that goes on in a later batch
    ours.log_metrics("batched", points[4:])
    ours.end_run("batched", RunEnd(status=FINISHED, ended_at=2.0))
    ours.close()
    reference = aim.Run(repo=str(new_repo(tmp_path / "reference")), experiment="eq",
                        system_tracking_interval=None, log_system_params=False,
                        capture_terminal_logs=False)
    for name, step, value, _wall, ctx in points:
        reference.track(value, name=name, step=step, context=json.loads(ctx) if ctx else None)

    def read(run: Any) -> Dict[tuple, Any]:
        series = {(m.name, tuple(sorted(m.context.to_dict().items()))):
                  m.data.items_list()[0:2] for m in run.metrics()}
        summary = {(t["name"], tuple(sorted(t["context"].items()))):
                   {k: v for k, v in t["values"].items()
                    if k in ("last", "last_step", "first", "first_step", "min", "max")}
                   for t in run.collect_sequence_info("metric")["metric"]}
        return {key: (list(steps), list(values), summary[key])
                for key, (steps, (values, _epochs, _times)) in series.items()}

    expected = read(reference)  # Aim indexes a run only in `aim up`; read it open
    reference.close()
    got = read(runs_of(aim.Repo(str(tmp_path / "ours")), 'run.align_track_id == "batched"')[0])
    assert set(got) == set(expected) == {("loss", ()), ("loss", (("subset", "val"),)),
                                         ("acc", ()), ("neg", ())}
    for key, (steps, values, summary) in expected.items():
        assert got[key][0] == steps, key
        assert same(got[key][1], values), key
        assert set(got[key][2]) == set(summary), key
        for field, value in summary.items():
            assert same([got[key][2][field]], [value]), (key, field)
    # the data covers a step written twice (the series keeps the later value; Aim's
    # summary keeps the first value stored at the highest step)
    assert expected[("loss", ())][0:2] == ([0, 1, 2, 3], [0.9, 0.5, 0.2, 0.4])
    assert expected[("loss", ())][2]["last"] == 0.7


# -- Hydra apps in subprocesses -----------------------------------------------------


def test_single_run_from_a_hydra_app(app: Path, new_repo: Any):
    new_repo(app.parent / "tracking")
    run_app(app, "+tracker=aim", "tracker.repo=tracking", "model.lr=0.5")

    repo = aim.Repo(str(app.parent / "tracking"))  # anchored at the launch directory
    (run,) = runs_of(repo, 'run.experiment == "app"')
    assert run.name == "app model.lr=0.5"
    assert run["hparams"] == {"x": 0, "fail_on": -1, "extra.seed": 7,
                              "model": {"name": "mlp", "lr": 0.5, "layers": [64, 32]}}
    assert run["overrides"] == ["+tracker=aim", "tracker.repo=tracking", "model.lr=0.5"]
    assert run["sweep_id"] is None and run["align_track_status"] == FINISHED
    assert run["return_value"] == 0 and not run.active
    assert run.tags == ["model=mlp"]
    assert "tracker" not in run["hparams"] and "hydra" not in run["hparams"]

    weights = Path(run.artifacts["ckpt/weights.bin"].uri.replace("file://", ""))
    assert weights.read_bytes() == bytes(range(256)) * 8
    assert str(weights).startswith(str(app.parent / "tracking" / ".aim" / "artifacts"))
    assert ".hydra/config.yaml" in run.artifacts  # Hydra's files come along

    metrics = metrics_of(repo, 'run.experiment == "app"')
    train = metrics[(run.hash, "loss", (("subset", "train"),))]
    assert train[0] == [0, 1, 2, 3, 4] and train[1] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert metrics[(run.hash, "loss", (("subset", "val"),))][:2] == ([4], [0.25])
    steps, values, _ = metrics[(run.hash, "odd", ())]
    assert steps == [0, 1, 2]
    assert same(values, [float("nan"), float("inf"), float("-inf")])
    assert metrics[(run.hash, "return_value", ())][1] == [0.0]
    assert not (app.parent / ".aim").exists()  # only the configured repo was used


def test_joblib_sweep_of_four_with_a_failing_job(app: Path, new_repo: Any):
    """Four jobs write to one repo at once; one raises. All four are recorded."""
    new_repo(app.parent)
    proc = run_app(app, "-m", "+tracker=aim", "x=0,1,2,3", "fail_on=2",
                   "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", check=False)
    assert proc.returncode != 0 and "job 2 failed on purpose" in proc.stderr
    output = proc.stdout + proc.stderr
    assert "could not" not in output and "tracking is off" not in output

    repo = aim.Repo(str(app.parent))  # default: .aim in the launch directory
    everything = runs_of(repo, "")
    assert len(everything) == 4
    sweep_ids = {r["sweep_id"] for r in everything}
    assert len(sweep_ids) == 1 and None not in sweep_ids
    (sweep_id,) = sweep_ids
    sweep = {r["job_num"]: r for r in runs_of(repo, f'run.sweep_id == "{sweep_id}"')}
    assert sorted(sweep) == [0, 1, 2, 3]
    assert {n: r["hparams"]["x"] for n, r in sweep.items()} == {0: 0, 1: 1, 2: 2, 3: 3}
    for num, run in sweep.items():
        expected = FAILED if num == 2 else FINISHED
        assert run["align_track_status"] == expected and not run.active
    failed = sweep[2]
    assert "failed" in failed.tags
    assert failed["error"]["type"] == "RuntimeError"
    assert "job 2 failed on purpose" in failed["error"]["traceback"]

    metrics = metrics_of(repo, f'metric.name == "x" and run.sweep_id == "{sweep_id}"')
    assert sorted(values[0] for _, values, _ in metrics.values()) == [0, 1, 2, 3]


# -- aim server -----------------------------------------------------------------------


def stop_group(proc: subprocess.Popen) -> None:
    """Stop the process group this test started, SIGKILL if SIGTERM is not enough."""
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        deadline = time.monotonic() + wait
        try:
            os.killpg(proc.pid, sig)
            while time.monotonic() < deadline:
                proc.poll()  # reap the leader, so only live members keep the group
                os.killpg(proc.pid, 0)
                time.sleep(0.2)
        except ProcessLookupError:
            return


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def aim_server(tmp_path: Path, new_repo: Any):
    """``aim server`` on 127.0.0.1, stopped (with its uvicorn child) at the end."""
    folder = new_repo(tmp_path / "server-repo")
    port = free_port()
    aim_cli = Path(sys.executable).parent / "aim"
    log = tmp_path / "aim-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(aim_cli) if aim_cli.exists() else "aim", "server",
             "--repo", str(folder), "--host", "127.0.0.1", "--port", str(port), "-y"],
            stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ),
            start_new_session=True)  # its own process group: uvicorn runs as a child
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        yield f"aim://127.0.0.1:{port}"
    finally:
        stop_group(proc)


REMOTE_READER = """\
import json, sys
import aim

repo = aim.Repo(sys.argv[1])
runs = []
for item in repo.query_runs(sys.argv[2], report_mode=0).iter_runs():
    run = item.run
    runs.append({"hash": run.hash, "experiment": run.experiment, "tags": list(run.tags),
                 "status": run["align_track_status"], "hparams": run["hparams"],
                 "artifacts": {k: a.uri for k, a in run.artifacts.items()}})
metrics = []
for metric in repo.query_metrics('metric.name == "loss"', report_mode=0).iter():
    steps, (values, _, _) = metric.data.items_list()
    metrics.append([metric.run.hash, metric.context.to_dict(), list(steps),
                    list(values)])
print(json.dumps({"runs": runs, "metrics": metrics}))
"""


REMOTE_BATCHES = """\
import json, sys
import aim
from align_track.backends.aim import REMOTE_BATCH, AimBackend
from align_track.records import FINISHED, RunEnd, RunRecord

uri = sys.argv[1]
n = 3 * REMOTE_BATCH + 7  # several instruction batches, the last one short
points = [("loss", (i * 7) % n, 1.0 / (i + 1), 1000.0 + i, "") for i in range(n)]
points += [("loss", 2, -5.0, 2000.0, '{"subset":"val"}')]
backend = AimBackend(repo=uri)
backend.open()
backend.start_run(RunRecord(id="remote-batched", experiment="eq", name="b", started_at=1.0))
backend.log_metrics("remote-batched", points)
backend.end_run("remote-batched", RunEnd(status=FINISHED, ended_at=2.0))
backend.close()
reference = aim.Run(repo=uri, experiment="eq", system_tracking_interval=None,
                    log_system_params=False, capture_terminal_logs=False)
for name, step, value, _wall, ctx in points:
    reference.track(value, name=name, step=step, context=json.loads(ctx) if ctx else None)


def read(run):
    summary = {json.dumps([t["name"], t["context"]]): {
        k: t["values"][k] for k in ("last", "last_step", "min", "max", "first")}
        for t in run.collect_sequence_info("metric")["metric"]}
    series = {}
    for m in run.metrics():
        steps, (values, _, _) = m.data.items_list()
        series[json.dumps([m.name, m.context.to_dict()])] = [list(steps), list(values)]
    return {"summary": summary, "series": series}


expected = read(reference)
reference.close()
repo = aim.Repo(uri)
(ours,) = [item.run for item in repo.query_runs('run.align_track_id == "remote-batched"',
                                                  report_mode=0).iter_runs()]
print(json.dumps({"ours": read(ours), "expected": expected, "n": n}))
"""


def test_batches_through_aim_server_read_back_as_run_track_stores_them(aim_server: str):
    """A remote repo gets a batch as several instruction batches; the series and
    summaries Aim's server stores are those of ``Run.track`` one value at a time."""
    done = subprocess.run([sys.executable, "-c", REMOTE_BATCHES, aim_server],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    ours, expected = found["ours"], found["expected"]
    assert ours == expected
    (steps, values) = ours["series"][json.dumps(["loss", {}])]
    assert steps == list(range(found["n"])) and len(values) == found["n"]


def test_run_through_aim_server(app: Path, aim_server: str):
    run_app(app, "+tracker=aim", f"tracker.repo={aim_server}", "x=5")

    # Read in another process: an aim:// client left in this one would try to
    # release its server resources at exit, after the server is gone.
    reader = subprocess.run(
        [sys.executable, "-c", REMOTE_READER, aim_server, "run.hparams.x == 5"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert reader.returncode == 0, reader.stderr
    found = json.loads(reader.stdout.strip().splitlines()[-1])
    (run,) = found["runs"]
    assert run["experiment"] == "app" and run["status"] == FINISHED
    assert run["tags"] == ["model=mlp"]
    assert run["hparams"]["model"]["layers"] == [64, 32]
    train = [m for m in found["metrics"]
             if m[0] == run["hash"] and m[1] == {"subset": "train"}]
    assert train == [[run["hash"], {"subset": "train"}, [0, 1, 2, 3, 4],
                      [1.0, 0.5, 1 / 3, 0.25, 0.2]]]
    # With a remote repo, artifacts are copied under the launch directory.
    weights = Path(run["artifacts"]["ckpt/weights.bin"].replace("file://", ""))
    assert weights.read_bytes() == bytes(range(256)) * 8
    assert str(weights).startswith(str(app.parent / ".aim" / "artifacts"))
