"""``python -m mbrec [overrides]``: compose conf/ with Hydra and run the pipeline.

A ConfigError or DataError ends the run with its one-line message and exit code 2, a diverged run
(DivergedError) with exit code 3; ``HYDRA_FULL_ERROR=1`` shows the traceback. In a multirun a diverged
trial is recorded as failed and the study goes on."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from mbrec.config import hydra_config_path, register_schemas

register_schemas()  # before Hydra composes: the schemas of the root and of every backbone/balancer


@hydra.main(version_base="1.3", config_path=hydra_config_path(), config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from mbrec.errors import ConfigError, DataError, DivergedError
    from mbrec.experiment import run

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return run(cfg, hydra_cfg.runtime.output_dir, multirun=multirun,
                   sweep_dir=hydra_cfg.sweep.dir if multirun else None, choices=dict(hydra_cfg.runtime.choices))
    except (ConfigError, DataError) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        logging.getLogger("mbrec").error("%s", err)
        sys.exit(2)
    except DivergedError:
        # a study records the trial as failed and goes on (hparams_search: max_failure_rate); a single run
        # ends with the one-line message the pipeline logged
        if multirun or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(3)


if __name__ == "__main__":
    main()
