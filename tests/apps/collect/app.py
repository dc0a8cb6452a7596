"""Writes its results to files in the output dir instead of calling a logging API."""
import json
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

CONTENTS = {
    # align-system's scores.json: cumulative records, the last one is final
    "scores.json": [
        {"score": 0.25, "n": 1, "alignment": {"kdma": 0.1}},
        {"score": 0.5, "n": 2, "alignment": {"kdma": 0.2}},
        {"score": 0.75, "n": 3, "alignment": {"kdma": 0.3}, "label": "final"},
    ],
    "timing.json": {"total": 12.5, "per_probe": {"p1": 1.5, "p2": 2.5},
                    "model": "llama", "cached": True, "notes": "x" * 400},
    "steps.json": [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5},
                   {"step": 2, "loss": 0.25, "acc": 0.9}],
    "results/probe.json": {"accuracy": 0.8},
}


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    out = HydraConfig.get().runtime.output_dir
    wanted = set(cfg.files)
    for name, content in CONTENTS.items():
        kind = "nested" if "/" in name else name.split(".")[0]
        if kind in wanted:
            path = os.path.join(out, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                json.dump(content, fh)
    if "bad" in wanted:
        with open(os.path.join(out, "bad.json"), "w") as fh:
            fh.write('{"score": 0.5,')  # cut off mid-write
    if "deep" in wanted:
        with open(os.path.join(out, "deep.json"), "w") as fh:
            # valid JSON, nested deeper than Python's json module reads
            fh.write("[" * 100_000 + "]" * 100_000)
    if "fail" in wanted:
        raise RuntimeError("the app fails after writing its results")


if __name__ == "__main__":
    main()
