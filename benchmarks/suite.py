"""The orchestrator: runs every case side by side and gathers the figures."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from benchmarks._util import (ROOT, best, child_env, free_port, run_worker, stats,
                              timed_cmd)

logger = logging.getLogger(__name__)
FORBIDDEN = ("mlflow", "aim", "clearml", "numpy", "torch", "hydra", "omegaconf",
             "pandas", "sqlalchemy")


@dataclasses.dataclass
class Sizes:
    """Every N of a suite run; recorded in the JSON."""

    repeats: int = 5
    burst: int = 20_000  # calls timed at a time: one writer batch
    bursts: int = 25
    log_n: int = 1_000_000  # calls back to back, for the sustained rate
    aim_n: int = 2_000
    clearml_n: int = 500
    mlflow_metric_sqlite: int = 100
    mlflow_metric_server: int = 50
    mlflow_batch: int = 5_000
    ingest_n: int = 1_000_000
    ingest_repeats: int = 3
    memory_n: int = 10_000_000
    memory_repeats: int = 2
    writers: tuple = (1, 2, 4, 8)
    writer_n: int = 50_000
    store_sizes: tuple = (1_000, 10_000, 100_000)
    run_params: int = 50
    run_metrics: int = 10
    run_points: int = 1
    # both MLflow and ours: the 10,000 for MLflow, whose runs take ~17 ms each
    # to create (100,000 would take half an hour)
    mlflow_runs: int = 10_000
    sweep_jobs: int = 20
    sweep_repeats: int = 11  # whole sweeps vary by ±5% on a shared 2-core machine
    config_repeats: int = 2
    config_leaves: tuple = (10, 100, 1_000, 10_000)
    config_jobs: int = 10
    import_repeats: int = 10
    import_peers: bool = True
    backend_n: int = 2_000
    other_backends: bool = True


QUICK = Sizes(
    repeats=3, burst=5_000, bursts=5, log_n=50_000, aim_n=200, clearml_n=50,
    mlflow_metric_sqlite=20, mlflow_metric_server=10, mlflow_batch=1_000,
    ingest_n=50_000, ingest_repeats=2, memory_n=200_000, memory_repeats=2,
    writers=(1, 2, 4), writer_n=5_000, store_sizes=(100, 300, 1_000), run_params=20,
    run_metrics=5, mlflow_runs=20, sweep_jobs=4, sweep_repeats=2,
    config_leaves=(10, 1_000), config_jobs=1, config_repeats=2, import_repeats=3,
    import_peers=False,
    backend_n=200, other_backends=False,
)


class Suite:
    """Runs the cases in order; each records its figures in ``self.results``."""

    def __init__(self, sizes: Sizes, tmp: Path, only: Optional[List[str]] = None,
                 server: bool = True):
        self.sizes = sizes
        self.server = server
        self.tmp = tmp
        self.env = child_env(tmp)
        self.user_env = child_env(tmp, guard=False)  # align-track's own commands
        self.only = only
        self.results: Dict[str, Any] = {}
        self.notes: List[str] = []

    def worker(self, case: str, env: Optional[Dict[str, str]] = None,
               **params: Any) -> Dict[str, Any]:
        params.setdefault("dir", str(self.tmp))
        return run_worker(case, params, self.tmp, env={**self.env, **(env or {})},
                          timeout=3600)

    def run(self) -> Dict[str, Any]:
        # the bytecode a user's first run leaves behind, written before any timing
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "align_track"),
                        str(ROOT / "hydra_plugins")], cwd=str(self.tmp), env=self.user_env,
                       capture_output=True)
        steps: List[Callable[[], None]] = [
            self.imports, self.log_cost, self.peers, self.ingest, self.memory,
            self.concurrency, self.cli_scale, self.mlflow_scale, self.callback,
            self.config_size, self.other_backends,
        ]
        for step in steps:
            name = step.__name__
            if self.only and name not in self.only:
                continue
            t0 = time.perf_counter()
            logger.info("%s ...", name)
            try:
                step()
            except Exception as exc:  # one failing case must not hide the others
                logger.error("%s failed: %s", name, exc)
                self.notes.append(f"{name} failed: {str(exc)[:500]}")
            logger.info("%s done in %.1f s", name, time.perf_counter() - t0)
        return self.results

    # -- cases -------------------------------------------------------------------------

    def imports(self) -> None:
        py = sys.executable
        bare, ours = [], []
        for _ in range(self.sizes.import_repeats):
            bare.append(timed_cmd([py, "-S", "-c", "pass"], self.tmp, self.env))
            ours.append(timed_cmd([py, "-S", "-c", "import align_track"], self.tmp, self.env))
        probe = ("import sys, json, align_track; print(json.dumps(sorted({m.split('.')[0]"
                 " for m in sys.modules})))")
        out = subprocess.run([py, "-c", probe], cwd=str(self.tmp), env=self.env,
                             capture_output=True, text=True, check=True).stdout
        loaded = [m for m in json.loads(out.splitlines()[-1]) if m in FORBIDDEN]
        peers = {}
        for mod in ("omegaconf", "hydra", "mlflow", "aim", "clearml")[
                :5 if self.sizes.import_peers else 0]:
            peers[mod] = stats([timed_cmd([py, "-c", f"import {mod}"], self.tmp, self.env)
                                for _ in range(2)])
        self.results["import"] = {
            "bare_s": stats(bare), "align_track_s": stats(ours),
            "over_bare_s": stats([o - b for o, b in zip(ours, bare)]),
            "heavy_modules_loaded": loaded, "peers_s": peers,
        }

    def log_cost(self) -> None:
        s = self.sizes
        self.results["list_append"] = self.worker("list_append", burst=s.burst,
                                                  bursts=s.bursts)
        self.results["align_track_log"] = self.worker("align_track_log", burst=s.burst,
                                                      bursts=s.bursts, n=s.log_n)

    def peers(self) -> None:
        s = self.sizes
        self.results["aim_track"] = self.worker("aim_track", n=s.aim_n,
                                                repeats=max(2, s.repeats - 2))
        self.results["clearml_report"] = self.worker("clearml_report", n=s.clearml_n,
                                                     repeats=max(2, s.repeats - 2))
        uris = {"sqlite": f"sqlite:///{self.tmp / 'mlflow-peer.db'}"}
        server = self._start_mlflow_server() if self.server else None
        if not self.server:
            self.notes.append("mlflow server rows skipped (--no-server)")
        try:
            if server is not None:
                uris["server"] = server[1]
            self.results["mlflow"] = self.worker(
                "mlflow_peer", uris=uris, repeats=max(2, s.repeats - 2),
                n_metric={"sqlite": s.mlflow_metric_sqlite,
                          "server": s.mlflow_metric_server},
                n_batch=s.mlflow_batch)
        finally:
            if server is not None:
                _stop(server[0])

    def _start_mlflow_server(self) -> Optional[Any]:
        port = free_port()
        log = open(self.tmp / "mlflow-server.log", "w")
        store = self.tmp / "mlflow-server.db"
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
             str(port), "--backend-store-uri", f"sqlite:///{store}",
             "--default-artifact-root", str(self.tmp / "mlflow-artifacts"), "--workers", "1"],
            cwd=str(self.tmp), env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        import urllib.request

        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    return proc, f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.5)
        _stop(proc)
        self.notes.append("mlflow server did not start; see mlflow-server.log: "
                          + (self.tmp / "mlflow-server.log").read_text()[-500:])
        return None

    def ingest(self) -> None:
        s = self.sizes
        rows, thread = [], []
        for r in range(s.ingest_repeats):
            rows.append(self.worker("ingest", n=s.ingest_n, batch=20_000, rep=r))
            # the same with the writer process off: inserts on a thread of the job
            thread.append(self.worker("ingest", env={"ALIGN_TRACK_BULK": "0"},
                                      n=s.ingest_n, batch=20_000, rep=f"t{r}"))
        self.results["ingest"] = {
            "n": s.ingest_n,
            "ours_rate": best([r["ours_rate"] for r in rows]),
            "floor_rate": best([r["floor_rate"] for r in rows]),
            # each run's rate over the floor's measured beside it, in the same process
            "ratio": best([r["ours_rate"] / r["floor_rate"] for r in rows]),
            "thread_rate": best([r["ours_rate"] for r in thread]),
            "thread_ratio": best([r["ours_rate"] / r["floor_rate"] for r in thread]),
            "ours_bytes": stats([r["ours_bytes"] for r in rows]),
            "floor_bytes": stats([r["floor_bytes"] for r in rows]),
        }

    def memory(self) -> None:
        s = self.sizes
        rows = [self.worker("memory", n=s.memory_n) for _ in range(s.memory_repeats)]
        self.results["memory"] = {
            "n": s.memory_n, "growth_bytes": stats([r["growth_bytes"] for r in rows]),
            "seconds": stats([r["seconds"] for r in rows]),
        }

    def concurrency(self) -> None:
        s = self.sizes
        curve = {}
        for k in s.writers:
            rates = []
            for r in range(max(2, s.repeats - 3)):
                db = self.tmp / f"concurrent-{k}-{r}.db"
                start_at = time.time() + 3.0 + 0.5 * k
                rates.append(self._writers(db, k, start_at))
            curve[str(k)] = best(rates)
        self.results["concurrency"] = {"points_per_writer": s.writer_n, "rate": curve,
                                       "with_reader": self._writers_beside_a_reader()}

    def _writers(self, db: Path, k: int, start_at: float) -> float:
        """Start k writer processes together at ``start_at``; their points per second."""
        n = self.sizes.writer_n
        procs = [subprocess.Popen(
            [sys.executable, "-m", "benchmarks.workers", "writer",
             json.dumps({"db": str(db), "n": n, "start_at": start_at})],
            cwd=str(self.tmp), env=self.env, stdout=subprocess.PIPE, text=True)
            for _ in range(k)]
        ends = []
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            line = [x for x in out.splitlines() if x.startswith("@@BENCH@@")]
            if proc.returncode or not line:
                raise RuntimeError(f"writer failed ({proc.returncode})")
            ends.append(json.loads(line[-1][9:])["end"])
        return k * n / (max(ends) - start_at)

    def _writers_beside_a_reader(self) -> Dict[str, Any]:
        """The most writers again, with a list/show/query loop running the whole time."""
        s = self.sizes
        k = max(s.writers)
        rates, calls, failures, errors = [], 0, 0, []
        for r in range(max(2, s.repeats - 3)):
            db = self.tmp / f"concurrent-read-{k}-{r}.db"
            done = self.tmp / f"concurrent-read-{k}-{r}.done"
            start_at = time.time() + 3.0 + 0.5 * k
            reader = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.workers", "reader_loop",
                 json.dumps({"db": str(db), "done": str(done), "stop_at": start_at + 600})],
                cwd=str(self.tmp), env=self.env, stdout=subprocess.PIPE, text=True)
            rate = self._writers(db, k, start_at)
            done.touch()
            out, _ = reader.communicate(timeout=120)
            line = [x for x in out.splitlines() if x.startswith("@@BENCH@@")]
            got = json.loads(line[-1][9:]) if line else {"calls": 0, "failures": -1}
            calls += got["calls"]
            failures += got["failures"]
            errors += got.get("errors", [])
            rates.append(rate)
        return {"writers": k, "rate": best(rates), "reader_calls": calls,
                "reader_failures": failures, "reader_errors": errors[:5]}

    def cli_scale(self) -> None:
        s = self.sizes
        db = self.tmp / "scale.db"
        built, curve = 0, {}
        cli = [sys.executable, "-m", "align_track.cli", "--db", str(db)]
        for size in s.store_sizes:
            res = self.worker("build_store", db=str(db), start=built, stop=size,
                              params=s.run_params, metrics=s.run_metrics, points=s.run_points)
            logger.info("store: %d runs added in %.1f s", size - built, res["seconds"])
            built = size
            inproc = self.worker("cli_inproc", db=str(db), offset=size // 2,
                                 repeats=s.repeats)
            ids = inproc.pop("ids")
            row: Dict[str, Any] = {"inproc": inproc}
            commands = {
                "list": ["list"],
                "list_where": ["list", "--where", "params.lr > 0.01"],
                "show": ["show", ids[0]],
                "compare": ["compare", *ids],
            }
            row["cli"] = {name: stats([timed_cmd(cli + argv, self.tmp, self.user_env)
                                       for _ in range(s.repeats)])
                          for name, argv in commands.items()}
            curve[str(size)] = row
        bare = stats([timed_cmd([sys.executable, "-c", "pass"], self.tmp, self.user_env)
                      for _ in range(s.repeats)])
        self.results["cli"] = {"runs": list(s.store_sizes), "params": s.run_params,
                               "metrics": s.run_metrics, "by_size": curve,
                               "interpreter_s": bare}

    def mlflow_scale(self) -> None:
        s = self.sizes
        self.results["mlflow_scale"] = self.worker(
            "mlflow_scale", uri=f"sqlite:///{self.tmp / 'mlflow-scale.db'}",
            runs=s.mlflow_runs, params=s.run_params, metrics=s.run_metrics,
            points=s.run_points, repeats=s.repeats)
        # align-track on a store of the same number of runs, for a like-for-like ratio
        db = self.tmp / "scale-same-n.db"
        self.worker("build_store", db=str(db), start=0, stop=s.mlflow_runs,
                    params=s.run_params, metrics=s.run_metrics, points=s.run_points)
        inproc = self.worker("cli_inproc", db=str(db), offset=0, repeats=s.repeats)
        inproc.pop("ids")
        self.results["mlflow_scale"]["ours_same_n"] = inproc

    def callback(self) -> None:
        s = self.sizes
        app = _write_app(self.tmp / "sweep-app", leaves=10)
        sweep = ["lr=" + ",".join(f"0.{i + 1:03d}" for i in range(s.sweep_jobs))]
        times: Dict[str, List[float]] = {"plain": [], "group": [], "tracked": []}
        runs = {
            "plain": lambda r: self._sweep(app, sweep, f"plain-{r}"),
            # what Hydra itself spends on any extra config group (composed twice a
            # job by the basic sweeper and launcher), for reference
            "group": lambda r: self._sweep(app, sweep + ["+extra=empty"], f"group-{r}"),
            "tracked": lambda r: self._sweep(app, sweep, f"tracked-{r}", tracked=True),
        }
        order = list(runs)
        for r in range(s.sweep_repeats):
            for kind in order[r % 3:] + order[:r % 3]:  # no kind always runs first
                times[kind].append(runs[kind](r))
        plain, group, tracked = times["plain"], times["group"], times["tracked"]
        self.results["callback"] = {
            "jobs": s.sweep_jobs, "untracked_s": stats(plain), "tracked_s": stats(tracked),
            "empty_group_s": stats(group),
            # round by round: each tracked sweep against the untracked one beside it
            "overhead_fraction": stats([(t - p) / p for t, p in zip(tracked, plain)]),
            "overhead_ms_per_job": stats([(t - p) / s.sweep_jobs * 1e3
                                          for t, p in zip(tracked, plain)]),
            "empty_group_ms_per_job": stats([(g - p) / s.sweep_jobs * 1e3
                                             for g, p in zip(group, plain)]),
        }

    def _sweep(self, app: Path, overrides: List[str], label: str,
               tracked: bool = False) -> float:
        argv = [sys.executable, str(app), "-m", *overrides,
                f"hydra.sweep.dir={self.tmp / 'sweeps' / label}"]
        env = self.user_env
        if tracked:
            # the command a user types; the store's path comes from the environment,
            # as ALIGN_TRACK_DB documents, so both commands carry the same overrides
            # but the tracker option (each override costs Hydra a parse a compose)
            argv.append("+tracker=sqlite")
            env = {**env, "ALIGN_TRACK_DB": str(self.tmp / "sweeps" / (label + ".db"))}
        return timed_cmd(argv, app.parent, env)

    def config_size(self) -> None:
        s = self.sizes
        curve = {}
        sweep = ["lr=" + ",".join(f"0.{i + 1:03d}" for i in range(s.config_jobs))]
        for leaves in s.config_leaves:
            app = _write_app(self.tmp / f"config-{leaves}", leaves=leaves)
            per_job = []
            for r in range(s.config_repeats):
                p = self._sweep(app, sweep, f"c{leaves}-plain-{r}")
                t = self._sweep(app, sweep, f"c{leaves}-tracked-{r}", tracked=True)
                per_job.append((t - p) / s.config_jobs * 1e3)
            curve[str(leaves)] = stats(per_job)
        self.results["config_size"] = {"jobs": s.config_jobs, "overhead_ms_per_job": curve}

    def other_backends(self) -> None:
        s = self.sizes
        if not s.other_backends:
            self.notes.append("tracker=mlflow/aim/clearml rows are measured in the full "
                              "run only")
            return
        settings = {
            "mlflow": {"tracking_uri": f"sqlite:///{self.tmp / 'at-mlflow.db'}"},
            "aim": {"repo": str(self.tmp / "at-aim")},
            "clearml": {"offline": True, "project": "bench"},
        }
        rows = {}
        for backend, extra in settings.items():
            module = ROOT / "align_track" / "backends" / f"{backend}.py"
            if not module.exists():
                rows[backend] = {"skipped": f"align_track/backends/{backend}.py is not "
                                            "built yet"}
                continue
            try:
                rows[backend] = self.worker("at_backend", backend=backend, settings=extra,
                                            n=s.backend_n, repeats=max(2, s.repeats - 2))
            except Exception as exc:
                rows[backend] = {"skipped": f"failed: {str(exc)[-400:]}"}
        self.results["backends"] = rows


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server this suite started: its process group, by pid."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=20)


APP = '''\
import hydra
import align_track


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg):
    for step in range(10):
        align_track.log({"loss": cfg.lr / (step + 1)}, step=step)
    return cfg.lr


if __name__ == "__main__":
    main()
'''


def _write_app(folder: Path, leaves: int) -> Path:
    """A Hydra app whose config has ``leaves`` leaves (in groups of 100)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["lr: 0.1"]
    for g in range(0, max(leaves - 1, 0), 100):
        lines.append(f"group{g // 100}:")
        lines += [f"  k{i}: {i}" for i in range(g, min(g + 100, leaves - 1))]
    (folder / "config.yaml").write_text("\n".join(lines) + "\n")
    (folder / "app.py").write_text(textwrap.dedent(APP))
    (folder / "extra").mkdir(exist_ok=True)
    (folder / "extra" / "empty.yaml").write_text("# an empty config group\n{}\n")
    return folder / "app.py"
