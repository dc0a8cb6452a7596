"""A sweep job that records what it sees, so tests detect state leaking between jobs.

Each job logs ``job`` = x * 1000 + i without a step (steps must restart at 0 in every
run), sets a tag and logs a metric only when x == 0, and stores what it saw of the
environment and of its run's tags as params.
"""
import json
import math
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import align_track


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> float:
    x = cfg.x
    run = align_track.current_run()
    # Hydra's HydraConfig is one per process: jobs in threads of one process (the
    # test's thread launcher) must not read it after another job has ended, so
    # read it once, first, and prefer what the job's run recorded.
    hc = HydraConfig.get()
    out = Path(run.record.output_dir if run is not None else hc.runtime.output_dir)
    num = run.record.job_num if run is not None else OmegaConf.select(
        hc, "job.num", throw_on_missing=False)
    seen_tags = sorted(run.record.tags) if run is not None else ["<no run>"]
    for i in range(cfg.points):
        align_track.log({"job": x * 1000 + i})
        if cfg.sleep:
            time.sleep(cfg.sleep)
    if x == 0:
        align_track.set_tags(first="yes")
        align_track.log({"first_only": 1.0})
    align_track.log_params({"seen": {"env": os.environ.get("JOB_ENV", ""),
                                     "tags": ",".join(seen_tags),
                                     "run": run.id if run is not None else ""}})
    (out / "env_keys.json").write_text(json.dumps(sorted(os.environ)))
    if x == cfg.fail_at:
        raise ValueError(f"job with x={x} fails on purpose")
    if num == cfg.nan_job:
        return math.nan
    return float(x)


if __name__ == "__main__":
    main()
