"""Logs, waits while the test stops the tracking server, then logs more."""
import os
import time

import hydra
from omegaconf import DictConfig

import align_track


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    for step in range(10):
        align_track.log({"loss": 1.0 / (step + 1)}, step=step)
    time.sleep(2.5)  # the writer flushes these to the server
    open(cfg.ready_file, "w").close()
    deadline = time.time() + 120
    while not os.path.exists(cfg.go_file) and time.time() < deadline:
        time.sleep(0.1)
    for step in range(10, 20):
        align_track.log({"loss": 1.0 / (step + 1)}, step=step)
    align_track.set_tags(phase="after-outage")


if __name__ == "__main__":
    main()
