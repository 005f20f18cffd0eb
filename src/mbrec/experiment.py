"""The whole pipeline of one run, top to bottom:

seed + device -> Dataset -> backbone + balancer -> balancer.prepare (CKD: teachers) -> Trainer.fit
(early stopping on validation) -> test at the best epoch -> results.json + MLflow -> objective.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mbrec.backbones import Backbone, build_backbone
from mbrec.balancers import Balancer, RunContext, build_balancer
from mbrec.data import Dataset, load_dataset
from mbrec import pruning, sweep
from mbrec.tracking import Tracker, flatten
from mbrec.training.trainer import FitResult, Trainer, TrainSettings, read_checkpoint_extra
from mbrec.utils import atomic_write_json, git_info, resolve_device, seed_everything, stable_hash

log = logging.getLogger(__name__)

#: config keys that do not change what a run computes (left out of the resume key)
NON_SEMANTIC_KEYS = ("paths", "mlflow", "hydra", "device", "skip_finished")


def run_key(cfg: dict[str, Any], dataset: Dataset) -> str:
    """Identity of a run's computation: resolved config (minus paths/logging/device) + data content."""
    semantic = {k: v for k, v in cfg.items() if k not in NON_SEMANTIC_KEYS}
    return stable_hash({"config": semantic, "data": dataset.fingerprint})


def make_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``optimizer`` group: a ``_target_`` optimizer class with ``_partial_: true``."""
    return instantiate(cfg)(params=[p for p in model.parameters() if p.requires_grad])


def summarise(fit: FitResult) -> dict[str, Any]:
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "best_epoch": fit.best_epoch,
        "best_valid": fit.best_valid,
        "epochs_run": len(fit.epoch_seconds),
        "stopped_early": fit.stopped_early,
        "seconds_per_epoch": mean(fit.epoch_seconds),
        "seconds_per_eval": mean(fit.eval_seconds),
    }


def format_table(metrics: dict[str, float], topk: Iterable[int], title: str) -> str:
    """A readable table: one row per metric (and per-modality recall), one column per K."""
    ks = sorted(topk)
    names = ["recall", "ndcg", "precision", "ndcg_lattice"]
    suffixes = sorted({k.split("/", 1)[1] for k in metrics if "/" in k})
    rows = [(n, n) for n in names] + [(f"recall [{m} only]", f"recall/{m}") for m in suffixes]
    width = max(len(label) for label, _ in rows) + 2
    lines = [title, " " * width + "".join(f"{'@' + str(k):>10}" for k in ks)]
    for label, key in rows:
        parts = key.split("/", 1)
        vals = [metrics.get(f"{parts[0]}@{k}" + (f"/{parts[1]}" if len(parts) > 1 else "")) for k in ks]
        lines.append(f"{label:<{width}}" + "".join(f"{v:>10.4f}" if v is not None else f"{'-':>10}" for v in vals))
    return "\n".join(lines)


class Pipeline:
    """Holds what every stage of a run shares; :meth:`run` executes the stages."""

    def __init__(self, cfg: DictConfig, output_dir: str | Path, multirun: bool = False) -> None:
        self.cfg = cfg
        mode = str(cfg.get("skip_finished", "auto")).lower()
        if mode not in {"auto", "true", "false"}:
            raise ValueError(f"skip_finished={mode!r}: use auto (only under -m), true or false")
        self.skip_finished = multirun if mode == "auto" else mode == "true"
        self.output_dir = Path(output_dir)
        self.resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        self.seed = int(cfg.seed)
        self.device = resolve_device(str(cfg.device))
        self.settings = TrainSettings.from_config(cfg.train)
        self.cache_dir = Path(cfg.paths.cache_dir)

    def make_trainer(self, dataset: Dataset, tracker: Tracker, desc: str, checkpoint: Path | None = None,
                     settings: TrainSettings | None = None) -> Trainer:
        return Trainer(dataset, settings or self.settings, self.device, self.seed,
                       log_metrics=tracker.log_metrics, checkpoint=checkpoint, desc=desc)

    def fit_backbone(self, dataset: Dataset, tracker: Tracker, ablate: Iterable[str], tag: str,
                     backbone_cfg: Any = None, settings: TrainSettings | None = None,
                     optimizer_cfg: Any = None, seed: int | None = None) -> tuple[Backbone, dict[str, Any]]:
        """Train a fresh backbone with ``ablate`` fixed (a uni-modal teacher) through the one trainer,
        as a nested MLflow run; return the best model and its validation/test metrics."""
        ablate = frozenset(ablate)
        seed_everything(self.seed if seed is None else seed)
        child = tracker.child(tag, {"mbrec.stage": tag, "mbrec.ablate": ",".join(sorted(ablate))})
        model = build_backbone(backbone_cfg or self.cfg.backbone, dataset).to(self.device)
        optimizer = make_optimizer(optimizer_cfg or self.cfg.optimizer, model)
        trainer = self.make_trainer(dataset, child, tag, settings=settings)
        fit = trainer.fit(model, optimizer, build_balancer({"name": "none"}), ablate=ablate)
        ablations = {"": ablate}
        test = trainer.evaluator.evaluate(model, "test", ablations)
        child.log_metrics({f"test/{k}": v for k, v in test.items()}, fit.best_epoch)
        child.end()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model, {**summarise(fit), "test": test, "mlflow_run_id": child.run_id}

    def run(self) -> float:
        cfg = self.cfg
        seed_everything(self.seed)
        t_data = time.perf_counter()
        dataset = load_dataset(cfg.dataset, cfg.paths.data_dir)
        log.info("data %s loaded in %.1fs: %s", dataset.name, time.perf_counter() - t_data, dataset.summary())
        key = run_key(self.resolved, dataset)
        if self.skip_finished and (done := sweep.replay(self.cache_dir, key, self.output_dir)) is not None:
            sweep.join_preset(sweep.lookup(self.cache_dir, key) or {}, cfg.mlflow)
            return done
        checkpoint = self.cache_dir / "checkpoints" / f"{key}.pt" if cfg.train.resume else None

        code = git_info()
        tags = {
            "mbrec.dataset": dataset.name, "mbrec.backbone": cfg.backbone.name, "mbrec.balancer": cfg.balancer.name,
            "mbrec.seed": self.seed, "mbrec.stage": "student", "mbrec.run_key": key,
            "mlflow.source.git.commit": code["commit"], "mbrec.git_dirty": code["dirty"],
            "mbrec.data_fingerprint": dataset.fingerprint[:16], "mbrec.output_dir": str(self.output_dir),
        }
        tags.update({k: str(v) for k, v in (cfg.mlflow.get("tags") or {}).items()})
        tags.update(sweep.preset_tags(dict(cfg.mlflow.get("tags") or {})))
        resume_id = None
        if checkpoint is not None and checkpoint.is_file():
            resume_id = read_checkpoint_extra(checkpoint).get("mlflow_run_id")
        run_name = f"{cfg.backbone.name}-{cfg.balancer.name}-s{self.seed}"
        tracker = Tracker(bool(cfg.mlflow.enabled), str(cfg.mlflow.tracking_uri), str(cfg.mlflow.experiment),
                          run_name, {k: str(v) for k, v in tags.items()}, resume_run_id=resume_id,
                          parent_run_id=sweep.parent_run_id(self.output_dir))
        status = "FAILED"
        try:
            tracker.log_params(flatten({k: v for k, v in self.resolved.items() if k != "hydra"}))
            model = build_backbone(cfg.backbone, dataset).to(self.device)
            optimizer = make_optimizer(cfg.optimizer, model)
            balancer: Balancer = build_balancer(cfg.balancer)
            ctx = RunContext(
                dataset=dataset, device=self.device, seed=self.seed, cache_dir=str(self.cache_dir),
                fingerprint={"data": dataset.fingerprint, "backbone": self.resolved["backbone"],
                             "train": self.resolved["train"], "optimizer": self.resolved["optimizer"], "seed": self.seed},
                fit_backbone=lambda ablate, tag, **kw: self.fit_backbone(dataset, tracker, ablate, tag, **kw),
                extras={"pipeline": self, "tracker": tracker},
            )
            balancer.prepare(ctx, model)
            seed_everything(self.seed)
            trainer = self.make_trainer(dataset, tracker, f"{cfg.backbone.name}+{cfg.balancer.name}", checkpoint)
            fit = trainer.fit(model, optimizer, balancer, extra_state={"mlflow_run_id": tracker.run_id},
                              on_validation=pruning.report)
            t_test = time.perf_counter()
            test = trainer.evaluator.evaluate(model, "test")
            test_seconds = time.perf_counter() - t_test

            results = {
                "config": self.resolved,
                "dataset": dataset.summary(),
                "device": str(self.device),
                "code": code,
                **summarise(fit),
                "metric": self.settings.metric,
                "best_valid_value": fit.best_value,
                "test": test,
                "test_seconds": test_seconds,
                "balancer": balancer.results(),
                "mlflow_run_id": tracker.run_id,
                "history": fit.history,
            }
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.output_dir / "results.json", results)
            sweep.record(self.cache_dir, key, results)
            tracker.log_metrics({f"test/{k}": v for k, v in test.items()}, fit.best_epoch)
            tracker.log_metrics({f"best/val/{k}": v for k, v in fit.best_valid.items()}, fit.best_epoch)
            tracker.log_metrics({"best_epoch": fit.best_epoch, "seconds_per_epoch": results["seconds_per_epoch"] or 0.0,
                                 "seconds_per_eval": results["seconds_per_eval"] or 0.0})
            tracker.log_artifact(self.output_dir / "results.json")
            tracker.log_artifacts(self.output_dir / ".hydra", "hydra")
            print(format_table(test, self.settings.topk,
                               f"\nTest metrics — {dataset.name} / {cfg.backbone.name} / balancer={cfg.balancer.name}, "
                               f"seed {self.seed}, best epoch {fit.best_epoch} "
                               f"(valid {self.settings.metric} = {fit.best_value:.4f})"))
            print(f"results: {self.output_dir / 'results.json'}" + (f"   MLflow run: {tracker.run_id}" if tracker.run_id else ""))
            status = "FINISHED"
            if checkpoint is not None:
                checkpoint.unlink(missing_ok=True)
            return fit.best_value
        except pruning.TrialPruned as pruned:  # the sweep's pruner stopped this trial
            status = "KILLED"
            tracker.set_tags({"mbrec.pruned": "true", "mbrec.pruned_reason": str(pruned)})
            if checkpoint is not None:  # a pruned run is final; its checkpoint would resume a KILLED run
                checkpoint.unlink(missing_ok=True)
            log.info("%s", pruned)
            raise
        finally:
            tracker.end(status)


def run(cfg: DictConfig, output_dir: str | Path, multirun: bool = False) -> float:
    """Run one configuration; return the best validation value of ``train.metric`` (the sweep objective).
    ``multirun`` (Hydra ``-m``) turns on ``skip_finished=auto``: a trial that already finished is replayed."""
    return Pipeline(cfg, output_dir, multirun).run()
