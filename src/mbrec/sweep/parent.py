"""One MLflow parent run per sweep, each trial a child of it.

The Hydra callback creates the parent run when the multirun starts and writes its id to
``<sweep dir>/mlflow_parent_run_id``; a trial (in-process, local or on a cluster node) reads that file
from its sweep dir. A sweep's folder is its identity (``mbrec.config.sweep_name``): the same command
run again — after a kill, or to add trials — adopts the parent in that file whatever its state (RUNNING
after a kill, KILLED, FINISHED) and reopens it. At the end every run of the sweep (trained or replayed)
gets the sweep's marker tag (:func:`sweep_marker`, what the printed report command filters on), the
study's best result is attached to the parent, and a parent that has no child (every trial replayed, or
none launched) is deleted rather than left empty. A sweep that stops with an error before any trial of
it trained (e.g. refused: its folder holds another study) leaves the parent as it found it; one that
stops with an error after training ends it FAILED (a killed sweep runs no handler: the next start marks
its parent KILLED).
"""

from __future__ import annotations

import atexit
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mbrec.locks import process_owner
from mbrec.record import STAGE_SWEEP, Tag
from mbrec.services.store import end_stale_parents
from mbrec.services.tracking import PARENT_FILE, close_parent, has_children, parent_run_id, sweep_marker
from mbrec.utils import atomic_write_text

log = logging.getLogger(__name__)


def _children(client: Any, run_id: str) -> int:
    """How many runs (any state) are children of ``run_id``."""
    exp = client.get_run(run_id).info.experiment_id
    return len(client.search_runs([exp], f"tags.{Tag.PARENT} = '{run_id}'", max_results=50000))


def _adopt_parent(client: Any, sweep_dir: Path) -> tuple[str, str] | None:
    """The parent run of an earlier run of this sweep (same folder) and the status it had, reopened as
    RUNNING; None if there is none, or it was deleted or is not in this store."""
    from mbrec.locks import remove_tmp_of

    remove_tmp_of(sweep_dir / PARENT_FILE)
    run_id = parent_run_id(sweep_dir)
    if run_id is None:
        return None
    try:
        run = client.get_run(run_id)
        if run.info.lifecycle_stage != "active":
            return None
        if run.info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
    except Exception:  # noqa: BLE001 - not in this store: start a new parent
        return None
    log.info("sweep %s: continuing MLflow parent run %s", sweep_dir.name, run_id)
    return run_id, run.info.status


def sweep_run_ids(sweep_dir: Path) -> list[str]:
    """The MLflow run ids of the sweep's finished trials (trained or replayed), from their results.json."""
    ids = []
    for path in sorted(sweep_dir.glob("*/results.json")):
        try:
            run_id = json.loads(path.read_text()).get("mlflow_run_id")
        except (OSError, ValueError):
            continue
        if run_id:
            ids.append(str(run_id))
    return ids


class MlflowSweepParent(Callback):
    """Create (or adopt) the parent run on multirun start; mark the sweep's runs, attach the study's best
    result and close it at the end (delete it if no trial trained under it)."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.client: Any = None
        self.before: tuple[str | None, int] = (None, 0)  # the adopted parent's status and children, or (None, 0)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.mlflow.enabled:
            return
        from mbrec.services.tracking import client_for, experiment_id

        self.client = client_for(str(config.mlflow.tracking_uri))
        exp_id = experiment_id(self.client, str(config.mlflow.experiment), str(config.mlflow.tracking_uri))
        sweep_dir = Path(config.hydra.sweep.dir)
        owner = process_owner()
        atexit.register(self.ended_early, sweep_dir)
        if (adopted := _adopt_parent(self.client, sweep_dir)) is not None:
            self.run_id, status = adopted
            self.before = (status, _children(self.client, self.run_id))
            self.client.set_tag(self.run_id, Tag.SWEEP_OWNER, owner)
            end_stale_parents(self.client, exp_id, keep=self.run_id)
            return
        end_stale_parents(self.client, exp_id)  # parents of killed sweeps: KILLED, not RUNNING forever
        study = config.hydra.sweeper.get("study_name") or sweep_dir.name
        run = self.client.create_run(exp_id, run_name=f"sweep {study}", tags={
            Tag.STAGE: STAGE_SWEEP, Tag.SWEEP_DIR: str(sweep_dir), Tag.STUDY: str(study),
            Tag.SWEEP_OVERRIDES: " ".join(config.hydra.overrides.task), Tag.SWEEP_OWNER: owner})
        self.run_id = run.info.run_id
        atomic_write_text(sweep_dir / PARENT_FILE, self.run_id)

    def ended_early(self, sweep_dir: Path) -> None:
        """At exit when the sweep never reached :meth:`on_multirun_end` (it stopped with an error): a
        parent under which this attempt trained nothing goes back to how it was (a new one is deleted);
        otherwise it ends FAILED."""
        if self.run_id is None:
            return
        status, children = self.before
        try:
            if _children(self.client, self.run_id) > children:
                self.client.set_terminated(self.run_id, "FAILED")
            elif status is None:
                close_parent(self.client, self.run_id, sweep_dir, "FAILED")  # no child: deleted
            else:
                self.client.update_run(self.run_id, status=status)
        except Exception as err:  # noqa: BLE001 - at exit: the next start ends a stale parent anyway
            log.warning("could not close MLflow parent run %s (%s)", self.run_id, err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self.ended_early)
        if self.run_id is None:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        marker = sweep_marker(sweep_dir)
        for run_id in sweep_run_ids(sweep_dir):
            try:
                self.client.set_tag(run_id, marker, "true")
            except Exception as err:  # noqa: BLE001 - a run of another store: the report misses only it
                log.warning("could not tag MLflow run %s with %s (%s)", run_id, marker, err)
        if not has_children(self.client, self.run_id):  # nothing trained under it: no empty parent
            close_parent(self.client, self.run_id, sweep_dir, "FINISHED")
            return
        results = sweep_dir / "optimization_results.yaml"
        if results.is_file():
            import yaml

            self.client.log_artifact(self.run_id, str(results))
            study = yaml.safe_load(results.read_text()) or {}
            if "best_value" in study:
                self.client.log_metric(self.run_id, "best_value", float(study["best_value"]))
            for key, value in (study.get("best_params") or {}).items():
                self.client.set_tag(self.run_id, f"best.{key}", str(value))
            if study.get("still_running"):  # another sweep on the study had trials in flight: its best may move
                self.client.set_tag(self.run_id, Tag.SWEEP_STILL_RUNNING, ",".join(map(str, study["still_running"])))
                log.warning("sweep %s: the best is over finished trials; trials %s of another sweep on the same study "
                            "were still running", sweep_dir, study["still_running"])
        self.client.set_terminated(self.run_id, "FINISHED")
