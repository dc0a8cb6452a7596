"""The MLflow backend: every job is an MLflow run, a sweep is a parent run.

Where each piece of a run lands is described in ``docs/backends/mlflow.md``. The
MLflow SDK is imported only here, and only through :class:`mlflow.MlflowClient`:
the fluent ``mlflow.start_run`` API keeps one active run per process, which does
not fit several jobs (or threads) writing at once.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import socket
import ssl
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from align_track.backends.base import Backend, file_digest
from align_track.capture import dump_yaml
from align_track.env import anchor
from align_track.records import (
    CRASHED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    Point,
    RunEnd,
    RunRecord,
    SweepRecord,
)

logger = logging.getLogger(__name__)

#: Tracking URI used when neither ``tracker.tracking_uri`` nor ``$MLFLOW_TRACKING_URI``
#: is set (relative to the launch directory).
DEFAULT_URI = "sqlite:///mlflow.db"
#: MLflow's own variable, used when ``tracker.tracking_uri`` is not set.
URI_VAR = "MLFLOW_TRACKING_URI"

# MLflow's limits (mlflow.utils.validation, the same in 2.x and 3.x).
MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_PARAMS_PER_BATCH = 100
#: Config keys sent as MLflow params; all of them are in config_resolved.yaml.
MAX_PARAMS = 1000
MAX_METRICS_PER_BATCH = 1000
#: MLflow's server refuses a log_batch body over 1 MB; stay well below.
MAX_BATCH_BYTES = 800_000

TRUNCATED = "...[truncated, see {where}]"

STATUS = {
    FINISHED: "FINISHED", FAILED: "FAILED", INTERRUPTED: "KILLED", CRASHED: "KILLED",
}

TAG = "align_track."
_INF = float("inf")
SWEEP_KIND = "sweep"

# Characters MLflow accepts in param, metric and tag names on every platform
# (MLflow also takes ":" except on Windows; it is replaced here so a name is the
# same wherever the run was logged).
_BAD_CHARS = re.compile(r"[^\w./\- ]")


def _hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:n]


def clean_name(name: str) -> str:
    """Make ``name`` a valid MLflow param, metric or tag name.

    Characters outside letters, digits, ``_ - . /`` and space become ``_``; a
    ``/`` that would make the name a non-normal path (leading, trailing, doubled,
    ``.`` or ``..`` segments) is fixed the same way; a name over 250 characters is
    cut and ends with a short hash of the original, so it stays unique.
    """
    out = _BAD_CHARS.sub("_", name)
    parts = out.split("/")
    fixed = []
    for part in parts:
        if part in ("", ".", ".."):
            part = "_" * max(1, len(part))
        fixed.append(part)
    out = "/".join(fixed)
    if len(out) > MAX_KEY:
        out = out[: MAX_KEY - 9] + "_" + _hash(name)
    return out


def metric_name(name: str, context: str) -> str:
    """The MLflow metric name for a metric and its context (canonical JSON text).

    ``acc`` with context ``{"subset": "val"}`` becomes ``acc/subset/val``; several
    context keys follow in sorted order (``acc/fold/1/subset/val``). Each piece is
    made valid with :func:`clean_name` rules; ``/`` inside a context key or value
    becomes ``_`` so the pairs stay readable.
    """
    if not context:
        return clean_name(name)
    try:
        ctx = json.loads(context)
    except ValueError:
        ctx = {"context": context}
    pieces = [name]
    items = sorted(ctx.items()) if isinstance(ctx, dict) else [("context", ctx)]
    for key, value in items:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        pieces.append(str(key).replace("/", "_"))
        pieces.append(text.replace("/", "_"))
    return clean_name("/".join(pieces))


def param_text(value: Any) -> str:
    """Params are text in MLflow: strings as they are, numbers and booleans as
    Python writes them (MLflow's own convention), lists and ``{}`` as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def shorten(text: str, limit: int, where: Optional[str] = None) -> Tuple[str, bool]:
    """``text`` cut to ``limit`` characters with a visible marker saying where the
    full text is, and whether it was cut."""
    if len(text) <= limit:
        return text, False
    marker = TRUNCATED.format(where=where) if where else "...[truncated]"
    return text[: limit - len(marker)] + marker, True


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def anchor_uri(uri: str, launch_dir: str) -> str:
    """A tracking URI with a relative local path taken from ``launch_dir``.

    ``sqlite:///mlflow.db`` (relative) becomes ``sqlite:////launch/dir/mlflow.db``;
    ``sqlite:////abs.db``, ``http(s)://`` and other URIs are kept as they are.
    """
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:" and not os.path.isabs(path):
            return "sqlite:///" + anchor(path, launch_dir)
        return uri
    if uri.startswith("file:"):
        path = urllib.parse.urlparse(uri).path
        if not path.startswith("/") and not uri.startswith("file:///"):
            return "file://" + anchor(uri[len("file:"):], launch_dir)
        return uri
    if "://" not in uri:
        return anchor(uri, launch_dir)
    return uri


def _local_root(uri: str) -> Optional[str]:
    """The folder that holds a local store (for the default artifact location)."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        return os.path.dirname(path) if os.path.isabs(path) else None
    if uri.startswith("file://"):
        return urllib.parse.urlparse(uri).path or None
    if "://" not in uri and os.path.isabs(uri):
        return uri
    return None


class MLflowBackend(Backend):
    """Runs in an MLflow tracking store: a local ``sqlite:///`` file or a server.

    Args:
        tracking_uri: where runs go; relative local paths are already anchored by
            :meth:`from_settings`.
        artifact_root: folder for the artifacts of experiments this backend
            creates in a local store (default: ``mlruns`` next to the store), so
            they never land in Hydra's job directory.
    """

    name = "mlflow"

    def __init__(self, tracking_uri: str, artifact_root: Optional[str] = None):
        self.tracking_uri = tracking_uri
        self.location = tracking_uri
        self.artifact_root = artifact_root
        self._client: Any = None
        self._lock = threading.RLock()
        self._experiments: Dict[str, str] = {}
        # our run id -> MLflow run id, and per run what MLflow already holds
        self._runs: Dict[str, str] = {}
        self._experiment_of: Dict[str, str] = {}
        self._params: Dict[str, Dict[str, str]] = {}
        self._later_params: Dict[str, Dict[str, Any]] = {}
        self._metric_keys: Dict[str, Dict[Tuple[str, str], str]] = {}
        self._renamed: Dict[str, Dict[str, Any]] = {}
        self._infinite: Dict[str, Set[str]] = {}
        self._artifact_uris: Dict[str, str] = {}
        self._warned: Set[str] = set()
        # sweep id -> MLflow parent run id; parents this process opened and not closed
        self._parents: Dict[Tuple[str, str], str] = {}
        self._open_parents: Dict[str, str] = {}
        self._sweep_of: Dict[str, Tuple[str, str]] = {}  # run id -> (sweep id, exp id)
        self._atexit = False

    # -- setup ---------------------------------------------------------------------

    @classmethod
    def from_settings(
        cls, settings: Any, launch_dir: str
    ) -> Tuple[str, Dict[str, Any]]:
        """The tracking URI (anchored to ``launch_dir``) is also the cache key."""
        chosen = settings.tracking_uri or os.environ.get(URI_VAR) or DEFAULT_URI
        uri = anchor_uri(chosen, launch_dir)
        root = _local_root(uri)
        kwargs: Dict[str, Any] = {"tracking_uri": uri}
        if root is not None:
            kwargs["artifact_root"] = os.path.join(root, "mlruns")
        return uri, kwargs

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.tracking_uri)
                logger.debug("MLflow client for %s", self.tracking_uri)
            return self._client

    def open(self) -> None:
        """Check the store now: a server that does not answer fails fast here
        instead of after MLflow's retries; a new local store gets its tables."""
        if urllib.parse.urlparse(self.tracking_uri).scheme in ("http", "https"):
            self._check_server()
        self.client  # noqa: B018

    def _check_server(self) -> None:
        url = self.tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=10):
                return
        except urllib.error.HTTPError:
            return  # something answers (a proxy, an auth layer): MLflow talks to it
        except (urllib.error.URLError, socket.timeout, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError):
                return  # it answers; TLS settings are MLflow's (MLFLOW_TRACKING_*)
            raise ConnectionError(
                f"no MLflow server answers at {self.tracking_uri} ({reason}); "
                "start one with `mlflow server --host 127.0.0.1 --port PORT` or "
                "fix tracker.tracking_uri"
            ) from None

    # -- experiments and runs ------------------------------------------------------

    def _experiment_id(self, name: str) -> str:
        with self._lock:
            found = self._experiments.get(name)
        if found is not None:
            return found
        from mlflow.exceptions import MlflowException

        client = self.client
        exp = client.get_experiment_by_name(name)
        if exp is None:
            location = None
            if self.artifact_root is not None:
                folder = clean_name(name).replace("/", "_")
                location = os.path.join(self.artifact_root, folder)
            try:
                exp_id = client.create_experiment(name, artifact_location=location)
            except MlflowException as exc:
                # another process created it between our lookup and our create
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
                logger.debug("experiment %r created elsewhere meanwhile: %s", name, exc)
            else:
                exp = client.get_experiment(exp_id)
        if exp.lifecycle_stage != "active":
            raise RuntimeError(
                f"MLflow experiment {name!r} is deleted in {self.tracking_uri}; "
                "restore it (mlflow experiments restore --experiment-id "
                f"{exp.experiment_id}) "
                "or set tracker.experiment to another name"
            )
        with self._lock:
            self._experiments[name] = exp.experiment_id
        return exp.experiment_id

    def _mlflow_id(self, run_id: str) -> str:
        with self._lock:
            found = self._runs.get(run_id)
        if found is not None:
            return found
        # a run opened by another process of this sweep or an earlier call
        runs = self.client.search_runs(
            experiment_ids=[e.experiment_id for e in self.client.search_experiments()],
            filter_string=f"tags.`{TAG}run_id` = '{run_id}'", max_results=1,
        )
        if not runs:
            raise KeyError(f"run {run_id} is not in {self.tracking_uri}")
        with self._lock:
            self._runs[run_id] = runs[0].info.run_id
            self._experiment_of[run_id] = runs[0].info.experiment_id
        return runs[0].info.run_id

    def start_run(self, record: RunRecord) -> None:
        client = self.client
        exp_id = self._experiment_id(record.experiment)
        tags = self._run_tags(record)
        # set with the run, so a search never sees it without them
        first = {f"{TAG}run_id": record.id}
        if record.sweep_id:
            first["mlflow.parentRunId"] = self._sweep_parent(record.sweep_id, exp_id)
        run = client.create_run(
            exp_id, start_time=_ms(record.started_at),
            run_name=shorten(record.name, MAX_KEY)[0] or None, tags=first,
        )
        mlflow_id = run.info.run_id
        with self._lock:
            self._runs[record.id] = mlflow_id
            self._experiment_of[record.id] = exp_id
            if record.sweep_id:
                self._sweep_of[record.id] = (record.sweep_id, exp_id)
            self._params[record.id] = {}
            self._later_params[record.id] = {}
            self._metric_keys[record.id] = {}
            self._renamed[record.id] = {"params": {}, "tags": {}, "metrics": {}}
            self._artifact_uris[mlflow_id] = str(run.info.artifact_uri).rstrip("/")
        params = record.params
        if len(params) > MAX_PARAMS:
            # MLflow's SQL store rereads a run's params on every batch: cost grows with
            # the square of their number. The rest stay in config_resolved.yaml.
            params = dict(list(params.items())[:MAX_PARAMS])
            tags[f"{TAG}params_in_config"] = str(len(record.params) - MAX_PARAMS)
            logger.warning("the config has %d keys; MLflow gets the first %d as params "
                           "and all of them in config_resolved.yaml", len(record.params),
                           MAX_PARAMS)
        self._send(mlflow_id, self._param_batch(record.id, params,
                                                where="config_resolved.yaml"),
                   self._tag_batch(record.id, tags))
        client.log_text(mlflow_id, record.config_yaml or "{}\n", "config.yaml")
        client.log_text(mlflow_id, dump_yaml(record.config), "config_resolved.yaml")
        self._write_names(record.id, mlflow_id, only_if={"params", "tags"})

    def _run_tags(self, r: RunRecord) -> Dict[str, str]:
        tags: Dict[str, str] = {}
        facts: Dict[str, Any] = {
            "sweep_id": r.sweep_id,
            "job_num": r.job_num,
            "sweep_dir": r.sweep_dir,
            "output_dir": r.output_dir,
            "launch_dir": r.env.get("launch_dir"),
            "host": r.env.get("host"),
            "pid": r.env.get("pid"),
            "git_commit": r.git.get("commit"),
            "git_branch": r.git.get("branch"),
            "git_dirty": r.git.get("dirty"),
            "overrides": " ".join(r.overrides) if r.overrides else None,
            "choices": (json.dumps(r.choices, sort_keys=True, default=str)
                        if r.choices else None),
        }
        for key, value in facts.items():
            if value is not None and value != "":
                tags[TAG + key] = str(value)
        # MLflow's own tags, so its UI shows user, source and commit.
        if r.env.get("user"):
            tags["mlflow.user"] = str(r.env["user"])
        argv = r.env.get("argv") or []
        if argv:
            tags["mlflow.source.name"] = str(argv[0])
            tags["mlflow.source.type"] = "LOCAL"
        if r.git.get("commit"):
            tags["mlflow.source.git.commit"] = str(r.git["commit"])
        if r.git.get("branch"):
            tags["mlflow.source.git.branch"] = str(r.git["branch"])
        tags.update({str(k): str(v) for k, v in r.tags.items()})
        return tags

    # -- params and tags -----------------------------------------------------------

    def _key(
        self, run_id: str, kind: str, original: str, taken: Mapping[str, Any]
    ) -> str:
        """A valid MLflow name for ``original``, unique among ``taken``."""
        key = clean_name(original)
        if key != original or (key in taken and taken[key] != original):
            if key in taken and taken[key] != original:
                key = clean_name(f"{key}_{_hash(original)}")
            with self._lock:
                self._renamed[run_id][kind][key] = original
        return key

    def _warn_renamed(self, kind: str, mapping: Mapping[str, Any]) -> None:
        fresh = {k: v for k, v in mapping.items() if f"{kind}:{v}" not in self._warned}
        if not fresh:
            return
        self._warned.update(f"{kind}:{v}" for v in fresh.values())
        shown = ", ".join(f"{v!r} -> {k!r}" for k, v in list(fresh.items())[:20])
        more = f" (and {len(fresh) - 20} more)" if len(fresh) > 20 else ""
        logger.warning(
            "MLflow does not accept these %s names; stored as: %s%s. The mapping is "
            "in the run's artifact align_track/names.json", kind, shown, more,
        )

    def _send(self, mlflow_id: str, params: Sequence[Any], tags: Sequence[Any]) -> None:
        """Params and tags in as few ``log_batch`` requests as MLflow's limits allow."""
        def size(entity: Any) -> int:
            return len(entity.key) + len(entity.value)

        p_chunks = list(_chunks(params, MAX_PARAMS_PER_BATCH, size))
        t_chunks = list(_chunks(tags, MAX_PARAMS_PER_BATCH, size))
        for i in range(max(len(p_chunks), len(t_chunks))):
            p = p_chunks[i] if i < len(p_chunks) else []
            t = t_chunks[i] if i < len(t_chunks) else []
            if sum(map(size, p)) + sum(map(size, t)) > MAX_BATCH_BYTES // 4:
                self.client.log_batch(mlflow_id, params=p)
                self.client.log_batch(mlflow_id, tags=t)
            else:
                self.client.log_batch(mlflow_id, params=p, tags=t)

    def _param_batch(
        self, run_id: str, params: Mapping[str, Any], where: str
    ) -> List[Any]:
        """Params MLflow does not hold yet, with valid names and values."""
        from mlflow.entities import Param

        with self._lock:
            held = self._params[run_id]
        originals: Dict[str, str] = {}
        batch: List[Any] = []
        changed: Dict[str, Any] = {}
        cut = 0
        renamed_before = len(self._renamed[run_id]["params"])
        for name, value in params.items():
            key = self._key(run_id, "params", str(name), originals)
            originals[key] = str(name)
            text, was_cut = shorten(param_text(value), MAX_PARAM_VALUE, where)
            cut += was_cut
            if key in held:
                if held[key] != text:
                    changed[str(name)] = value  # MLflow refuses to change a param
                continue
            held[key] = text
            batch.append(Param(key, text))
        renamed = self._renamed[run_id]["params"]
        if len(renamed) > renamed_before:
            self._warn_renamed("param", renamed)
        if cut:
            logger.info("%d param values of run %s are longer than MLflow's %d "
                        "characters; shortened, the full values are in %s",
                        cut, run_id, MAX_PARAM_VALUE, where)
        if changed:
            logger.warning(
                "MLflow cannot change a param once logged; run %s keeps the first "
                "value of %s and the new values are in the artifact "
                "logged_params.json",
                run_id, ", ".join(sorted(changed)),
            )
        return batch

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        mlflow_id = self._mlflow_id(run_id)
        with self._lock:
            self._params.setdefault(run_id, {})
            self._renamed.setdefault(run_id, {"params": {}, "tags": {}, "metrics": {}})
            later = self._later_params.setdefault(run_id, {})
            later.update({str(k): v for k, v in params.items()})
            snapshot = dict(later)
        batch = self._param_batch(run_id, params, "logged_params.json")
        self._send(mlflow_id, batch, [])
        self.client.log_text(
            mlflow_id, json.dumps(snapshot, indent=2, ensure_ascii=False, default=str),
            "logged_params.json",
        )
        self._write_names(run_id, mlflow_id, only_if={"params"})

    def _tag_batch(self, run_id: str, tags: Mapping[str, str]) -> List[Any]:
        """Tags with valid names and values; the last value wins for a repeated name."""
        from mlflow.entities import RunTag

        with self._lock:
            self._renamed.setdefault(run_id, {"params": {}, "tags": {}, "metrics": {}})
        originals: Dict[str, str] = {}
        batch = []
        for name, value in tags.items():
            key = self._key(run_id, "tags", str(name), originals)
            originals[key] = str(name)
            text, _ = shorten(str(value), MAX_TAG_VALUE)
            batch.append(RunTag(key, text))
        # last value wins for a key given twice
        unique = list({t.key: t for t in batch}.values())
        if self._renamed[run_id]["tags"]:
            self._warn_renamed("tag", self._renamed[run_id]["tags"])
        return unique

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        mlflow_id = self._mlflow_id(run_id)
        self._send(mlflow_id, [], self._tag_batch(run_id, tags))
        self._write_names(run_id, mlflow_id, only_if={"tags"})

    def _write_names(self, run_id: str, mlflow_id: str, only_if: Iterable[str]) -> None:
        """Rewrite ``align_track/names.json`` (MLflow name -> original name) when any
        name of the given kinds had to change."""
        with self._lock:
            names = self._renamed.get(run_id)
            if not names or not any(names[k] for k in only_if):
                return
            text = json.dumps(names, indent=2, ensure_ascii=False, sort_keys=True)
        self.client.log_text(mlflow_id, text, "align_track/names.json")

    # -- metrics -------------------------------------------------------------------

    def log_metrics(self, run_id: str, points: List[Point]) -> None:
        if not points:
            return
        from mlflow.entities import Metric

        mlflow_id = self._mlflow_id(run_id)
        with self._lock:
            keys = self._metric_keys.setdefault(run_id, {})
            renamed = self._renamed.setdefault(
                run_id, {"params": {}, "tags": {}, "metrics": {}})["metrics"]
        owners = {key: series for series, key in keys.items()}
        new_names = False
        metrics = []
        for name, step, value, wall, ctx in points:
            key = keys.get((name, ctx))
            if key is None:
                key = metric_name(name, ctx)
                if owners.get(key, (name, ctx)) != (name, ctx):  # two series, one name
                    key = clean_name(f"{key}_{_hash(name + ctx)}")
                keys[(name, ctx)] = key
                owners[key] = (name, ctx)
                if key != name or ctx:
                    original = {"name": name, "context": json.loads(ctx) if ctx else {}}
                    with self._lock:
                        renamed[key] = original
                    new_names = True
            value = float(value)
            if value in (_INF, -_INF):
                with self._lock:
                    self._infinite.setdefault(run_id, set()).add(key)
            metrics.append(Metric(key, value, _ms(wall), int(step or 0)))
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            chunk = metrics[i:i + MAX_METRICS_PER_BATCH]
            self.client.log_batch(mlflow_id, metrics=chunk)
        if new_names:
            changed = {k: v["name"] for k, v in renamed.items()
                       if not v["context"] and k != v["name"]}
            if changed:
                self._warn_renamed("metric", changed)

    # -- artifacts -----------------------------------------------------------------

    def log_artifact(self, run_id: str, path: str, name: str) -> Dict[str, Any]:
        mlflow_id = self._mlflow_id(run_id)
        name = _artifact_name(name)
        folder, base = posixpath.split(name)
        sha, size = file_digest(path)
        if os.path.basename(path) == base:
            self.client.log_artifact(mlflow_id, path, folder or None)
        else:  # MLflow keeps the local file name: copy it under the wanted one
            with tempfile.TemporaryDirectory(prefix="align-track-") as tmp:
                staged = os.path.join(tmp, base)
                shutil.copyfile(path, staged)
                self.client.log_artifact(mlflow_id, staged, folder or None)
        return {"name": name, "size": size, "sha256": sha,
                "uri": f"{self._artifact_uri(mlflow_id)}/{name}"}

    def _artifact_uri(self, mlflow_id: str) -> str:
        with self._lock:
            found = self._artifact_uris.get(mlflow_id)
        if found is None:
            found = str(self.client.get_run(mlflow_id).info.artifact_uri).rstrip("/")
            with self._lock:
                self._artifact_uris[mlflow_id] = found
        return found

    # -- end -----------------------------------------------------------------------

    def end_run(self, run_id: str, end: RunEnd) -> None:
        client = self.client
        mlflow_id = self._mlflow_id(run_id)
        tags = {f"{TAG}status": end.status}
        if end.dropped:
            tags[f"{TAG}dropped"] = str(end.dropped)
        if end.return_value is not None:
            tags[f"{TAG}return_value"] = json.dumps(end.return_value, default=str)
        with self._lock:
            infinite = sorted(self._infinite.get(run_id, ()))
        if infinite:  # MLflow's SQL stores hold +-inf as +-1.7976931348623157e308
            tags[f"{TAG}infinite_values"] = json.dumps(infinite, ensure_ascii=False)
        if end.error:
            kind = end.error.get("type", "")
            message = end.error.get("message", "")
            trace = end.error.get("traceback") or f"{kind}: {message}\n"
            client.log_text(mlflow_id, trace, "error.txt")
            tags[f"{TAG}error_type"] = kind
            tags[f"{TAG}error"] = f"{kind}: {message}" if message else kind
            tags["mlflow.note.content"] = (
                f"{end.status}: {kind}: {message}\n\nsee error.txt")
        self._send(mlflow_id, [], self._tag_batch(run_id, tags))
        self._write_names(run_id, mlflow_id, only_if={"metrics"})
        client.set_terminated(mlflow_id, STATUS.get(end.status, "KILLED"),
                              end_time=_ms(end.ended_at))
        with self._lock:
            sweep = self._sweep_of.pop(run_id, None)
        if sweep is not None:
            self._settle_parent(mlflow_id, *sweep)
        with self._lock:
            for table in (self._params, self._later_params, self._metric_keys,
                          self._renamed, self._infinite):
                table.pop(run_id, None)
            self._artifact_uris.pop(mlflow_id, None)

    # -- sweeps --------------------------------------------------------------------

    def start_sweep(self, sweep: SweepRecord) -> None:
        exp_id = self._experiment_id(sweep.experiment)
        parent = self._sweep_parent(sweep.id, exp_id, sweep)
        with self._lock:
            self._open_parents[sweep.id] = parent
            if not self._atexit:
                atexit.register(self._close_parents_at_exit)
                self._atexit = True

    def _find_parents(self, sweep_id: str, exp_id: str) -> List[Any]:
        kind = f"tags.`{TAG}kind` = '{SWEEP_KIND}'"
        if "'" in sweep_id or "\\" in sweep_id:
            flt = kind  # compared below; the id cannot go into a filter string
        else:
            flt = f"{kind} AND tags.`{TAG}sweep_id` = '{sweep_id}'"
        found, token = [], None
        while True:
            page = self.client.search_runs(
                [exp_id], filter_string=flt, max_results=1000, page_token=token)
            found.extend(
                r for r in page if r.data.tags.get(f"{TAG}sweep_id") == sweep_id)
            token = page.token
            if not token:
                break
        return sorted(found, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    def _sweep_parent(
        self, sweep_id: str, exp_id: str, sweep: Optional[SweepRecord] = None
    ) -> str:
        """The MLflow id of the sweep's parent run, found by tag or made here."""
        with self._lock:
            found = self._parents.get((sweep_id, exp_id))
        if found is not None:
            return found
        parents = self._find_parents(sweep_id, exp_id)
        if parents:
            parent = parents[0].info.run_id
        else:
            parent = self._create_parent(sweep_id, exp_id, sweep)
            # two processes may have made one each at once: keep the first
            parents = self._find_parents(sweep_id, exp_id)
            if parents and parents[0].info.run_id != parent:
                self._drop_parent(exp_id, parent)
                parent = parents[0].info.run_id
        with self._lock:
            self._parents[(sweep_id, exp_id)] = parent
        return parent

    def _settle_parent(self, mlflow_id: str, sweep_id: str, exp_id: str) -> None:
        """At a run's end, move it under the sweep's one parent if another process
        made a parent too, and the search at the run's start could not see it yet
        (made at the same instant, committed later). Every process keeps the same
        parent, the first of the search's order; a losing parent goes once no run
        is under it."""
        parents = self._find_parents(sweep_id, exp_id)
        with self._lock:
            mine = self._parents.get((sweep_id, exp_id))
        if not parents or mine is None or parents[0].info.run_id == mine:
            return
        winner = parents[0].info.run_id
        self.client.set_tag(mlflow_id, "mlflow.parentRunId", winner)
        with self._lock:
            self._parents[(sweep_id, exp_id)] = winner
            for sweep, parent in self._open_parents.items():
                if parent == mine:
                    self._open_parents[sweep] = winner
        self._drop_parent(exp_id, mine)
        logger.debug("run %s moved from parent %s to %s", mlflow_id, mine, winner)

    def _drop_parent(self, exp_id: str, parent: str) -> None:
        """Delete a parent that lost to another process's, once no run is under it
        (a run still under it moves at its own end, and the last one deletes it)."""
        if not self.client.search_runs(
                [exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
                max_results=1):
            self.client.delete_run(parent)

    def _create_parent(
        self, sweep_id: str, exp_id: str, sweep: Optional[SweepRecord]
    ) -> str:
        tags = {f"{TAG}kind": SWEEP_KIND, f"{TAG}sweep_id": sweep_id}
        name = f"sweep {sweep_id[:8]}"
        # Without a sweep record the client stamps the start time; parents made at
        # once by several processes are settled at their runs' ends.
        started = None
        if sweep is not None:
            started = _ms(sweep.started_at)
            facts = {"sweep_dir": sweep.dir, "sweeper": sweep.sweeper,
                     "launcher": sweep.launcher,
                     "command": " ".join(sweep.command) if sweep.command else None,
                     "overrides": " ".join(sweep.overrides) or None}
            tags.update({TAG + k: str(v) for k, v in facts.items() if v})
            shown = [o for o in sweep.overrides
                     if not o.lstrip("+~").startswith("tracker")]
            if shown:
                name = "sweep " + " ".join(shown)
        # tags go in with the run, so a search never sees an untagged parent
        run = self.client.create_run(
            exp_id, start_time=started, run_name=shorten(name, MAX_KEY)[0],
            tags={k: shorten(v, MAX_TAG_VALUE)[0] for k, v in tags.items()},
        )
        return run.info.run_id

    def end_sweep(self, sweep_id: str, ended_at: float, status: str = FINISHED) -> None:
        with self._lock:
            parent = self._open_parents.pop(sweep_id, None)
            if parent is None:
                parent = next(
                    (p for (s, _), p in self._parents.items() if s == sweep_id), None)
        if parent is None:
            logger.debug("sweep %s has no parent run in this process", sweep_id)
            return
        if status != FINISHED:
            self.client.set_tag(parent, f"{TAG}status", status)
        self.client.set_terminated(parent, "FINISHED" if status == FINISHED else "FAILED",
                                   end_time=_ms(ended_at))

    def _close_parents_at_exit(self) -> None:
        # Hydra does not call on_multirun_end when a job raised: close the parent
        # here, as failed, instead of leaving it RUNNING forever.
        import time

        with self._lock:
            parents = dict(self._open_parents)
            self._open_parents.clear()
        for sweep_id, parent in parents.items():
            try:
                self.client.set_tag(parent, f"{TAG}status", FAILED)
                self.client.set_terminated(parent, "FAILED", end_time=_ms(time.time()))
            except Exception as exc:  # the process is exiting: say it, do not raise
                logger.warning("could not close the MLflow parent run of sweep %s: %s",
                               sweep_id, exc)

    # -- misc ----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._client = None

    def describe_run(self, run_id: str) -> Optional[str]:
        with self._lock:
            mlflow_id = self._runs.get(run_id)
            exp_id = self._experiment_of.get(run_id)
        if mlflow_id is None:
            return None
        if urllib.parse.urlparse(self.tracking_uri).scheme in ("http", "https"):
            base = self.tracking_uri.rstrip("/")
            return f"{base}/#/experiments/{exp_id}/runs/{mlflow_id}"
        return (f"MLflow run {mlflow_id} in {self.tracking_uri} "
                f"(mlflow ui --backend-store-uri {self.tracking_uri})")


def _artifact_name(name: str) -> str:
    """A relative POSIX path MLflow accepts as an artifact name."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    parts = ["_" if p == ".." else p for p in parts]
    return "/".join(parts) or "artifact"


def _chunks(items: Sequence[Any], limit: int, size: Any) -> Iterable[List[Any]]:
    """Split ``items`` into lists of at most ``limit`` items and about
    ``MAX_BATCH_BYTES`` of text each."""
    chunk: List[Any] = []
    total = 0
    for item in items:
        n = size(item) * 4 + 64  # worst case UTF-8 plus JSON framing
        if chunk and (len(chunk) >= limit or total + n > MAX_BATCH_BYTES):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += n
    if chunk:
        yield chunk
