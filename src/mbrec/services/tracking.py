"""MLflow logging through an explicit client (no global active-run state), so teachers can be
nested runs of the student's run and a resumed run continues its own MLflow run."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from mbrec.record import Tag
from mbrec.services.store import artifact_location, ensure_store
from mbrec.training.hooks import Callback

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


def client_for(tracking_uri: str) -> Any:
    """An MLflow client for ``tracking_uri`` (imported lazily: MLflow is slow to import). A local SQLite
    store is created whole or not at all, and checked, first (:func:`mbrec.services.store.ensure_store`)."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    from mlflow.tracking import MlflowClient


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


#: the file in a sweep dir that holds its MLflow parent run id (written by mbrec.sweep.parent)
PARENT_FILE = "mlflow_parent_run_id"


def parent_run_id(sweep_dir: str | Path | None) -> str | None:
    """The MLflow parent run of the sweep in ``sweep_dir``; None outside a sweep or without one."""
    if sweep_dir is None:
        return None
    path = Path(sweep_dir) / PARENT_FILE
    return (path.read_text().strip() or None) if path.is_file() else None


def sweep_marker(sweep_dir: str | Path) -> str:
    """The marker tag of the runs of the sweep in ``sweep_dir`` (its absolute path, hashed)."""
    from mbrec.utils import stable_hash

    return Tag.sweep_marker("s" + stable_hash(str(Path(sweep_dir).resolve()), 12))


def has_children(client: Any, run_id: str) -> bool:
    """Whether any run (in any state) is a child of MLflow run ``run_id``."""
    exp = client.get_run(run_id).info.experiment_id
    return bool(client.search_runs([exp], f"tags.{Tag.PARENT} = '{run_id}'", max_results=1))


def close_parent(client: Any, run_id: str, sweep_dir: str | Path, status: str) -> bool:
    """End a sweep's parent run with ``status``; a parent that no trial trained under is deleted (and
    its file removed) instead of being left empty. Returns whether it was kept."""
    client.set_terminated(run_id, status)
    if not has_children(client, run_id):
        client.delete_run(run_id)
        (Path(sweep_dir) / PARENT_FILE).unlink(missing_ok=True)
        return False
    return True


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
            all_tags[Tag.PARENT] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id

    def child(self, run_name: str, tags: Mapping[str, str] | None = None, resume_run_id: str | None = None) -> Tracker:
        """A nested run under this one (shown under it in the MLflow UI); ``resume_run_id`` continues a
        killed fit's own nested run."""
        return Tracker(self.enabled, self.tracking_uri, self.experiment, run_name, tags, parent_run_id=self.run_id,
                       resume_run_id=resume_run_id)

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


# ------------------------------------------------------------------------------ what the UI shows
#: the experiment tag the MLflow 3 UI reads to choose its layout (model training vs GenAI)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: an experiment tag ``mlflow.sharedViewState.<key>`` is a saved runs-table view of the MLflow 3 UI
VIEW_PREFIX = "mlflow.sharedViewState."
VIEW_TAG = VIEW_PREFIX + "mbrec"
#: the parameters the ``mbrec`` view shows as columns
VIEW_PARAMS = ("backbone.name", "balancer.name", "optimizer.lr", "train.l2", "seed")
#: the version of the view mbrec saves: an experiment whose saved view is older gets the new one
VIEW_VERSION = 2
#: files of a logged mbrec model (``log_best_model``; read back by ``mbrec.load_model``)
MODEL_WEIGHTS, MODEL_CONFIG, MODEL_INFO = "state_dict.pt", "config.yaml", "model.json"
#: the Hydra overrides left out of a run name (with their sub-keys): the run's tags, experiment and
#: Dataset column say them, or they change nothing computed; the backbone/balancer choice and seed
#: have their own place in the name (their sub-keys, e.g. balancer.lambda_kd, are kept)
_UNNAMED = ("dataset", "hydra", "paths", "mlflow", "device", "threads", "skip_finished", "experiment",
            "hparams_search", "train.resume", "train.eval_batch_size")
_OWN_PLACE = ("backbone", "balancer", "seed")


class MetricsSink(Callback):
    """The trainer callback that logs a fit's metrics to its MLflow run; its checkpointed state is the run
    id, so that a resumed fit continues the same MLflow run (``read_checkpoint_state(path, "mlflow")``)."""

    name = "mlflow"

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.epoch: int | None = None  #: the last epoch whose metrics were logged (for "interrupted at")

    def on_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.epoch = step
        self.tracker.log_metrics(metrics, step)

    def state_dict(self) -> dict[str, Any]:
        return {"mlflow_run_id": self.tracker.run_id}


def _short_number(value: str) -> str:
    """``0.001`` -> ``1e-3``, ``1.0e-05`` -> ``1e-5``, ``0.50`` -> ``0.5``; anything else as given."""
    try:
        number = float(value)
    except ValueError:
        return value
    if number.is_integer() and "e" not in value.lower() and "." not in value:
        return value
    if number != 0 and (abs(number) < 1e-2 or abs(number) >= 1e4):
        mantissa, exponent = f"{number:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{number:.4g}"


def _label(key: str) -> str:
    """A key's short label in a run name: its last component, ``teacher_<last>`` for the CKD teachers'
    own settings (``balancer.teachers.train.l2`` -> ``teacher_l2``)."""
    last = key.rsplit(".", 1)[-1]
    return f"teacher_{last}" if key.startswith("balancer.teachers.") else last


def run_name(backbone: str, balancer: str, seed: int, overrides: Iterable[str] = (),
             balancer_cfg: Mapping[str, Any] | None = None) -> str:
    """What differs between runs, from the job's Hydra overrides: ``vbpr+ckd lr=1e-3 l2=1e-4 s123``.

    Dataset, backbone, balancer and seed have their own place; paths, MLflow and device keys change
    nothing computed. A key is named by its short label (:func:`_label`) unless two kept keys share it
    (then in full), the same in every step of a table. A loss weight of the balancer that is zero
    (``balancer_cfg``: e.g. the pilot's λ_kd = 0, set by its preset, not on the command line) is always
    named: it switches a term off."""
    kept: list[tuple[str, str]] = []
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key in _OWN_PLACE or any(key == k or key.startswith(k + ".") for k in _UNNAMED):
            continue
        kept.append((key, value))
    named = {k for k, _ in kept}
    for key, value in (balancer_cfg or {}).items():
        if str(key).startswith("lambda") and isinstance(value, (int, float)) and value == 0 \
                and f"balancer.{key}" not in named:
            kept.append((f"balancer.{key}", "0"))
    labels = [_label(k) for k, _ in kept]
    parts = [f"{backbone}+{balancer}"]
    for (key, value), label in zip(kept, labels):
        parts.append(f"{label if labels.count(label) == 1 else key}={_short_number(value)}")
    parts.append(f"s{seed}")
    name = " ".join(parts)
    return name if len(name) <= 200 else name[:197] + "..."


def setup_experiment(tracker: Tracker, metric: str = "recall@20", topk: Iterable[int] = (10, 20),
                     modalities: Iterable[str] = ()) -> None:
    """Make the experiment open usefully in the MLflow 3 UI: mark it as model training
    (``mlflow.experimentKind``) and save the runs-table view ``mbrec`` (Dataset, Models, the test and
    best-validation metrics, per modality, and the tuned parameters as columns). Both
    are created once; what someone changed in the UI is kept. ``ui_url`` opens that view. (Runs stay
    in creation order: sorting by a metric would list nested teacher and trial runs flat.)"""
    if not tracker.enabled:
        return
    import json
    import time

    client, exp_id = tracker.client, tracker.experiment_id
    tags = client.get_experiment(exp_id).tags
    if EXPERIMENT_KIND_TAG not in tags:
        client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    if VIEW_TAG in tags and _view_version(tags[VIEW_TAG]) != 1:  # a view of ours before v2 is replaced once
        return
    name, _, k = metric.partition("@")
    ks = sorted({int(x) for x in topk} | ({int(k)} if k.isdigit() else set()))
    # the paper's NDCG is the LATTICE variant (ndcg_lattice@K): shown beside the standard one
    metrics = [f"best/val/{metric_name(metric)}"] + [f"test/{metric_name(f'{m}@{x}')}"
                                                     for m in (name, "ndcg", "ndcg_lattice") for x in ks]
    metrics += [f"test/{metric_name(metric)}/{m}" for m in modalities] + ["best_epoch"]
    state = {
        "selectedColumns": ["attributes.`Dataset`", "attributes.`Models`", *(f"metrics.`{m}`" for m in metrics),
                            *(f"params.`{p}`" for p in VIEW_PARAMS)],
        # a wider run-name column (the UI applies widths to the columns listed in the order)
        "columnOrder": ["attributes.`Run Name`"], "columnWidths": {"attributes.`Run Name`": 380},
    }
    now = int(time.time() * 1000)
    client.set_experiment_tag(exp_id, VIEW_TAG, json.dumps({"name": "mbrec: metrics", "createdAt": now,
                                                            "updatedAt": now, "state": json.dumps(state),
                                                            "mbrecVersion": VIEW_VERSION}))


def _view_version(text: str) -> int | None:
    """The version of a saved view mbrec wrote (1 before versions were recorded); None for a view
    someone else wrote (kept as it is)."""
    import json

    try:
        view = json.loads(text)
    except ValueError:
        return None
    if not isinstance(view, dict) or view.get("name") != "mbrec: metrics":
        return None
    return int(view.get("mbrecVersion", 1))


def ui_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000, extra: Iterable[str] = ()) -> tuple[list[str], dict[str, str]]:
    """The light MLflow UI server for a store: ``mlflow server`` with one worker and MLflow's job runner
    off (the GenAI evaluation jobs mbrec never uses: a job runner and seven huey consumers otherwise),
    as ``(argv, environment)``; ``extra`` arguments are passed on (they win)."""
    import shutil
    import sys

    mlflow = Path(sys.executable).with_name("mlflow")
    argv = [str(mlflow) if mlflow.exists() else (shutil.which("mlflow") or "mlflow"), "server",
            "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port), "--workers", "1", *extra]
    return argv, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def ui_addresses(tracking_uri: str, base: str) -> list[str]:
    """One line per mbrec experiment in the store (most recently updated first): its name and the address
    that opens its runs in the saved view; the bare address when the store has none."""
    from mbrec.services.store import ensure_store

    ensure_store(tracking_uri)
    from mlflow.tracking import MlflowClient

    exps = [e for e in MlflowClient(tracking_uri).search_experiments() if e.name != "Default"]
    exps.sort(key=lambda e: -(e.last_update_time or 0))
    return [f"{e.name}: {ui_url(base, e.experiment_id)}" for e in exps] or [f"(no runs yet) {base}"]


def ui_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI address of an experiment's runs (in the ``mbrec`` view) or of one run, in the
    model-training layout (``base`` e.g. ``http://127.0.0.1:5000``)."""
    if run_id:
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={VIEW_TAG[len(VIEW_PREFIX):]}")


def source_tags() -> dict[str, str]:
    """``mlflow.source.name``/``type`` (the UI's Source column): ``python -m mbrec``, else the program
    (a script, ``ipykernel_launcher.py`` in a notebook)."""
    import sys

    program = Path(sys.argv[0]).as_posix() if sys.argv and sys.argv[0] else ""
    name = "python -m mbrec" if program.endswith("mbrec/__main__.py") else (Path(program).name or "python")
    return {"mlflow.source.name": name, "mlflow.source.type": "LOCAL"}


def dataset_input(dataset: Any) -> Any:
    """The dataset as an MLflow dataset input: name, content fingerprint as digest, where it was read
    from (a local folder, or the synthetic generator and its seed), counts as profile."""
    import json

    from mlflow.entities import Dataset as MlflowDataset
    from mlflow.entities import DatasetInput, InputTag

    layout, _, folder = dataset.source.partition(":")
    if folder and layout in ("mmrec", "lattice"):
        source_type, source = "local", {"uri": Path(folder).resolve().as_uri(), "layout": layout}
    else:
        source_type, source = "code", {"tags": {Tag.GENERATOR: dataset.source or "in memory"}}
    profile = {k: v for k, v in dataset.summary().items() if k not in ("name", "fingerprint")}
    entity = MlflowDataset(name=dataset.name, digest=dataset.fingerprint[:16], source_type=source_type,
                           source=json.dumps(source), profile=json.dumps(profile))
    return DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])


def log_dataset(tracker: Tracker, dataset: Any) -> None:
    """Log ``dataset`` as the run's dataset input (the Dataset column); once per run (resumes too)."""
    if not tracker.enabled:
        return
    run = tracker.client.get_run(tracker.run_id)
    digest = dataset.fingerprint[:16]
    if any(d.dataset.digest == digest for d in (run.inputs.dataset_inputs if run.inputs else [])):
        return
    tracker.client.log_inputs(tracker.run_id, datasets=[dataset_input(dataset)])


def log_best_model(tracker: Tracker, model: Any, config: Mapping[str, Any], dataset: Any, step: int) -> str | None:
    """Log the trained model as an MLflow logged model of this run (the Model column): its weights
    (``state_dict``; the feature matrices are non-persistent buffers, so they are not in it), the
    resolved config and the dataset identity; the run's test/ and best/ metrics are linked to it.
    Returns the model id (None without MLflow, or if logging failed: the run's results stand)."""
    if not tracker.enabled:
        return None
    try:
        return _log_best_model(tracker, model, config, dataset, step)
    except Exception as err:  # noqa: BLE001 - results.json and the metrics are written; only the copy is missing
        log.warning("MLflow: could not log the model of run %s (%s)", tracker.run_id, err)
        return None


def _log_best_model(tracker: Tracker, model: Any, config: Mapping[str, Any], dataset: Any, step: int) -> str:
    import json
    import tempfile
    import time

    import torch
    import yaml
    from mlflow.entities import LoggedModelOutput, Metric

    client = tracker.client
    tags = {Tag.DATASET: dataset.name, Tag.BACKBONE: str(config["backbone"]["name"]),
            Tag.BALANCER: str(config["balancer"]["name"]), Tag.SEED: str(config.get("seed")),
            Tag.DATA_FINGERPRINT: dataset.fingerprint[:16]}
    params = flatten({k: config[k] for k in ("backbone", "balancer", "optimizer") if k in config})
    logged = client.create_logged_model(tracker.experiment_id, name=f"{tags[Tag.BACKBONE]}-{tags[Tag.BALANCER]}",
                                        source_run_id=tracker.run_id, tags=tags, model_type="mbrec",
                                        params={k[:250]: v[:6000] for k, v in params.items()})
    with tempfile.TemporaryDirectory(prefix="mbrec-model-") as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(tmp) / MODEL_WEIGHTS)
        config = {k: v for k, v in config.items() if k != "hydra"}
        (Path(tmp) / MODEL_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        (Path(tmp) / MODEL_INFO).write_text(json.dumps({
            "format": 1, "backbone": tags[Tag.BACKBONE], "run_id": tracker.run_id, "best_epoch": step,
            "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint, "source": dataset.source},
        }, indent=2), encoding="utf-8")
        client.log_model_artifacts(logged.model_id, tmp)
    client.finalize_logged_model(logged.model_id, "READY")
    client.log_outputs(tracker.run_id, [LoggedModelOutput(logged.model_id, step)])
    # the run's final metrics, linked to the model and the dataset (the model page's metrics)
    ts = int(time.time() * 1000)
    metrics = [Metric(k, v, ts, step, model_id=logged.model_id, dataset_name=dataset.name,
                      dataset_digest=dataset.fingerprint[:16])
               for k, v in client.get_run(tracker.run_id).data.metrics.items() if k.startswith(("test/", "best/"))]
    if metrics:
        client.log_batch(tracker.run_id, metrics=metrics)
    return logged.model_id


def logged_model_of(client: Any, run_id: str) -> Any:
    """The logged model a run produced (the last one); a LookupError names the run otherwise."""
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    if outputs:
        return client.get_logged_model(outputs[-1].model_id)
    found = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                        filter_string=f"source_run_id = '{run_id}'")
    if not found:
        raise LookupError(f"MLflow run {run_id} has no logged model (runs before mbrec logged models, "
                          "runs with mlflow.log_model=false and teacher runs have none)")
    return found[-1]


def log_run_log(tracker: Tracker, output_dir: str | Path) -> None:
    """Log the run's log file(s) (the logging FileHandlers writing inside ``output_dir``: Hydra's
    ``<job name>.log``, or ``mbrec.log`` of ``mbrec.train``) as artifacts, flushed first."""
    if not tracker.enabled:
        return
    folder = Path(output_dir).resolve()
    seen: set[Path] = set()
    for logger in (logging.getLogger(), logging.getLogger("mbrec")):
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler):
                continue
            path = Path(handler.baseFilename).resolve()
            if folder in path.parents and path.is_file() and path not in seen:
                handler.flush()
                seen.add(path)
                try:
                    tracker.log_artifact(path)
                except Exception as err:  # noqa: BLE001 - a missing log never fails a finished run
                    log.warning("MLflow: could not log %s (%s)", path, err)
