"""Hydra sweeper ``mbrec_optuna``: Optuna studies that persist, prune and run trials in parallel.

The work is in ``_impl`` (imported on use, so Hydra's plugin scan stays fast).
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class MbrecOptunaSweeper(Sweeper):
    """See ``config.MbrecOptunaSweeperConf`` for the settings and docs/sweeps.md for their use."""

    def __init__(self, **settings: Any) -> None:
        from ._impl import SweeperImpl

        self.impl = SweeperImpl(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.impl.sweep(arguments)
