"""``python -m mbrec [overrides]``: compose conf/ with Hydra and run the pipeline."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig


def _config_path() -> str:
    """From a clone (editable install) use the repository's top-level ``conf/``; from an installed
    wheel use the copy packaged as ``mbrec.conf``."""
    repo_conf = Path(__file__).resolve().parents[2] / "conf"
    return str(repo_conf) if (repo_conf / "config.yaml").is_file() else "pkg://mbrec.conf"


@hydra.main(version_base="1.3", config_path=_config_path(), config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mbrec.experiment import run

    hydra_cfg = HydraConfig.get()
    return run(cfg, hydra_cfg.runtime.output_dir, multirun=hydra_cfg.mode == RunMode.MULTIRUN)


if __name__ == "__main__":
    main()
