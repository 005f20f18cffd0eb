"""Hydra callback grouping a multirun in MLflow: one parent run per sweep, each trial a child.

The parent id reaches trials through the ``MBREC_MLFLOW_PARENT_RUN`` env var (in-process and local
launchers) and a ``mlflow_parent_run_id`` file in the sweep dir (remote/SLURM workers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hydra.experimental.callback import Callback

from mbrec.sweep import PARENT_ENV, PARENT_FILE
from mbrec.utils import atomic_write_text


class MlflowSweepParent(Callback):
    """Create the parent run on multirun start; attach the study's best result and close it at the end."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.client: Any = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.mlflow.enabled:
            return
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(str(config.mlflow.tracking_uri))
        self.client = MlflowClient()
        name = str(config.mlflow.experiment)
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(name)
        sweep_dir = Path(config.hydra.sweep.dir)
        study = config.hydra.sweeper.get("study_name") or sweep_dir.name
        run = self.client.create_run(exp_id, run_name=f"sweep-{study}", tags={
            "mbrec.stage": "sweep", "hydra.sweep.dir": str(sweep_dir), "optuna.study_name": str(study),
            "hydra.overrides": " ".join(config.hydra.overrides.task)})
        self.run_id = run.info.run_id
        os.environ[PARENT_ENV] = self.run_id
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sweep_dir / PARENT_FILE, self.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is None:
            return
        results = Path(config.hydra.sweep.dir) / "optimization_results.yaml"
        if results.is_file():
            import yaml

            self.client.log_artifact(self.run_id, str(results))
            study = yaml.safe_load(results.read_text()) or {}
            if "best_value" in study:
                self.client.log_metric(self.run_id, "best_value", float(study["best_value"]))
            for key, value in (study.get("best_params") or {}).items():
                self.client.log_param(self.run_id, f"best.{key}", value)
        self.client.set_terminated(self.run_id, "FINISHED")
        os.environ.pop(PARENT_ENV, None)
