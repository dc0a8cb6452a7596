"""Config features that break naive trackers: resolvers registered inside the task,
side effects, ???, a 70 KB leaf, keys with spaces, lists of dicts."""
import os

import hydra
from omegaconf import DictConfig, OmegaConf

import align_track

CALLS = []


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    def ref(name: str) -> str:
        return f"resolved-{name}"

    OmegaConf.register_new_resolver("ref", ref, replace=True)
    assert cfg.model.name == "resolved-mistral"
    assert len(cfg.blob) == 70_000
    align_track.log({"score": 1.0}, step=0)


def counter() -> int:
    # A resolver with a side effect: it appends a line each time it runs.
    with open(os.environ["COUNTER_FILE"], "a") as fh:
        fh.write("x\n")
    return 7


OmegaConf.register_new_resolver("counted", counter, replace=True)

if __name__ == "__main__":
    main()
