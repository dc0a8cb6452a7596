"""An app whose config carries secrets the way align-system's do."""
import logging

import hydra
from omegaconf import DictConfig

import align_track

log = logging.getLogger(__name__)


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    assert cfg.llm.api_key.startswith("sk-")
    log.info("calling %s with key %s via %s", cfg.llm.model, cfg.llm.api_key,
             cfg.llm.endpoint_key_source)
    align_track.log({"score": 1.0}, step=0)
    align_track.log_params({"service": {"auth_token": cfg.llm.api_key}})
    align_track.set_tags(endpoint_token=cfg.llm.api_key)


if __name__ == "__main__":
    main()
