"""The whole pipeline of one run, top to bottom:

seed + device -> Dataset -> backbone + balancer -> balancer.prepare (CKD: teachers) -> Trainer.fit
(early stopping on validation) -> test at the best epoch -> results.json + MLflow -> objective.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from mbrec import locks, pruning
from mbrec.backbones import Backbone, build_backbone, graph
from mbrec.balancers import Balancer, RunContext, build_balancer
from mbrec.config import check_config
from mbrec.data import Dataset, load_dataset
from mbrec.defaults import semantic
from mbrec.errors import DivergedError, Interrupted, one_of
from mbrec.record import STAGE_STUDENT, Results, Tag, probe_epochs, teacher_epochs
from mbrec.runtime import apply_threads, feature_values, hydra_parallelism, parse_threads
from mbrec.services import finished, presets
from mbrec.services.fitting import FitService, make_optimizer, summarise
from mbrec.services.store import end_stale_runs
from mbrec.services.tracking import (
    MetricsSink,
    Tracker,
    flatten,
    log_best_model,
    log_dataset,
    log_run_log,
    metric_name,
    parent_run_id,
    run_name,
    setup_experiment,
    source_tags,
)
from mbrec.training.hooks import Callback
from mbrec.training.metrics import METRIC_NAMES
from mbrec.training.settings import TrainSettings, check_topk
from mbrec.training.trainer import FitResult, Trainer, read_checkpoint_state
from mbrec.utils import atomic_write_json, atomic_write_text, git_info, resolve_device, seed_everything, stable_hash

log = logging.getLogger(__name__)

#: beside results.json when the reader renumbered sparse user ids: new id -> the id in the data files
USER_IDS_FILE = "user_ids.tsv"


def run_key(resolved: dict[str, Any], dataset: Dataset) -> str:
    """Identity of a run's computation: the resolved config minus the keys that do not change it
    (``mbrec.defaults.NON_SEMANTIC_KEYS``) plus the data content."""
    return stable_hash({"config": semantic(resolved), "data": dataset.fingerprint})


def format_table(metrics: dict[str, float], topk: Iterable[int], title: str) -> str:
    """A readable table: one row per metric (and per-modality recall), one column per K."""
    ks = sorted(topk)
    names = [n for n in METRIC_NAMES if n != "hit"]
    suffixes = sorted({k.split("/", 1)[1] for k in metrics if "/" in k})
    rows = [(n, n) for n in names] + [(f"recall [{m} only]", f"recall/{m}") for m in suffixes]
    width = max(len(label) for label, _ in rows) + 2
    lines = [title, " " * width + "".join(f"{'@' + str(k):>10}" for k in ks)]
    for label, key in rows:
        parts = key.split("/", 1)
        vals = [metrics.get(f"{parts[0]}@{k}" + (f"/{parts[1]}" if len(parts) > 1 else "")) for k in ks]
        lines.append(f"{label:<{width}}" + "".join(f"{v:>10.4f}" if v is not None else f"{'-':>10}" for v in vals))
    return "\n".join(lines)


class _Pruning(Callback):
    """A sweep's pruning hook (:func:`mbrec.pruning.report`): may stop the fit after a validation."""

    name = "pruning"

    def on_validation(self, value: float, epochs_trained: int) -> None:
        pruning.report(value, epochs_trained)


class Pipeline:
    """Holds what every stage of a run shares; :meth:`run` executes the stages in order."""

    def __init__(self, cfg: DictConfig, output_dir: str | Path, multirun: bool = False,
                 sweep_dir: str | Path | None = None, choices: dict[str, Any] | None = None,
                 overrides: Sequence[str] = ()) -> None:
        check_config(cfg)  # before any data is loaded
        parse_threads(cfg.get("threads", "auto"))  # a bad value fails now; applied (one log line) with the data
        self.threads: int | None = None
        self.cfg = cfg
        mode = str(cfg.get("skip_finished", "auto")).lower()
        self.skip_finished = multirun if one_of("skip_finished", mode, ("auto", "true", "false")) == "auto" else mode == "true"
        self.output_dir = Path(output_dir)
        self.sweep_dir = sweep_dir
        self.choices = dict(choices or {})
        presets.check_tuned(self.choices, str(cfg.dataset.name), str(cfg.backbone.name), str(cfg.balancer.name))
        self.overrides = tuple(overrides)  # the job's Hydra task overrides: they name the MLflow run
        self.resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        self.seed = int(cfg.seed)
        self.device = resolve_device(str(cfg.device))
        self.settings = TrainSettings.from_config(cfg.train)
        self.cache_dir = Path(cfg.paths.cache_dir)
        self.code = git_info()

    # ------------------------------------------------------------------------------------ stages
    def run(self) -> float:
        """Data -> (replay if finished) -> tracker -> model, optimizer, balancer (teachers) -> training
        -> test -> results.json and MLflow. Returns the best validation value of ``train.metric``."""
        seed_everything(self.seed)
        graph.use_disk_cache(self.cache_dir)  # kNN item graphs: built once per data and kept beside the teachers
        dataset = self.load_data()
        key = run_key(self.resolved, dataset)
        locks.remove_stale_tmp(self.cache_dir)
        desc = f"run {key[:12]} ({self.cfg.backbone.name}+{self.cfg.balancer.name}, seed {self.seed})"
        with locks.hold(self.cache_dir, "run", key, desc):  # one process per run key (docs/safety.md)
            locks.remove_tmp_of(self.output_dir / "results.json")
            return self.run_locked(dataset, key)

    def run_locked(self, dataset: Dataset, key: str) -> float:
        """The stages after the data, holding the run key's lock."""
        checkpoint = self.cache_dir / "checkpoints" / f"{key}.pt" if self.settings.resume else None
        if self.skip_finished and (done := self.replay_finished(key)) is not None:
            (self.cache_dir / "checkpoints" / f"{key}.pt").unlink(missing_ok=True)  # left by a kill after finishing
            return done
        tracker = self.open_tracker(dataset, key, checkpoint)
        status, sink, desc = "FAILED", None, f"{self.cfg.backbone.name}+{self.cfg.balancer.name}"
        balancer: Balancer | None = None
        try:
            tracker.log_params(flatten({k: v for k, v in self.resolved.items() if k != "hydra"}))
            log_dataset(tracker, dataset)
            model, optimizer, balancer = self.build(dataset, tracker, key)
            trainer = self.trainer(dataset, desc, checkpoint)
            sink = MetricsSink(tracker)
            if (replacement := balancer.replacement_model()) is not None:  # nothing to train (teacher ensemble)
                model = replacement
                fit = trainer.evaluate_only(model, callbacks=[sink])
            else:
                fit = trainer.fit(model, optimizer, balancer, callbacks=[sink, _Pruning()])
            results = self.test(trainer, model, fit, dataset, balancer, tracker)
            logged = _logged(tracker)  # a resumed attempt killed after recording: nothing is logged twice
            self.record(results, tracker, fit, dataset, logged)
            if self.cfg.mlflow.get("log_model", True) and Tag.MODEL_LOGGED not in logged:
                log_best_model(tracker, model, self.resolved, dataset, max(fit.best_epoch, 0))
                tracker.set_tags({Tag.MODEL_LOGGED: "true"})
            status = "FINISHED"
        except DivergedError as err:
            log.error("%s", err)
            tracker.set_tags({Tag.FAILURE: "diverged", Tag.FAILURE_MESSAGE: str(err)[:4000]})
            if checkpoint is not None:
                checkpoint.unlink(missing_ok=True)  # a re-run diverges again: nothing to resume
            raise
        except KeyboardInterrupt as stop:  # Ctrl-C: KILLED; the checkpoint resumes it
            status = "KILLED"
            if isinstance(stop, Interrupted):
                raise
            raise Interrupted(desc, None if sink is None else 0 if sink.epoch is None else sink.epoch + 1) from None
        except pruning.TrialPruned as pruned:  # the sweep's pruner stopped this trial: final, not failed
            status = "KILLED"
            tracker.set_tags({Tag.PRUNED: "true", Tag.PRUNED_REASON: str(pruned)})
            if checkpoint is not None:  # a pruned run is final; its checkpoint would resume a KILLED run
                checkpoint.unlink(missing_ok=True)
            log.info("%s", pruned)
            raise
        finally:
            log_run_log(tracker, self.output_dir)
            tracker.end(status)
            pruning.record_cost(epochs_spent(sink, balancer))
        # last: a run killed before this point is resumed (or re-run), never replayed half-recorded
        finished.record(self.cache_dir, key, results.to_json())
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
        return fit.best_value

    def load_data(self) -> Dataset:
        t0 = time.perf_counter()
        dataset = load_dataset(self.cfg.dataset, self.cfg.paths.data_dir)
        log.info("data %s loaded in %.1fs: %s", dataset.name, time.perf_counter() - t0, dataset.summary())
        check_topk(self.settings, dataset.n_items)
        # `threads: auto` knows the problem's size only now (a small one runs on one thread)
        self.threads = apply_threads(self.cfg.get("threads", "auto"), *hydra_parallelism(),
                                     feature_values=feature_values(dataset))
        return dataset

    def replay_finished(self, key: str) -> float | None:
        """The stored objective of an identical finished run (and its MLflow run joins this preset)."""
        done = finished.replay(self.cache_dir, key, self.output_dir)
        if done is not None:
            presets.join_preset(finished.lookup(self.cache_dir, key) or {}, self.cfg.mlflow)
        return done

    def open_tracker(self, dataset: Dataset, key: str, checkpoint: Path | None) -> Tracker:
        """The run's MLflow run: resumed from the checkpoint's, else new (under the sweep's parent)."""
        cfg, code = self.cfg, self.code
        tags = {
            Tag.DATASET: dataset.name, Tag.BACKBONE: cfg.backbone.name, Tag.BALANCER: cfg.balancer.name,
            Tag.SEED: self.seed, Tag.STAGE: STAGE_STUDENT, Tag.RUN_KEY: key, Tag.DEVICE: str(self.device),
            Tag.SCALE: self.choices.get("scale") or "default",
            Tag.GIT_COMMIT: code["commit"], Tag.GIT_DIRTY: str(code["dirty"]).lower() if code["dirty"] is not None else "", **source_tags(),
            Tag.DATA_FINGERPRINT: dataset.fingerprint[:16], Tag.OUTPUT_DIR: str(self.output_dir),
            Tag.DATA_USERS: dataset.n_users, Tag.DATA_ITEMS: dataset.n_items,
            Tag.DATA_INTERACTIONS: sum(int(dataset.split(s).nnz) for s in ("train", "valid", "test")),
        }
        tags.update({k: str(v) for k, v in (cfg.mlflow.get("tags") or {}).items()})
        tags.update(presets.preset_tags(dict(cfg.mlflow.get("tags") or {})))
        tags[Tag.CACHE_DIR] = str(self.cache_dir.resolve())
        resume_id = read_checkpoint_state(checkpoint, MetricsSink.name).get("mlflow_run_id") if checkpoint else None
        tracker = Tracker(bool(cfg.mlflow.enabled), str(cfg.mlflow.tracking_uri), str(cfg.mlflow.experiment),
                          run_name(cfg.backbone.name, cfg.balancer.name, self.seed, self.overrides, cfg.balancer),
                          {k: str(v) for k, v in tags.items()},
                          resume_run_id=resume_id, parent_run_id=parent_run_id(self.sweep_dir))
        setup_experiment(tracker, self.settings.metric, self.settings.topk, dataset.modalities)
        if tracker.enabled:  # we hold the run key's lock: RUNNING runs of this key are from killed attempts
            end_stale_runs(tracker.client, tracker.experiment_id, Tag.RUN_KEY, key, tracker.run_id, tags[Tag.CACHE_DIR])
        return tracker

    def trainer(self, dataset: Dataset, desc: str, checkpoint: Path | None = None) -> Trainer:
        """The student's trainer: the run's settings, device and seed."""
        return Trainer(dataset, self.settings, self.device, self.seed, checkpoint=checkpoint, desc=desc)

    def build(self, dataset: Dataset, tracker: Tracker, key: str = "") -> tuple[Backbone, torch.optim.Optimizer, Balancer]:
        """The student, its optimizer and the balancer, prepared (CKD: teachers trained or loaded)."""
        model = build_backbone(self.cfg.backbone, dataset).to(self.device)
        optimizer = make_optimizer(self.cfg.optimizer, model)
        balancer = build_balancer(self.cfg.balancer)
        balancer.prepare(self.context(dataset, tracker, key), model)
        seed_everything(self.seed)
        return model, optimizer, balancer

    def context(self, dataset: Dataset, tracker: Tracker, key: str = "") -> RunContext:
        """What the balancer may use: the run's data, settings and configs, its MLflow run, and the fit
        service (nested fits are children of this run; their keys derive from the run key)."""
        configs = {k: self.resolved[k] for k in ("backbone", "train", "optimizer")}
        fit = FitService(dataset, self.device, self.seed, self.settings, configs, tracker,
                         str(self.cache_dir.resolve()), self.cfg.balancer.name, run_key=key)
        return RunContext(dataset=dataset, device=self.device, seed=self.seed, cache_dir=str(self.cache_dir),
                          settings=self.settings, configs=configs, fit=fit, tracker=tracker)

    def test(self, trainer: Trainer, model: Backbone, fit: FitResult, dataset: Dataset, balancer: Balancer,
             tracker: Tracker) -> Results:
        """Test metrics at the best validation epoch, and everything results.json holds."""
        t0 = time.perf_counter()
        test = trainer.evaluator.evaluate(model, "test")
        return Results(
            config=self.resolved, dataset=dataset.summary(), device=str(self.device), threads=self.threads,
            code=self.code, **summarise(fit), metric=self.settings.metric, best_valid_value=fit.best_value,
            test=test, test_seconds=time.perf_counter() - t0, balancer=balancer.results(),
            mlflow_run_id=tracker.run_id, history=fit.history)

    def record(self, results: Results, tracker: Tracker, fit: FitResult, dataset: Dataset,
               logged: set[str] | frozenset[str] = frozenset()) -> None:
        """results.json, MLflow metrics and artifacts, the printed table (the finished-run index is
        written by :meth:`run_locked` after the MLflow run is closed). ``logged``: metric names the MLflow
        run already has (a resumed attempt killed after recording): not logged again."""
        cfg, test = self.cfg, results.test
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.output_dir / "results.json", results.to_json())

        def log_once(metrics: dict[str, float], step: int = 0) -> None:
            tracker.log_metrics({k: v for k, v in metrics.items() if metric_name(k) not in logged}, step)

        step = max(fit.best_epoch, 0)  # -1: a model not trained in this run (Trainer.evaluate_only)
        log_once({f"test/{k}": v for k, v in test.items()}, step)
        log_once({f"best/val/{k}": v for k, v in fit.best_valid.items()}, step)
        log_once({"best_epoch": fit.best_epoch, "seconds_per_epoch": results.seconds_per_epoch or 0.0,
                  "seconds_per_eval": results.seconds_per_eval or 0.0})
        tracker.log_artifact(self.output_dir / "results.json")
        tracker.set_tags({Tag.MAX_EPOCHS_HIT: str(results.max_epochs_hit).lower()})
        if results.max_epochs_hit:
            log.warning("stopped at train.max_epochs=%d before early stopping: raise train.max_epochs",
                        self.settings.max_epochs)
        if (user_ids := dataset.meta.get("user_ids")) is not None:  # sparse ids the reader renumbered
            mapping = self.output_dir / USER_IDS_FILE
            atomic_write_text(mapping, "user\toriginal_user_id\n" + "".join(f"{u}\t{o}\n" for u, o in enumerate(user_ids)))
            tracker.log_artifact(mapping)
            log.info("user ids were renumbered (%d changed): the mapping is %s",
                     int(dataset.meta.get("accepted", {}).get("user_ids_renumbered", 0)), mapping)
        tracker.log_artifacts(self.output_dir / ".hydra", "hydra")
        print(format_table(test, self.settings.topk,
                           f"\nTest metrics — {dataset.name} / {cfg.backbone.name} / balancer={cfg.balancer.name}, "
                           f"seed {self.seed}, best epoch {fit.best_epoch} "
                           f"(valid {self.settings.metric} = {fit.best_value:.4f})"))
        print(f"results: {self.output_dir / 'results.json'}"
              + (f"   MLflow run: {tracker.run_id} in {tracker.tracking_uri}" if tracker.run_id else ""))


def epochs_spent(sink: MetricsSink | None, balancer: Balancer | None) -> int:
    """Epochs this attempt trained, however it ended: the student's (as far as its metrics were logged)
    plus its balancer's teachers and G-Blend probes (a sweep's cost, ``hydra.sweeper.max_cost``)."""
    student = 0 if sink is None or sink.epoch is None else sink.epoch + 1
    try:
        info = balancer.results() if balancer is not None else {}
    except Exception:  # noqa: BLE001 - a balancer stopped before it had anything to report
        info = {}
    return student + teacher_epochs(info) + probe_epochs(info)


def _logged(tracker: Tracker) -> set[str]:
    """The final metric names and the model tag an MLflow run already has (empty for a new run)."""
    if not tracker.enabled or not tracker.run_id:
        return set()
    data = tracker.client.get_run(tracker.run_id).data
    final = {k for k in data.metrics if k.startswith(("test/", "best/val/")) or k in ("best_epoch", "seconds_per_epoch",
                                                                                       "seconds_per_eval")}
    return final | ({Tag.MODEL_LOGGED} if data.tags.get(Tag.MODEL_LOGGED) == "true" else set())


def run(cfg: DictConfig, output_dir: str | Path, multirun: bool = False, sweep_dir: str | Path | None = None,
        choices: dict[str, Any] | None = None, overrides: Sequence[str] = ()) -> float:
    """Run one configuration; return the best validation value of ``train.metric`` (the sweep objective).
    ``multirun`` (Hydra ``-m``) turns on ``skip_finished=auto``: a trial that already finished is replayed."""
    return Pipeline(cfg, output_dir, multirun, sweep_dir, choices, overrides).run()
