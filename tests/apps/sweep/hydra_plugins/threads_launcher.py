"""A test launcher that runs a sweep's jobs in threads of one process.

hydra-joblib-launcher turns ``backend=threading`` into loky processes, so this is the
way to run Hydra jobs concurrently in one process and check that each thread's
``align_track.log()`` reaches its own job's run. Hydra's job globals (HydraConfig,
logging) are process-wide: the task must not rely on them.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import open_dict


@dataclass
class ThreadsLauncherConf:
    _target_: str = "hydra_plugins.threads_launcher.ThreadsLauncher"
    n_threads: int = 4


ConfigStore.instance().store(group="hydra/launcher", name="threads",
                             node=ThreadsLauncherConf, provider="align-track-tests")


class ThreadsLauncher(Launcher):
    def __init__(self, n_threads: int = 4) -> None:
        self.n_threads = n_threads
        self.config: Any = None
        self.hydra_context: Any = None
        self.task_function: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs: List[Any] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            cfg = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = f"thread_job_{idx}"
                cfg.hydra.job.num = idx
            configs.append(cfg)

        def one(cfg: Any) -> JobReturn:
            return run_job(hydra_context=self.hydra_context,
                           task_function=self.task_function, config=cfg,
                           job_dir_key="hydra.sweep.dir",
                           job_subdir_key="hydra.sweep.subdir", configure_logging=False)

        with ThreadPoolExecutor(self.n_threads) as pool:
            return list(pool.map(one, configs))
