"""A Hydra app that uses every part of align-track's API (for the MLflow tests)."""
import threading
from pathlib import Path

import hydra

import align_track


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg):
    for step in range(3):
        align_track.log({"loss": 1.0 / (step + 1)}, step=step)
        align_track.log({"acc": 0.5 + step / 10}, step=step, context={"subset": "val"})
    align_track.log({"bad": float("nan")}, step=0)
    align_track.log({"bad": float("inf")}, step=1)
    align_track.log({"bad": float("-inf")}, step=2)
    align_track.log({"odd name?": 1.0}, step=0)
    worker = threading.Thread(
        target=lambda: align_track.log({"from_thread": 7.0}, step=0))
    worker.start()
    worker.join()
    align_track.log_params({"notes": "n" * 7000})
    Path("report.txt").write_text(f"report lr={cfg.lr}\n")
    align_track.log_artifact("report.txt", name="reports/final.txt")
    align_track.set_tags(model="mlp", **{"bad tag=": "v"})
    if cfg.fail or cfg.value == "boom":
        raise RuntimeError(f"boom in job value={cfg.value}")
    return 0.25


if __name__ == "__main__":
    main()
