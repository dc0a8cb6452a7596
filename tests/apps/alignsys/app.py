"""Stand-in for align-system's entry point: registers its `ref` resolver inside the
task, reads the config, and writes its results to JSON files in the output dir."""
import json
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    OmegaConf.register_new_resolver(
        "ref", lambda path: OmegaConf.select(cfg, path, default=None), replace=True)
    OmegaConf.to_container(cfg.adm, resolve=True)  # what the real app's instantiate does
    out = HydraConfig.get().runtime.output_dir
    scores = [{"score": 0.1 * i, "n": i} for i in range(1, 4)]
    with open(os.path.join(out, "scores.json"), "w") as fh:
        json.dump(scores, fh)


if __name__ == "__main__":
    main()
