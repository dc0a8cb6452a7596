"""An app whose config carries secrets the way align-system's do."""
import logging

import hydra
from omegaconf import DictConfig

import align_track

log = logging.getLogger(__name__)


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> object:
    assert cfg.llm.api_key.startswith("sk-")
    log.info("calling %s with key %s via %s", cfg.llm.model, cfg.llm.api_key,
             cfg.llm.endpoint_key_source)
    align_track.log({"score": 1.0}, step=0)
    align_track.log_params({"service": {"auth_token": cfg.llm.api_key}})
    align_track.set_tags(endpoint_token=cfg.llm.api_key)
    if cfg.get("names"):  # a secret read from the environment, built into names
        gateway = cfg.llm.endpoint_key_source
        align_track.log({f"m_{gateway}": 1.0}, step=0, context={"via": gateway})
        align_track.set_tags(**{f"tag_{gateway}": "v"})
        align_track.log_params({f"p_{gateway}": 1})
        with open("notes.txt", "w") as fh:
            fh.write("nothing secret\n")
        align_track.log_artifact("notes.txt", name=f"notes_{gateway}.txt")
    if cfg.get("fail"):  # an error message that quotes secrets
        raise RuntimeError(f"auth failed with {cfg.service.password} "
                           f"at {cfg.llm.endpoint_key_source}")
    if cfg.get("give_back"):  # a return value that holds them
        return {"used": cfg.llm.endpoint_key_source, "password": cfg.service.password,
                "summary": f"ok with {cfg.llm.api_key}"}
    return None


if __name__ == "__main__":
    main()
