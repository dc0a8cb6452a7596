"""One contract for all four backends, read back through each backend's own client.

Each behaviour is one test, parametrized over sqlite, mlflow, aim and clearml. Where
backends legitimately differ (docs/backends/README.md says how), a small table below
holds the difference. Runs are written in this process with ``track_run`` unless
the behaviour needs Hydra (the sweep, a real ``-m`` subprocess per backend); every
test also checks that no call failed silently into the spool file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from typing import Any, Dict, List

import pytest

import align_track
from align_track.spool import SPOOL_FILE
from contract.conftest import (
    BACKENDS,
    SWEEP_ERROR,
    SWEEP_EXPERIMENT,
    Target,
    flat,
)

NAN, INF = float("nan"), float("inf")
DBL_MAX = 1.7976931348623157e308
LONG = "L" * 10_000
NOTES = "N" * 10_000
WEIGHTS = bytes(range(256)) * 64
REPORT = "a report\n"
EXPERIMENT = "contract"

RICH_CONFIG = {
    "lr": 0.1, "epochs": 3, "flag": True, "nothing": None, "long": LONG,
    "model": {"name": "mlp", "layers": [64, 32], "names": ["enc", "dec"]},
}
BIG_CONFIG = {
    f"s{i:02d}": {f"k{j:03d}": (i * 100 + j, f"v{i}-{j}", j / 7, j % 2 == 0)[j % 4]
                  for j in range(100)}
    for i in range(100)
}
THREADS, POINTS = 4, 250


def cases(**xfail: str) -> List[Any]:
    """The four backends; ``backend="reason"`` marks that case as a known failure."""
    return [pytest.param(b, marks=pytest.mark.xfail(strict=True, reason=xfail[b]))
            if b in xfail else b for b in BACKENDS]


def as_stored(backend: str, value: Any) -> Any:
    """A param value as the backend documents storing it: typed (sqlite, aim) or as
    text (mlflow, clearml: lists as JSON; ``None`` is ``None`` resp. empty)."""
    if backend in ("sqlite", "aim"):
        return value
    if value is None:
        return "None" if backend == "mlflow" else ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def same_series(got: List[Any], want: List[Any]) -> bool:
    return len(got) == len(want) and all(
        gs == ws and (gv == wv or (math.isnan(gv) and math.isnan(wv)))
        for (gs, gv), (ws, wv) in zip(got, want))


# -- the runs: written once per backend, in this process ------------------------------


@pytest.fixture
def write(target: Target, monkeypatch: pytest.MonkeyPatch):
    """``write(what, fn)``: run ``fn(target)`` once per backend and module, in the
    target's launch directory and environment, under this test's network guard."""

    def once(what: str, fn: Any) -> Any:
        if what not in target.made:
            before = set(os.environ)
            with monkeypatch.context() as patch:
                patch.chdir(target.launch)
                for name, value in target.env.items():
                    patch.setenv(name, value)
                target.made[what] = fn(target)
            # ClearML marks the process as its task's (CLEARML_PROC_MASTER_ID): do
            # not hand that to the subprocesses of later tests
            for name in set(os.environ) - before:
                if name.startswith(("CLEARML_", "TRAINS_")):
                    del os.environ[name]
            target.assert_nothing_spooled()
        return target.made[what]

    return once


def _rich(target: Target) -> Dict[str, Any]:
    """A run with every kind of data a user logs."""
    files = target.launch / "files"
    files.mkdir()
    (files / "weights.bin").write_bytes(WEIGHTS)
    (files / "report.txt").write_text(REPORT)
    with align_track.track_run(EXPERIMENT, config=RICH_CONFIG, name="contract rich",
                               tags={"team": "nlp"}, backend=target.backend,
                               **target.settings) as run:
        for step in range(5):
            align_track.log({"loss": 1 / (step + 1)}, step=step)
        for step in range(3):
            align_track.log({"acc": step / 10}, step=step)
            align_track.log({"acc": 0.5 + step / 10}, step=step,
                            context={"subset": "val"})
        align_track.log({"acc": 0.9}, step=0, context={"subset": "test", "fold": 1})
        for step, value in enumerate((NAN, INF, -INF, 2.0)):
            align_track.log({"odd": value}, step=step)
        align_track.log_params({"notes": NOTES})
        align_track.set_tags(model="mlp", stage="a")
        align_track.set_tags(stage="b")
        stored = align_track.log_artifact(files / "weights.bin",
                                          name="model/weights.bin")
        stored += align_track.log_artifact(files / "report.txt")

        def worker(i: int) -> None:
            with align_track.bind(run):
                for s in range(POINTS):
                    align_track.log({f"thread/t{i}": float(i * 1000 + s)}, step=s)
                    align_track.log({"shared": float(i)}, step=i * POINTS + s)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert run.status == "finished"
    return {"id": run.id, "stored": stored}


def _big(target: Target) -> str:
    with align_track.track_run(EXPERIMENT, config=BIG_CONFIG, name="contract big",
                               backend=target.backend, **target.settings) as run:
        align_track.log({"loss": 1.0}, step=0)
    return run.id


@pytest.fixture
def rich(write: Any, target: Target) -> Dict[str, Any]:
    made = write("rich", _rich)
    view = write("rich-view", lambda t: t.reader.run(made["id"]))
    return {**made, "view": view}


# -- single run ------------------------------------------------------------------------

NATIVE_STATUS = {  # our status -> the backend's own, where it keeps one
    "sqlite": {"finished": "finished", "failed": "failed"},
    "mlflow": {"finished": "FINISHED", "failed": "FAILED"},
    "aim": {"finished": None, "failed": "failed"},  # Aim tag; Aim has no failed state
    "clearml": {"finished": None, "failed": None},  # offline sessions keep no status
}


@pytest.mark.parametrize("backend", cases())
def test_single_run(backend: str, rich: Dict[str, Any]) -> None:
    view = rich["view"]
    assert view["id"] == rich["id"]
    assert view["experiment"] == EXPERIMENT
    assert view["name"] == "contract rich"
    assert view["status"] == "finished"
    assert view["native_status"] == NATIVE_STATUS[backend]["finished"]
    assert view["sweep_id"] is None and view["job_num"] is None
    assert view["error"] is None
    for key, value in flat(RICH_CONFIG).items():
        if key != "long":
            assert view["params"][key] == as_stored(backend, value), key
    assert view["metrics"]["loss"] == [(s, 1 / (s + 1)) for s in range(5)]


# -- params with long values -----------------------------------------------------------

MLFLOW_LIMIT = 6000
CUT = {  # backend -> param -> (marker at the end, artifact with the full value)
    "mlflow": {
        "long": ("...[truncated, see config_resolved.yaml]", "config_resolved.yaml"),
        "notes": ("...[truncated, see logged_params.json]", "logged_params.json"),
    },
}


@pytest.mark.parametrize("backend", cases())
def test_params_with_long_values(backend: str, rich: Dict[str, Any], target: Target):
    view, reader = rich["view"], target.reader
    for key, full in (("long", LONG), ("notes", NOTES)):
        value = view["params"][key]
        cut = CUT.get(backend, {}).get(key)
        if cut is None:
            assert value == full, f"{key}: {len(value)} characters"
            continue
        marker, artifact = cut
        assert len(value) == MLFLOW_LIMIT and value.endswith(marker)
        assert full.startswith(value[: -len(marker)])
        text = reader.artifact_bytes(view, artifact).decode()
        kept = json.loads(text) if artifact.endswith(".json") else reader.config(view)
        assert kept[key] == full
    assert reader.config(view)["long"] == LONG


# -- a 10,000-key config ---------------------------------------------------------------

# Where each backend keeps every key of the config: its params, and the stored config
# (SQLite: the run's config; MLflow: config_resolved.yaml; Aim: run["hparams"], which
# is also where its params are; ClearML: the OmegaConf configuration object).
# MLflow gets the first 1,000 keys as params (its SQL store slows down with the square
# of a run's params); all 10,000 are in its config_resolved.yaml.
BIG_KEPT_IN = {b: ("params", "config") for b in BACKENDS}
BIG_KEPT_IN["mlflow"] = ("config",)
BIG_PARAMS = {b: 10_000 for b in BACKENDS}
BIG_PARAMS["mlflow"] = 1_000


@pytest.mark.parametrize("backend", cases())
def test_config_with_10000_keys(backend: str, write: Any, target: Target) -> None:
    run_id = write("big", _big)
    view = target.reader.run(run_id)
    assert view["status"] == "finished"
    want = flat(BIG_CONFIG)
    assert len(want) == 10_000
    places = {"params": view["params"], "config": flat(target.reader.config(view))}
    lost = [k for k, v in want.items()
            if not (places["params"].get(k) == as_stored(backend, v)
                    or places["config"].get(k) == v)]
    assert not lost, f"{len(lost)} keys not recoverable, e.g. {lost[:5]}"
    for place in BIG_KEPT_IN[backend]:
        got = places[place]
        expected = {k: (as_stored(backend, v) if place == "params" else v)
                    for k, v in want.items()}
        missing = [k for k in want if got.get(k) != expected[k]]
        assert not missing, f"{place}: {len(missing)} keys differ, e.g. {missing[:5]}"
    assert len([k for k in want if k in places["params"]]) == BIG_PARAMS[backend]


# -- NaN and infinities ----------------------------------------------------------------

FINITE_ODD = [(0, NAN), (1, INF), (2, -INF), (3, 2.0)]
NONFINITE = {  # backend -> (the "odd" series as stored, where the values are listed)
    "sqlite": (FINITE_ODD, None),
    "aim": (FINITE_ODD, None),
    "mlflow": ([(0, NAN), (1, DBL_MAX), (2, -DBL_MAX), (3, 2.0)],
               ("tag", "align_track.infinite_values", ["odd"])),
    "clearml": ([(3, 2.0)], ("artifact", "align_track/nonfinite_metrics.json", {
        "count": 3,
        "points": [{"name": "odd", "context": "", "step": s, "value": v,
                    "title": "odd", "series": "odd"}
                   for s, v in ((0, "nan"), (1, "inf"), (2, "-inf"))],
    })),
}


@pytest.mark.parametrize("backend", cases())
def test_nan_and_infinite_metrics(backend: str, rich: Dict[str, Any], target: Target):
    view = rich["view"]
    series, listed = NONFINITE[backend]
    assert same_series(view["metrics"]["odd"], series), view["metrics"]["odd"]
    if listed is not None:
        kind, where, content = listed
        text = (view["native"]["tags"][where] if kind == "tag"
                else target.reader.artifact_bytes(view, where).decode())
        assert json.loads(text) == content


# -- metric context --------------------------------------------------------------------

CONTEXT_KEYS = {  # no context, {"subset": "val"}, {"subset": "test", "fold": 1}
    "sqlite": ("acc", "acc[subset=val]", "acc[fold=1,subset=test]"),
    "mlflow": ("acc", "acc/subset/val", "acc/fold/1/subset/test"),
    "aim": ("acc", 'acc {"subset": "val"}', 'acc {"fold": 1, "subset": "test"}'),
    "clearml": ("acc", "acc/acc [subset=val]", "acc/acc [fold=1, subset=test]"),
}


@pytest.mark.parametrize("backend", cases())
def test_metric_context(backend: str, rich: Dict[str, Any]) -> None:
    metrics = rich["view"]["metrics"]
    plain, val, two = CONTEXT_KEYS[backend]
    assert metrics[plain] == [(s, s / 10) for s in range(3)]
    assert metrics[val] == [(s, 0.5 + s / 10) for s in range(3)]
    assert metrics[two] == [(0, 0.9)]
    acc = [k for k in metrics if k.startswith("acc")]
    assert sorted(acc) == sorted(CONTEXT_KEYS[backend])


# -- artifacts -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", cases())
def test_artifacts(backend: str, rich: Dict[str, Any], target: Target) -> None:
    view = rich["view"]
    assert {"model/weights.bin", "report.txt"} <= set(view["artifacts"])
    assert target.reader.artifact_bytes(view, "model/weights.bin") == WEIGHTS
    assert target.reader.artifact_bytes(view, "report.txt") == REPORT.encode()
    weights, report = rich["stored"]
    assert weights["name"] == "model/weights.bin" and report["name"] == "report.txt"
    assert weights["size"] == len(WEIGHTS)
    assert weights["sha256"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert report["sha256"] == hashlib.sha256(REPORT.encode()).hexdigest()


# -- tags ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", cases())
def test_tags(backend: str, rich: Dict[str, Any]) -> None:
    # tags of track_run and set_tags(); a key set twice keeps only its last value
    assert rich["view"]["tags"] == {"team": "nlp", "model": "mlp", "stage": "b"}


# -- logging from threads --------------------------------------------------------------


@pytest.mark.parametrize("backend", cases())
def test_log_from_threads(backend: str, rich: Dict[str, Any]) -> None:
    metrics = rich["view"]["metrics"]
    for i in range(THREADS):
        want = [(s, float(i * 1000 + s)) for s in range(POINTS)]
        assert metrics[f"thread/t{i}"] == want
    assert metrics["shared"] == [(i * POINTS + s, float(i)) for i in range(THREADS)
                                 for s in range(POINTS)]


# -- sweep of four jobs, one failing (last: the sweeps run in the background) ---------


@pytest.mark.parametrize("backend", cases())
def test_sweep_of_four_jobs_with_a_failing_job(backend: str, sweeps: Dict[str, Any]):
    sweep = sweeps[backend].wait()
    proc = sweep.proc
    assert proc.returncode != 0, "Hydra re-raises the failed job's error"
    assert "job 3 fails on purpose" in proc.stderr
    output = proc.stdout + proc.stderr
    assert "tracking is off" not in output and "could not" not in output, output[-3000:]
    assert not (sweep.launch / SPOOL_FILE).exists(), "a call failed and was spooled"
    assert not sweep.netguard_log.exists() or not sweep.netguard_log.read_text().strip()

    views = sweep.reader.runs(SWEEP_EXPERIMENT)
    assert len(views) == 4, [v["name"] for v in views]
    by_job = {v["job_num"]: v for v in views}
    assert sorted(by_job) == [0, 1, 2, 3]
    sweep_ids = {v["sweep_id"] for v in views}
    assert len(sweep_ids) == 1 and None not in sweep_ids
    (sweep_id,) = sweep_ids
    # the backend's own grouping (a parent run, a tag, a field) holds the four runs
    assert sweep.reader.sweep_members(sweep_id) == {v["id"] for v in views}
    for job, view in by_job.items():
        assert view["name"] == f"app x={job}"
        assert view["params"]["x"] == as_stored(backend, job)
        assert view["metrics"]["loss"] == [(s, (job + 1) / (s + 1)) for s in range(3)]
        status = "failed" if job == 3 else "finished"
        assert view["status"] == status
        assert view["native_status"] == NATIVE_STATUS[backend][status]
    failed = by_job[3]
    assert SWEEP_ERROR in failed["error"] and "Traceback" in failed["error"]
    assert all(by_job[j]["error"] is None for j in (0, 1, 2))


SWEEP_RECORD = {  # what a backend keeps of the sweep itself, besides its runs
    "sqlite": {"jobs": 4, "finished": 3, "failed": 1, "closed": True},
    "mlflow": {"status": "FAILED", "align_track.status": "failed", "closed": True},
    "aim": None,
    "clearml": None,  # offline: no parent task
}


@pytest.mark.parametrize("backend", cases())
def test_sweep_record_closes_with_its_outcome(backend: str, sweeps: Dict[str, Any]):
    sweep = sweeps[backend].wait()
    (sweep_id,) = {v["sweep_id"] for v in sweep.reader.runs(SWEEP_EXPERIMENT)}
    assert sweep.reader.sweep_record(sweep_id) == SWEEP_RECORD[backend]


# -- secrets ---------------------------------------------------------------------------

SECRET = "sk-proj-CONTRACTPLANTEDSECRET0123456789abcd"
CANARY = "contract-canary-model-name-4711"  # stored in the clear: proves grep sees text


def _secret_run(target: Target) -> str:
    config = {"llm": {"api_key": SECRET, "model": CANARY, "max_tokens": 64},
              "service": {"password": SECRET + "-pw"}}
    with align_track.track_run(EXPERIMENT, config=config, name="contract secrets",
                               backend=target.backend, **target.settings) as run:
        align_track.log_params({"auth_token": SECRET + "-tok"})
        align_track.set_tags(endpoint_token=SECRET + "-tag", canary=CANARY)
        align_track.log({"loss": 1.0}, step=0)
    return run.id


@pytest.mark.parametrize("backend", cases())
def test_no_planted_secret_in_any_file_the_backend_wrote(
        backend: str, write: Any, target: Target) -> None:
    write("secrets", _secret_run)

    files = [p for p in target.launch.rglob("*") if p.is_file()]
    canary_seen = [p for p in files if CANARY.encode() in p.read_bytes()]
    leaked = [p for p in files if b"CONTRACTPLANTEDSECRET" in p.read_bytes()]

    assert canary_seen, f"{backend}: no file holds the canary, so the grep proves nothing"
    assert not leaked, f"{backend}: the secret is in {leaked[:3]}"
