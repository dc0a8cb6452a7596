"""An app whose config carries secrets the way align-system's do."""
import hydra
from omegaconf import DictConfig

import align_track


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    assert cfg.llm.api_key.startswith("sk-")
    align_track.log({"score": 1.0}, step=0)
    align_track.log_params({"service": {"auth_token": cfg.llm.api_key}})
    align_track.set_tags(endpoint_token=cfg.llm.api_key)


if __name__ == "__main__":
    main()
