"""A small Hydra app that knows nothing about align-track except log()."""
import threading

import hydra
from omegaconf import DictConfig

import align_track


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> float:
    for epoch in range(cfg.epochs):
        align_track.log({"loss": cfg.lr / (epoch + 1), "acc": epoch / cfg.epochs}, step=epoch)
    align_track.log({"acc": 0.5}, step=0, context={"subset": "val"})
    if cfg.threads:
        def worker(i: int) -> None:
            for step in range(cfg.points):
                align_track.log({f"thread{i}": float(step)}, step=step)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(cfg.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if cfg.special:
        align_track.log({"nan": float("nan"), "pinf": float("inf"), "ninf": float("-inf")},
                        step=0)
    align_track.set_tags(model="mlp")
    if cfg.fail:
        raise ValueError(f"planned failure with lr={cfg.lr}")
    return cfg.lr * 10


if __name__ == "__main__":
    main()
