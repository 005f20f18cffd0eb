"""One MLflow parent run per multirun, each trial a child of it.

The Hydra callback creates the parent run when the multirun starts and writes its id to
``<sweep dir>/mlflow_parent_run_id``; a trial (in-process, local or on a cluster node) reads that file
from its sweep dir. At the end the study's best result is attached to the parent run. The same sweep
started again in the same sweep dir after a kill continues the killed one's parent run (still RUNNING).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mbrec.record import STAGE_SWEEP, Tag
from mbrec.services.store import end_stale_parents
from mbrec.services.tracking import PARENT_FILE, parent_run_id
from mbrec.utils import atomic_write_text

def _resume_killed_parent(client: Any, sweep_dir: Path) -> str | None:
    """The parent run of a killed earlier run of this sweep (still RUNNING), which the re-run's trials
    then join; None if there is none (or it ended)."""
    from mbrec.locks import remove_tmp_of

    remove_tmp_of(sweep_dir / PARENT_FILE)
    run_id = parent_run_id(sweep_dir)
    if run_id is None:
        return None
    try:
        if client.get_run(run_id).info.status != "RUNNING":
            return None
    except Exception:  # noqa: BLE001 - not in this store: start a new parent
        return None
    return run_id


class MlflowSweepParent(Callback):
    """Create the parent run on multirun start; attach the study's best result and close it at the end."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.client: Any = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.mlflow.enabled:
            return
        from mbrec.services.tracking import client_for, experiment_id

        self.client = client_for(str(config.mlflow.tracking_uri))
        exp_id = experiment_id(self.client, str(config.mlflow.experiment), str(config.mlflow.tracking_uri))
        sweep_dir = Path(config.hydra.sweep.dir)
        owner = f"{socket.gethostname()}:{os.getpid()}"
        if (resumed := _resume_killed_parent(self.client, sweep_dir)) is not None:
            self.run_id = resumed
            self.client.set_tag(resumed, Tag.SWEEP_OWNER, owner)
            end_stale_parents(self.client, exp_id, keep=resumed)
            return
        end_stale_parents(self.client, exp_id)  # parents of killed sweeps: KILLED, not RUNNING forever
        study = config.hydra.sweeper.get("study_name") or sweep_dir.name
        run = self.client.create_run(exp_id, run_name=f"sweep-{study}", tags={
            Tag.STAGE: STAGE_SWEEP, Tag.SWEEP_DIR: str(sweep_dir), Tag.STUDY: str(study),
            Tag.SWEEP_OVERRIDES: " ".join(config.hydra.overrides.task), Tag.SWEEP_OWNER: owner})
        self.run_id = run.info.run_id
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
