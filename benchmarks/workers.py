"""Benchmark cases that run in a fresh interpreter: ``python -m benchmarks.workers
CASE PARAMS_JSON``. Each prints one result line (see :func:`benchmarks._util.emit`).

Peers are imported inside their case only, so no case pays for another's imports.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from benchmarks._util import checkpoint, dir_bytes, emit, rss_bytes, sqlite_bytes, stats

CASES: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {}
VALUE = 0.5


def case(fn: Callable[[Dict[str, Any]], Dict[str, Any]]) -> Callable[[Dict[str, Any]], Dict[str, Any]]:
    CASES[fn.__name__] = fn
    return fn


def _repeat(block: Callable[[int, int], None], n: int, repeats: int) -> Dict[str, Any]:
    """Seconds per point of ``block(offset, n)`` over ``repeats`` blocks."""
    samples = []
    for r in range(repeats):
        t0 = time.perf_counter()
        block(r * n, n)
        samples.append((time.perf_counter() - t0) / n)
    return stats(samples)


# -- caller-side cost per point ----------------------------------------------------------

def _time_each(jobs: Dict[str, Callable[[], Any]], repeats: int) -> Dict[str, Any]:
    """Run each job ``repeats`` times; the stats of its wall times, by name."""
    out = {}
    for name, job in jobs.items():
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            job()
            samples.append(time.perf_counter() - t0)
        out[name] = stats(samples)
    return out


def _bursts(block: Callable[[int, int], None], n: int, bursts: int,
            between: Callable[[], None]) -> Dict[str, Any]:
    """Seconds per point of ``bursts`` timed calls of ``block(offset, n)``, with
    ``between()`` run untimed after each (the writer catching up)."""
    samples = []
    for r in range(bursts):
        t0 = time.perf_counter()
        block(r * n, n)
        samples.append((time.perf_counter() - t0) / n)
        between()
    return stats(samples)


def _floor_and_bare_log(append: Callable[[Any], None]) -> Any:
    """Two blocks over ``append``: the floor (a (name, step, value, time) tuple
    appended per point) and calls of a bare log(), which does what log() must at
    least (a clock read per call, a tuple per point appended) with none of its
    checks."""
    now = time.time()
    clock = time.time

    def floor(start: int, n: int) -> None:
        for i in range(start, start + n):
            append(("loss", i, VALUE, now))

    def bare(metrics: Any, step: Any = None, *, context: Any = None) -> None:
        now = clock()
        for name in metrics:
            append((name, step, metrics[name], now, ""))

    def call_bare(start: int, n: int) -> None:
        for i in range(start, start + n):
            bare({"loss": VALUE}, step=i)

    return floor, call_bare


@case
def list_append(p: Dict[str, Any]) -> Dict[str, Any]:
    """The floor: append a (name, step, value, time) tuple to a list; the same with
    a clock read per point, as log() reads one per call; a Python function that
    does nothing, called as log() is; and one that does what log() must at least
    (a clock read, a tuple per point appended), with none of its checks."""
    points: List[Any] = []
    append = points.append
    block, call_bare = _floor_and_bare_log(append)
    clock = time.time

    def block_clock(start: int, n: int) -> None:  # each point with its own time
        for i in range(start, start + n):
            append(("loss", i, VALUE, clock()))

    def nothing(metrics: Any, step: Any = None, *, context: Any = None) -> None:
        pass

    def call(start: int, n: int) -> None:
        for i in range(start, start + n):
            nothing({"loss": VALUE}, step=i)

    return {"per_point": _bursts(block, p["burst"], p["bursts"], points.clear),
            "with_clock": _bursts(block_clock, p["burst"], p["bursts"], points.clear),
            "empty_call": _bursts(call, p["burst"], p["bursts"], points.clear),
            "bare_log": _bursts(call_bare, p["burst"], p["bursts"], points.clear)}


@case
def align_track_log(p: Dict[str, Any]) -> Dict[str, Any]:
    """``align_track.log({"loss": x}, step=i)`` inside ``track_run`` (SQLite store).

    ``per_point``: bursts of ``burst`` calls (one writer batch), each followed, untimed,
    by ``run.flush()``: the cost a loop pays while the store keeps up.
    ``sustained``: ``n`` calls back to back, faster than any store writes them:
    back-pressure makes the loop wait for the writer.
    ``ratio``: the same bursts, each against a list-append burst timed just before it.
    """
    import align_track

    db = Path(p["dir"]) / "log_cost.db"
    log = align_track.log
    with align_track.track_run("bench", config={"lr": 0.1}, db=str(db)) as run:
        def block(start: int, n: int) -> None:
            for i in range(start, start + n):
                log({"loss": VALUE}, step=i)

        bursts = _bursts(block, p["burst"], p["bursts"], run.flush)
        paired = _paired_with_floor(block, p["burst"], p["bursts"], run.flush)
        sustained = _repeat(lambda start, n: block(start + 10 ** 9, n), p["n"], 1)
    return {"per_point": bursts, "sustained": sustained, **paired}


def _paired_with_floor(block: Callable[[int, int], None], n: int, bursts: int,
                       between: Callable[[], None]) -> Dict[str, Any]:
    """Rounds of three bursts in one process: the list-append floor, a bare log() (a
    clock read and a tuple per point, no checks) and ``block``, so that a slow moment
    of a shared machine weighs on both sides of a ratio. ``ratio`` holds ``block``'s
    cost ÷ the floor's, round by round; ``bare_ratio`` the bare log()'s."""
    points: List[Any] = []
    floor, call_bare = _floor_and_bare_log(points.append)
    ours, base, bares = [], [], []
    for r in range(bursts):
        t0 = time.perf_counter()
        floor(r * n, n)
        t1 = time.perf_counter()
        call_bare(r * n, n)
        t2 = time.perf_counter()
        block(10 ** 8 + r * n, n)
        t3 = time.perf_counter()
        points.clear()
        between()
        base.append((t1 - t0) / n)
        bares.append((t2 - t1) / n)
        ours.append((t3 - t2) / n)
    return {"paired_per_point": stats(ours), "paired_floor": stats(base),
            "ratio": stats([o / b for o, b in zip(ours, base)]),
            "bare_ratio": stats([o / b for o, b in zip(bares, base)])}


@case
def aim_track(p: Dict[str, Any]) -> Dict[str, Any]:
    """Aim ``Run.track`` per point into a local repo; bytes per point of the repo."""
    from aim import Run

    repo = Path(p["dir"]) / "aim-repo"
    t0 = time.perf_counter()
    run = Run(repo=str(repo), experiment="bench", system_tracking_interval=None,
              log_system_params=False, capture_terminal_logs=False)
    run["hparams"] = {"lr": 0.1}
    opened = time.perf_counter() - t0
    before = dir_bytes(repo)

    def block(start: int, n: int) -> None:
        for i in range(start, start + n):
            run.track(VALUE, name="loss", step=i)

    result = _repeat(block, p["n"], p["repeats"])
    t0 = time.perf_counter()
    run.close()
    closed = time.perf_counter() - t0
    total = p["n"] * p["repeats"]
    return {"per_point": result, "open_s": opened, "close_s": closed,
            "bytes_per_point": (dir_bytes(repo) - before) / total, "points": total}


#: No framework hooks and no repository detection (which also checks for updates
#: online).
CLEARML_NO_HOOKS = {k: False for k in (
    "detect_repository", "matplotlib", "pytorch", "tensorflow", "tensorboard", "xgboost",
    "scikit", "fastai", "lightgbm", "hydra", "joblib", "megengine", "catboost", "gradio",
    "jsonargparse")}


@case
def clearml_report(p: Dict[str, Any]) -> Dict[str, Any]:
    """ClearML ``Logger.report_scalar`` per point, offline mode only."""
    if os.environ.get("CLEARML_OFFLINE_MODE") != "1":
        raise RuntimeError("refusing to run ClearML outside offline mode")
    from clearml import Task

    Task.set_offline(offline_mode=True)
    t0 = time.perf_counter()
    task = Task.init(project_name="bench", task_name="report_scalar",
                     auto_connect_frameworks=CLEARML_NO_HOOKS, auto_connect_arg_parser=False,
                     auto_resource_monitoring=False, auto_connect_streams=False)
    opened = time.perf_counter() - t0
    logger = task.get_logger()

    def block(start: int, n: int) -> None:
        for i in range(start, start + n):
            logger.report_scalar("loss", "loss", value=VALUE, iteration=i)

    result = _repeat(block, p["n"], p["repeats"])
    t0 = time.perf_counter()
    task.close()
    return {"per_point": result, "open_s": opened, "close_s": time.perf_counter() - t0,
            "points": p["n"] * p["repeats"]}


@case
def mlflow_peer(p: Dict[str, Any]) -> Dict[str, Any]:
    """MLflow ``log_metric`` per point and ``log_batch``, into every URI given."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    out: Dict[str, Any] = {}
    for label, uri in p["uris"].items():
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        exp = mlflow.set_experiment(f"bench-{label}")
        t0 = time.perf_counter()
        mlflow.start_run(experiment_id=exp.experiment_id)
        mlflow.log_params({"lr": 0.1})
        mlflow.end_run()
        per_run = time.perf_counter() - t0
        with mlflow.start_run(experiment_id=exp.experiment_id) as run:
            def one(start: int, n: int) -> None:
                for i in range(start, start + n):
                    mlflow.log_metric("loss", VALUE, step=i)

            metric = _repeat(one, p["n_metric"][label], p["repeats"])
        db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
        if db is not None:
            checkpoint(db)
        before = sqlite_bytes(db) if db is not None else 0
        with mlflow.start_run(experiment_id=exp.experiment_id) as run:
            rid = run.info.run_id

            def batch(start: int, n: int) -> None:
                now = int(time.time() * 1000)
                for s in range(start, start + n, 1000):
                    client.log_batch(rid, metrics=[Metric("loss", VALUE, now, i)
                                                   for i in range(s, min(s + 1000, start + n))])

            batched = _repeat(batch, p["n_batch"], p["repeats"])
        row = {"log_metric": metric, "log_batch": batched, "run_s": per_run}
        if db is not None:
            checkpoint(db)
            row["bytes_per_point"] = (sqlite_bytes(db) - before) / (p["n_batch"] * p["repeats"])
        out[label] = row
    return out


# -- end to end ingest, bytes, memory ----------------------------------------------------

@case
def ingest(p: Dict[str, Any]) -> Dict[str, Any]:
    """Points per second until durable: align-track vs raw executemany; bytes each."""
    import sqlite3

    import align_track

    n, d = p["n"], Path(p["dir"])
    db = d / f"ingest-{p['rep']}.db"
    log = align_track.log
    with align_track.track_run("bench", config={"lr": 0.1}, db=str(db)):
        checkpoint(db)
        size0 = sqlite_bytes(db)
        t0 = time.perf_counter()
        for i in range(n):
            log({"loss": VALUE}, step=i)
    ours = time.perf_counter() - t0  # the with block's end flushed and committed
    checkpoint(db)
    ours_bytes = (sqlite_bytes(db) - size0) / n

    raw = d / f"floor-{p['rep']}.db"
    conn = sqlite3.connect(str(raw), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE points (series_id INTEGER NOT NULL, step INTEGER NOT NULL,"
                 " value REAL, wall REAL NOT NULL)")
    conn.execute("CREATE INDEX points_by_series ON points(series_id, step)")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw0 = sqlite_bytes(raw)
    batch = p["batch"]
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        now = time.time()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO points VALUES (?,?,?,?)",
                         [(1, i, VALUE, now) for i in range(s, min(s + batch, n))])
        conn.execute("COMMIT")
    floor = time.perf_counter() - t0
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"ours_rate": n / ours, "floor_rate": n / floor, "ours_bytes": ours_bytes,
            "floor_bytes": (sqlite_bytes(raw) - raw0) / n, "n": n}


@case
def memory(p: Dict[str, Any]) -> Dict[str, Any]:
    """RSS growth while one run logs ``n`` points."""
    import align_track

    n, every = p["n"], 50_000
    log = align_track.log
    with align_track.track_run("bench", db=str(Path(p["dir"]) / "memory.db")) as run:
        base = rss_bytes()
        peak = base
        t0 = time.perf_counter()
        for i in range(n):
            log({"loss": VALUE}, step=i)
            if i % every == 0:
                peak = max(peak, rss_bytes())
                pending = len(run._points)
        logged = time.perf_counter() - t0
    peak = max(peak, rss_bytes())
    return {"growth_bytes": peak - base, "n": n, "seconds": logged, "last_pending": pending}


@case
def writer(p: Dict[str, Any]) -> Dict[str, Any]:
    """One of several concurrent writer processes into the same store."""
    import align_track

    log = align_track.log
    with align_track.track_run("bench-concurrent", db=p["db"]):
        while time.time() < p["start_at"]:
            time.sleep(0.001)
        for i in range(p["n"]):
            log({"loss": VALUE}, step=i)
    return {"end": time.time(), "n": p["n"]}


@case
def reader_loop(p: Dict[str, Any]) -> Dict[str, Any]:
    """`experiments list`, `show` and `query` in a loop beside the writers, in one
    process (so the loop reads, rather than starting interpreters), 0.1 s apart."""
    import contextlib
    import io
    import os

    from align_track import cli

    while not os.path.exists(p["db"]) and time.time() < p["stop_at"]:
        time.sleep(0.01)
    calls = failures = 0
    errors: List[str] = []
    commands = [["list"], ["query", "SELECT count(*) FROM metrics"], ["show", "latest"]]
    while time.time() < p["stop_at"] and not os.path.exists(p["done"]):
        for argv in commands:
            if argv[0] == "show":
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    cli.main(["--db", p["db"], "query", "SELECT id FROM runs LIMIT 1",
                              "--format", "csv"])
                ids = out.getvalue().split()[1:]
                if not ids:
                    continue
                argv = ["show", ids[0]]
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()) as err:
                code = cli.main(["--db", p["db"], *argv])
            calls += 1
            if code != 0 and "no store" not in err.getvalue():
                failures += 1
                errors.append(err.getvalue().strip()[-300:])
            time.sleep(p.get("pause", 0.1))  # a watch-style loop, not a CPU hog
    return {"calls": calls, "failures": failures, "errors": errors[:5]}


# -- a large store for the CLI -------------------------------------------------------------

@case
def build_store(p: Dict[str, Any]) -> Dict[str, Any]:
    """Add runs ``[start, stop)`` to a store through the SQLiteBackend.

    Each run is the backend's own insert of a run record, of its points and of its
    end; 500 runs share one transaction (the backend's public methods commit once
    per call, which would make building 100,000 runs take minutes).
    """
    import random

    from align_track.backends.sqlite import SQLiteBackend

    rng = random.Random(p["start"])
    backend = SQLiteBackend(p["db"])
    backend.open()
    t0 = time.perf_counter()
    for lo in range(p["start"], p["stop"], 500):
        runs = [_fake_run(rng, k, p) for k in range(lo, min(lo + 500, p["stop"]))]
        backend._write(_insert_runs, backend, runs)  # noqa: SLF001 - batching
    backend.close()
    return {"seconds": time.perf_counter() - t0, "runs": p["stop"] - p["start"]}


def _fake_run(rng: Any, k: int, p: Dict[str, Any]) -> Any:
    from align_track.records import RunRecord

    base = 1.7e9
    params: Dict[str, Any] = {
        "lr": 10 ** rng.uniform(-4, -1),
        "optimizer": rng.choice(["adam", "sgd", "adamw", "lion"]),
        "batch_size": rng.choice([16, 32, 64, 128]),
    }
    for j in range(p["params"] - len(params)):
        params[f"model.layer{j}.width"] = rng.randint(1, 1024)
    rid = f"{k:08x}" + os.urandom(12).hex()
    record = RunRecord(id=rid, experiment=f"exp{k % 10}", name=f"run-{k}",
                       started_at=base + k, config=params, params=params)
    points = [(f"metric{m}", s, rng.random(), base + k + s, "")
              for m in range(p["metrics"]) for s in range(p["points"])]
    return record, points


def _insert_runs(conn: Any, backend: Any, runs: List[Any]) -> None:
    for record, points in runs:
        backend._insert_run(conn, record)  # noqa: SLF001
        backend._insert_points(conn, record.id, points)  # noqa: SLF001
        conn.execute("UPDATE runs SET status = 'finished', ended_at = ? WHERE id = ?",
                     (record.started_at + 1, record.id))


#: The same filter for both: MLflow compares params as strings only.
FILTER_EQ = ("optimizer", "adam")


@case
def cli_inproc(p: Dict[str, Any]) -> Dict[str, Any]:
    """In-process timings of what the CLI runs: list, filtered list, show, compare."""
    from align_track import reader, store

    conn = store.connect_readonly(p["db"])
    ids = [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY key LIMIT 10 OFFSET ?",
                                      (p["offset"],))]
    from align_track.where import compile_where

    where_eq, eq_args = compile_where(f"params.{FILTER_EQ[0]} = '{FILTER_EQ[1]}'")
    where_gt, gt_args = compile_where("params.lr > 0.01")
    jobs = {
        "list": lambda: reader.list_runs(conn, limit=50),
        "list_where_eq": lambda: reader.list_runs(conn, limit=50, where_sql=where_eq,
                                                  where_args=eq_args),
        "list_where_gt": lambda: reader.list_runs(conn, limit=50, where_sql=where_gt,
                                                  where_args=gt_args),
        "show": lambda: reader.get_run(conn, ids[0], history=False),
        # as `experiments compare`: the runs, then their metric summaries, one query
        # per table for all ten
        "compare": lambda: (reader.get_runs(conn, ids, history=False),
                            reader.metric_stats_by_run(conn, ids)),
    }
    out: Dict[str, Any] = _time_each(jobs, p["repeats"])
    out["ids"] = ids
    return out


@case
def mlflow_scale(p: Dict[str, Any]) -> Dict[str, Any]:
    """Create runs (50 params, 10 metrics) in MLflow's sqlite store; time search_runs."""
    import random

    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    rng = random.Random(0)
    mlflow.set_tracking_uri(p["uri"])
    client = MlflowClient(p["uri"])
    exp = mlflow.set_experiment("scale").experiment_id
    t0 = time.perf_counter()
    for k in range(p["runs"]):
        run = client.create_run(exp, run_name=f"run-{k}")
        params = [Param("lr", repr(10 ** rng.uniform(-4, -1))),
                  Param("optimizer", rng.choice(["adam", "sgd", "adamw", "lion"])),
                  Param("batch_size", str(rng.choice([16, 32, 64, 128])))]
        params += [Param(f"model.layer{j}.width", str(rng.randint(1, 1024)))
                   for j in range(p["params"] - 3)]
        now = int(time.time() * 1000)
        metrics = [Metric(f"metric{m}", rng.random(), now, s)
                   for m in range(p["metrics"]) for s in range(p["points"])]
        # no set_terminated: a status the filter does not read, and a third
        # transaction per run (10,000 runs take minutes as it is)
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
    per_run = (time.perf_counter() - t0) / p["runs"]
    jobs = {
        "search_eq_page": lambda: mlflow.search_runs(
            [exp], filter_string=f"params.{FILTER_EQ[0]} = '{FILTER_EQ[1]}'",
            max_results=50, order_by=["attributes.start_time DESC"]),
        "search_eq_all": lambda: mlflow.search_runs(
            [exp], filter_string=f"params.{FILTER_EQ[0]} = '{FILTER_EQ[1]}'"),
        "search_page": lambda: mlflow.search_runs([exp], max_results=50),
    }
    return {"per_run_s": per_run, "runs": p["runs"], **_time_each(jobs, p["repeats"])}


# -- align-track's other backends -----------------------------------------------------------

@case
def at_backend(p: Dict[str, Any]) -> Dict[str, Any]:
    """align-track with ``backend=`` mlflow, aim or clearml: the user's loop per point,
    the time until the run's end (everything stored) and the cost of an empty run."""
    import align_track

    settings = p["settings"]
    log = align_track.log
    t0 = time.perf_counter()
    with align_track.track_run("bench-empty", backend=p["backend"], **settings):
        t1 = time.perf_counter()
    empty_close = time.perf_counter() - t1
    empty_run = time.perf_counter() - t0
    loop, total, marginal = [], [], []
    for r in range(p["repeats"]):
        with align_track.track_run(f"bench-{r}", backend=p["backend"], **settings):
            t0 = time.perf_counter()
            for i in range(p["n"]):
                log({"loss": VALUE}, step=i)
            loop.append((time.perf_counter() - t0) / p["n"])
        elapsed = time.perf_counter() - t0
        total.append(elapsed / p["n"])
        # the points' share: what closing an empty run costs is per job, not per point
        marginal.append((elapsed - empty_close) / p["n"])
    return {"loop_per_point": stats(loop), "end_to_end_per_point": stats(total),
            "points_per_point": stats(marginal), "empty_run_s": empty_run,
            "empty_close_s": empty_close}


def main(argv: List[str]) -> int:
    name, params = argv[1], json.loads(argv[2])
    emit(CASES[name](params))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
