"""``python -m mbrec [overrides]``: compose conf/ with Hydra and run the pipeline.

A ConfigError or DataError ends the run with its one-line message and exit code 2, a diverged run
(DivergedError) with exit code 3; ``HYDRA_FULL_ERROR=1`` shows the traceback. In an Optuna study a
diverged trial is closed as FAILED in MLflow, reported to the study as the worst value, and the study goes on."""

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
        # The pipeline logged the one-line message and closed the MLflow run as FAILED (mbrec.failure=diverged).
        # A study gets the worst value and goes on (the Optuna sweeper aborts on a raised trial, or crashes
        # when the grid's last point fails); any other multirun stops; a single run exits with code 3.
        worst = worst_value(hydra_cfg.sweeper) if multirun else None
        if worst is not None:
            return worst
        if multirun or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(3)


def worst_value(sweeper: DictConfig | None) -> float | None:
    """The worst objective for a study's single ``direction`` (-inf to maximize, +inf to minimize); None
    for a sweeper without one (Hydra's basic sweeper) or with several objectives."""
    direction = sweeper.get("direction") if sweeper is not None else None
    if direction is None or not isinstance(direction, str) and not hasattr(direction, "name"):
        return None
    name = str(getattr(direction, "name", direction)).lower()
    return float("-inf") if name == "maximize" else float("inf") if name == "minimize" else None


if __name__ == "__main__":
    main()
