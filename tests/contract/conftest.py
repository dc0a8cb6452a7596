"""Where the contract's runs are written, and one reader per backend.

Every reader reads a backend's runs back through that backend's own client (the
SQLite store through :mod:`align_track.reader`, MLflow through ``MlflowClient``, Aim
through ``aim.Repo.query_runs``/``query_metrics``, ClearML offline sessions from
disk) and returns the same normalised view of a run::

    {"id": our run id, "experiment", "name", "status": our word,
     "params": {dotted key: value}, "metrics": {key: [(step, value), ...]},
     "tags": {key: value}, "artifacts": [names], "sweep_id", "job_num",
     "error": the traceback (or message) kept for a failed run, or None,
     "native_status": the backend's own status where it has one,
     "native": backend-specific details the expectation tables look at}

Metric keys are the backend's own name for a series: the SQLite reader's
``name[k=v]``, MLflow's metric key, Aim's name followed by its context as JSON,
and ClearML's ``title/series`` (just ``title`` when both are the same).

The Hydra sweeps of the contract start in the background when the module starts
(one subprocess per backend, the MLflow one against an ``mlflow server`` on
127.0.0.1), each under the network guard with its own violations file; the sweep
test of a backend waits for its subprocess.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Set

import pytest
import yaml

from align_track import reader as sqlite_reader
from align_track import store
from align_track.spool import SPOOL_FILE
from conftest import NETGUARD, write_app

BACKENDS = ("sqlite", "mlflow", "aim", "clearml")
SWEEP_EXPERIMENT = "contract-sweep"
SWEEP_ERROR = "ValueError: job 3 fails on purpose"

SWEEP_APP = '''\
import hydra

import align_track


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg):
    for step in range(3):
        align_track.log({"loss": (cfg.x + 1) / (step + 1)}, step=step)
    if cfg.x == 3:
        raise ValueError(f"job {cfg.x} fails on purpose")
    return cfg.x


if __name__ == "__main__":
    main()
'''
SWEEP_CONFIG = "x: 0\nlr: 0.1\n"


def flat(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested mappings as ``{dotted key: leaf}``; lists and ``{}`` are leaves."""
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def key_value_tags(tags: List[str]) -> Dict[str, Any]:
    """``["a=1", "b=2"]`` as ``{"a": "1", "b": "2"}``; a key seen twice keeps every
    value in a list, so a tag that was not replaced shows up."""
    out: Dict[str, Any] = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep:
            continue
        if key in out:
            old = out[key]
            out[key] = (old if isinstance(old, list) else [old]) + [value]
        else:
            out[key] = value
    return out


def error_text(error: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The traceback of a stored error, else its message."""
    if not error:
        return None
    return error.get("traceback") or error.get("message")


# -- readers ---------------------------------------------------------------------------


class SQLiteReader:
    """The SQLite store, through ``store.connect_readonly`` and
    ``align_track.reader``."""

    backend = "sqlite"

    def __init__(self, db: Path):
        self.db = db

    @contextlib.contextmanager
    def _conn(self) -> Iterator[Any]:
        conn = store.connect_readonly(str(self.db))
        try:
            yield conn
        finally:
            conn.close()

    def run(self, run_id: str) -> Dict[str, Any]:
        with self._conn() as conn:
            return self._view(sqlite_reader.get_run(conn, run_id))

    def runs(self, experiment: str) -> List[Dict[str, Any]]:
        with self._conn() as conn:
            found = sqlite_reader.list_runs(conn, experiment=experiment)
            ids = [r["id"] for r in found]
            return [self._view(sqlite_reader.get_run(conn, i)) for i in ids]

    def _view(self, r: Dict[str, Any]) -> Dict[str, Any]:
        error = r["error"]
        return {
            "id": r["id"], "experiment": r["experiment"], "name": r["name"],
            "status": r["status"], "params": r["params"],
            "metrics": {k: [(p["step"], p["value"]) for p in points]
                        for k, points in r["metrics"].items()},
            "tags": r["tags"], "artifacts": sorted(a["name"] for a in r["artifacts"]),
            "sweep_id": r["sweep_id"], "job_num": r["job_num"],
            "error": error_text(error), "native_status": r["status"],
            "native": {"artifacts": {a["name"]: a for a in r["artifacts"]},
                       "config": r["config"]},
        }

    def artifact_bytes(self, view: Dict[str, Any], name: str) -> bytes:
        sha = view["native"]["artifacts"][name]["sha256"]
        objects = store.artifact_dir(str(self.db)) / "objects"
        return (objects / sha[:2] / sha).read_bytes()

    def config(self, view: Dict[str, Any]) -> Dict[str, Any]:
        return view["native"]["config"]

    def sweep_members(self, sweep_id: str) -> Set[str]:
        with self._conn() as conn:
            return {r["id"] for r in sqlite_reader.list_runs(conn, sweep=sweep_id)}

    def sweep_record(self, sweep_id: str) -> Optional[Dict[str, Any]]:
        """The sweep as ``experiments sweeps`` lists it."""
        with self._conn() as conn:
            (row,) = [s for s in sqlite_reader.list_sweeps(conn) if s["id"] == sweep_id]
        return {"jobs": row["jobs"], "finished": row["finished"],
                "failed": row["failed"], "closed": row["ended_at"] is not None}


class MLflowReader:
    """An MLflow tracking store or server, through ``MlflowClient``."""

    backend = "mlflow"

    def __init__(self, uri: str):
        self.uri = uri
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.uri)
        return self._client

    def _search(self, filter_string: str) -> List[Any]:
        ids = [e.experiment_id for e in self.client.search_experiments()]
        return list(self.client.search_runs(ids, filter_string, max_results=1000))

    def run(self, run_id: str) -> Dict[str, Any]:
        (found,) = self._search(f"tags.`align_track.run_id` = '{run_id}'")
        return self._view(found)

    def runs(self, experiment: str) -> List[Dict[str, Any]]:
        exp = self.client.get_experiment_by_name(experiment)
        assert exp is not None, f"no MLflow experiment {experiment!r}"
        found = self.client.search_runs([exp.experiment_id], max_results=1000)
        return [self._view(r) for r in found
                if r.data.tags.get("align_track.kind") != "sweep"]

    def _files(self, mlflow_id: str, path: Optional[str] = None) -> List[str]:
        out: List[str] = []
        for item in self.client.list_artifacts(mlflow_id, path):
            if item.is_dir:
                out.extend(self._files(mlflow_id, item.path))
            else:
                out.append(item.path)
        return out

    def _view(self, run: Any) -> Dict[str, Any]:
        mid = run.info.run_id
        tags = run.data.tags
        files = sorted(self._files(mid))
        history = self.client.get_metric_history
        metrics = {key: sorted(((m.step, m.value) for m in history(mid, key)),
                               key=lambda p: p[0])
                   for key in run.data.metrics}
        view = {
            "id": tags.get("align_track.run_id"),
            "experiment": self.client.get_experiment(run.info.experiment_id).name,
            "name": run.info.run_name, "status": tags.get("align_track.status"),
            "params": dict(run.data.params), "metrics": metrics,
            "tags": {k: v for k, v in tags.items()
                     if not k.startswith(("mlflow.", "align_track."))},
            "artifacts": files, "sweep_id": tags.get("align_track.sweep_id"),
            "job_num": int(tags["align_track.job_num"]) if "align_track.job_num" in tags
            else None,
            "error": None, "native_status": run.info.status,
            "native": {"mlflow_id": mid, "tags": tags},
        }
        if "error.txt" in files:
            view["error"] = self.artifact_bytes(view, "error.txt").decode()
        return view

    def artifact_bytes(self, view: Dict[str, Any], name: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="contract-mlflow-") as tmp:
            mid = view["native"]["mlflow_id"]
            path = self.client.download_artifacts(mid, name, tmp)
            return Path(path).read_bytes()

    def config(self, view: Dict[str, Any]) -> Dict[str, Any]:
        return yaml.safe_load(self.artifact_bytes(view, "config_resolved.yaml"))

    def sweep_members(self, sweep_id: str) -> Set[str]:
        (parent,) = self._search(f"tags.`align_track.kind` = 'sweep' and "
                                 f"tags.`align_track.sweep_id` = '{sweep_id}'")
        children = self._search(f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        return {c.data.tags["align_track.run_id"] for c in children}

    def sweep_record(self, sweep_id: str) -> Optional[Dict[str, Any]]:
        """The sweep's parent run."""
        (parent,) = self._search(f"tags.`align_track.kind` = 'sweep' and "
                                 f"tags.`align_track.sweep_id` = '{sweep_id}'")
        return {"status": parent.info.status,
                "align_track.status": parent.data.tags.get("align_track.status"),
                "closed": parent.info.end_time is not None}


class AimReader:
    """An Aim repo, through a new ``aim.Repo`` and its queries at every read."""

    backend = "aim"
    _QUIET = 0  # aim's QueryReportMode.DISABLED: no progress bar

    def __init__(self, repo: Path):
        self.repo = repo

    def _query(self, query: str) -> List[Dict[str, Any]]:
        import aim

        repo = aim.Repo(str(self.repo))
        series: Dict[str, Dict[str, List[Any]]] = {}
        for metric in repo.query_metrics(query, report_mode=self._QUIET).iter():
            steps, (values, _epochs, _times) = metric.data.items_list()
            context = metric.context.to_dict()
            key = metric.name
            if context:
                key += " " + json.dumps(context, sort_keys=True)
            series.setdefault(metric.run.hash, {})[key] = list(zip(steps, values))
        return [self._view(item.run, series.get(item.run.hash, {}))
                for item in repo.query_runs(query, report_mode=self._QUIET).iter_runs()]

    def run(self, run_id: str) -> Dict[str, Any]:
        (view,) = self._query(f'run.align_track_id == "{run_id}"')
        return view

    def runs(self, experiment: str) -> List[Dict[str, Any]]:
        return self._query(f'run.experiment == "{experiment}"')

    @staticmethod
    def _view(run: Any, metrics: Dict[str, List[Any]]) -> Dict[str, Any]:
        tags = list(run.tags)
        hparams = run["hparams"]
        error = run.get("error")
        return {
            "id": run["align_track_id"], "experiment": run.experiment, "name": run.name,
            "status": run["align_track_status"], "params": flat(hparams),
            "metrics": metrics, "tags": key_value_tags(tags),
            "artifacts": sorted(run.artifacts), "sweep_id": run["sweep_id"],
            "job_num": run["job_num"], "error": error_text(error),
            "native_status": next(
                (t for t in tags if t in ("failed", "interrupted", "crashed")), None),
            "native": {"hash": run.hash, "tags": tags, "hparams": hparams,
                       "artifacts": {k: a.uri for k, a in run.artifacts.items()},
                       "active": run.active},
        }

    def artifact_bytes(self, view: Dict[str, Any], name: str) -> bytes:
        uri = view["native"]["artifacts"][name]
        return Path(urllib.parse.urlparse(uri).path).read_bytes()

    def config(self, view: Dict[str, Any]) -> Dict[str, Any]:
        return view["native"]["hparams"]

    def sweep_members(self, sweep_id: str) -> Set[str]:
        import aim

        found = aim.Repo(str(self.repo)).query_runs(f'run.sweep_id == "{sweep_id}"',
                                                    report_mode=self._QUIET)
        return {item.run["align_track_id"] for item in found.iter_runs()}

    def sweep_record(self, sweep_id: str) -> Optional[Dict[str, Any]]:
        return None  # runs carry the sweep id; Aim has no run for the sweep itself


class ClearMLReader:
    """ClearML offline sessions, read from disk: ``task.json``, ``metrics.jsonl``
    and the artifact files under ``data/``."""

    backend = "clearml"

    def __init__(self, offline: Path):
        self.offline = offline

    def _sessions(self) -> Iterator[Dict[str, Any]]:
        if not self.offline.is_dir():
            return
        for folder in sorted(p for p in self.offline.iterdir() if p.is_dir()):
            task = json.loads((folder / "task.json").read_text())
            hyper = task.get("hyperparams", {})
            props = {k: v.get("value") for k, v in hyper.get("properties", {}).items()}
            yield {"folder": folder, "task": task, "props": props}

    def run(self, run_id: str) -> Dict[str, Any]:
        (found,) = [s for s in self._sessions() if s["props"].get("align_track.run_id")
                    == run_id]
        return self._view(found)

    def runs(self, experiment: str) -> List[Dict[str, Any]]:
        return [self._view(s) for s in self._sessions()
                if s["task"].get("project_name") == experiment]

    def _view(self, s: Dict[str, Any]) -> Dict[str, Any]:
        task, props = s["task"], s["props"]
        metrics: Dict[str, Dict[int, float]] = {}
        events = s["folder"] / "metrics.jsonl"
        for line in (events.read_text().splitlines() if events.exists() else []):
            for ev in (json.loads(line) if line.strip() else []):
                if ev.get("type") == "training_stats_scalar":
                    title, series = ev["metric"], ev["variant"]
                    key = title if title == series else f"{title}/{series}"
                    metrics.setdefault(key, {})[ev["iter"]] = ev["value"]
        listed = task.get("execution", {}).get("artifacts", [])
        artifacts = {a["key"]: a for a in listed}
        params = {k: v.get("value") for k, v in
                  task.get("hyperparams", {}).get("Config", {}).items()}
        view = {
            "id": props.get("align_track.run_id"),
            "experiment": task.get("project_name"),
            "name": task.get("name"), "status": props.get("align_track.status"),
            "params": params,
            "metrics": {k: sorted(v.items()) for k, v in metrics.items()},
            "tags": key_value_tags(task.get("tags") or []),
            "artifacts": sorted(artifacts),
            "sweep_id": props.get("align_track.sweep_id"),
            "job_num": (int(props["align_track.job_num"])
                        if "align_track.job_num" in props else None),
            "error": None, "native_status": None,  # an offline session keeps no status
            "native": {"task": task, "props": props, "artifacts": artifacts},
        }
        if "traceback.txt" in artifacts:
            view["error"] = self.artifact_bytes(view, "traceback.txt").decode()
        elif props.get("align_track.error"):
            view["error"] = props["align_track.error"]
        return view

    def artifact_bytes(self, view: Dict[str, Any], name: str) -> bytes:
        return Path(view["native"]["artifacts"][name]["uri"]).read_bytes()

    def config(self, view: Dict[str, Any]) -> Dict[str, Any]:
        configuration = view["native"]["task"]["configuration"]
        return yaml.safe_load(configuration["OmegaConf"]["value"])

    def sweep_members(self, sweep_id: str) -> Set[str]:
        return {s["props"].get("align_track.run_id") for s in self._sessions()
                if f"sweep={sweep_id}" in (s["task"].get("tags") or [])}

    def sweep_record(self, sweep_id: str) -> Optional[Dict[str, Any]]:
        return None  # offline there is no parent task (its id would not survive import)


# -- where runs go ------------------------------------------------------------------


@dataclasses.dataclass
class Target:
    """One backend's store for the in-process runs of the contract.

    ``settings`` are the ``track_run`` keyword arguments, ``launch`` the directory
    the runs are started from (where a spool file would appear) and ``env`` what
    the backend needs in the environment while it writes.
    """

    backend: str
    launch: Path
    settings: Dict[str, Any]
    reader: Any
    env: Dict[str, str] = dataclasses.field(default_factory=dict)
    #: what the tests wrote here, by name, so each run is written once
    made: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def assert_nothing_spooled(self) -> None:
        spool = self.launch / SPOOL_FILE
        assert not spool.exists(), f"{self.backend}: a call failed and was spooled"


def clearml_env(folder: Path) -> Dict[str, str]:
    """ClearML offline, with its cache, HOME and clearml.conf inside ``folder``."""
    conf = folder / "clearml.conf"
    if not conf.exists():
        folder.mkdir(parents=True, exist_ok=True)
        conf.write_text("# no server: the contract runs ClearML offline\n")
        (folder / "home").mkdir()
    return {"CLEARML_OFFLINE_MODE": "1", "CLEARML_CACHE_DIR": str(folder / "cache"),
            "CLEARML_CONFIG_FILE": str(conf), "HOME": str(folder / "home")}


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Target]:
    root = tmp_path_factory.mktemp("contract")
    out = {}
    for backend in BACKENDS:
        launch = root / backend
        launch.mkdir()
        if backend == "sqlite":
            db = launch / "experiments.db"
            out[backend] = Target(backend, launch, {"db": str(db)}, SQLiteReader(db))
        elif backend == "mlflow":
            uri = f"sqlite:///{launch / 'mlflow.db'}"
            out[backend] = Target(backend, launch, {"tracking_uri": uri},
                                  MLflowReader(uri))
        elif backend == "aim":
            out[backend] = Target(backend, launch, {"repo": str(launch)},
                                  AimReader(launch))
        else:
            env = clearml_env(launch)
            out[backend] = Target(
                backend, launch, {"offline": True, "project": "contract"},
                ClearMLReader(Path(env["CLEARML_CACHE_DIR"]) / "offline"), env)
    return out


@pytest.fixture
def target(backend: str, targets: Dict[str, Target]) -> Target:
    return targets[backend]


# -- the sweeps, in the background -----------------------------------------------------


class Sweep:
    """One ``app.py -m x=0,1,2,3`` subprocess, started at once in a thread.

    It writes to the store of the backend's :class:`Target` (MLflow: to an ``mlflow
    server`` on 127.0.0.1 instead), from a launch directory of its own.
    """

    def __init__(self, target: Target, root: Path):
        self.backend = target.backend
        self.target = target
        self.launch = root / f"sweep-{self.backend}"
        self.netguard_log = self.launch / "netguard.log"
        self.app = write_app(self.launch, SWEEP_APP, SWEEP_CONFIG)
        self.reader: Any = target.reader
        self.server: Any = None
        self.proc: Optional[subprocess.CompletedProcess] = None
        self.failure: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"contract-sweep-{self.backend}")

    def start(self) -> "Sweep":
        self._thread.start()
        return self

    def _command(self) -> Any:
        env = {**os.environ, **self.target.env,
               "ALIGN_TRACK_NETGUARD": str(self.netguard_log),
               "PYTHONPATH": os.pathsep.join(
                   p for p in (str(NETGUARD), os.environ.get("PYTHONPATH", "")) if p)}
        env.pop("ALIGN_TRACK_DB", None)
        env.pop("MLFLOW_TRACKING_URI", None)
        settings = dict(self.target.settings)
        settings.pop("project", None)  # the project is the experiment
        if self.backend == "mlflow":
            settings["tracking_uri"] = self.server.url
            self.reader = MLflowReader(self.server.url)
        args = [f"tracker.{k}={str(v).lower() if isinstance(v, bool) else v}"
                for k, v in settings.items()]
        return [sys.executable, str(self.app), "-m", "x=0,1,2,3",
                f"+tracker={self.backend}", f"tracker.experiment={SWEEP_EXPERIMENT}",
                *args, f"hydra.sweep.dir={self.launch / 'multirun'}"], env

    def _run(self) -> None:
        try:
            if self.backend == "mlflow":
                from servers import MLflowServer

                self.server = MLflowServer(self.launch / "mlflow-server").start()
            command, env = self._command()
            self.proc = subprocess.run(command, cwd=str(self.launch), env=env,
                                       capture_output=True, text=True, timeout=400)
        except BaseException as exc:  # reported by the test that waits for it
            self.failure = exc

    def wait(self) -> "Sweep":
        self._thread.join(600)
        if self.failure is not None:
            raise AssertionError(f"{self.backend} sweep did not run: {self.failure!r}")
        assert self.proc is not None, f"{self.backend} sweep still running"
        return self

    def stop(self) -> None:
        self._thread.join(600)
        if self.server is not None:
            self.server.stop()


SWEEP_TESTS = ("test_sweep_of_four_jobs_with_a_failing_job",
               "test_sweep_record_closes_with_its_outcome")


@pytest.fixture(scope="module", autouse=True)
def sweeps(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           targets: Dict[str, Target]) -> Iterator[Dict[str, Sweep]]:
    """Start the sweep of every backend whose sweep tests are selected, as the module
    starts, so the subprocesses run while the in-process tests do."""
    wanted = {item.callspec.params.get("backend") for item in request.session.items
              if item.module is request.module and item.originalname in SWEEP_TESTS
              and hasattr(item, "callspec")}
    root = tmp_path_factory.mktemp("contract-sweeps")
    started = {b: Sweep(targets[b], root).start() for b in BACKENDS if b in wanted}
    try:
        yield started
    finally:
        for sweep in started.values():
            sweep.stop()
