"""MLflow logging through an explicit client (no global active-run state), so teachers can be
nested runs of the student's run and a resumed run continues its own MLflow run."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

_BAD = re.compile(r"[^0-9A-Za-z_\-. :/]")


def metric_name(name: str) -> str:
    """MLflow-safe metric name: ``val/recall@20/text`` -> ``val/recall_at_20/text``."""
    return _BAD.sub("_", name.replace("@", "_at_"))


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"} with lists as strings."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = str(obj)
    return out


def teacher_run_tag(modality: str) -> str:
    """The tag of a student run that holds the MLflow run id of its ``modality`` teacher."""
    return f"mbrec.teacher.{modality}.run_id"


def client_for(tracking_uri: str) -> Any:
    """An MLflow client for ``tracking_uri`` (imported lazily: MLflow is slow to import). A local SQLite
    store is created whole or not at all, and checked, first (:func:`mbrec.store.ensure_store`)."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    from mlflow.tracking import MlflowClient

    from mbrec.store import ensure_store

    ensure_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (artifacts beside a local database) if missing."""
    exp = client.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(tracking_uri))
    except Exception:  # noqa: BLE001 - another process created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def artifact_location(tracking_uri: str) -> str | None:
    """For a local SQLite store, keep artifacts beside the database (``<db dir>/mlruns``) instead of
    MLflow's default ``./mlruns`` under whatever directory the run was started from."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix):]).resolve().parent / "mlruns").as_uri()


class Tracker:
    """One MLflow run. With ``enabled=False`` every method is a no-op and ``run_id`` is None."""

    def __init__(
        self,
        enabled: bool,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        resume_run_id: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.run_id: str | None = None
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        if not enabled:
            return
        self.client = client_for(tracking_uri)
        self.experiment_id = experiment_id(self.client, experiment, tracking_uri)
        if resume_run_id:
            try:
                run = self.client.get_run(resume_run_id)
                self.client.update_run(resume_run_id, status="RUNNING")
                self.run_id = run.info.run_id
                log.info("MLflow: resuming run %s", self.run_id)
                return
            except Exception:  # noqa: BLE001 - a vanished run is replaced by a new one
                log.warning("MLflow: run %s not found; starting a new run", resume_run_id)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id

    def child(self, run_name: str, tags: Mapping[str, str] | None = None) -> "Tracker":
        """A nested run under this one (shown under it in the MLflow UI)."""
        return Tracker(self.enabled, self.tracking_uri, self.experiment, run_name, tags, parent_run_id=self.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k[:250], str(v)[:6000]) for k, v in params.items() if k[:250] not in existing]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if not self.enabled or not metrics:
            return
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(metric_name(k), float(v), ts, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled and Path(folder).is_dir():
            self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id:
            self.client.set_terminated(self.run_id, status=status)
