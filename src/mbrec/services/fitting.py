"""The one way to train a model inside a run (``RunContext.fit``): CKD's uni-modal teachers, Gradient
Blending's probes and whatever a future balancer trains all go through :class:`FitService`, so each
gets the same trainer, a nested MLflow run with the student's tags, and the end of stale RUNNING runs
left by a killed earlier attempt at the same fit."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from hydra.utils import instantiate

from mbrec.backbones import Backbone, build_backbone
from mbrec.data import Dataset
from mbrec.errors import Interrupted
from mbrec.record import Tag
from mbrec.services.store import end_stale_runs
from mbrec.services.tracking import MetricsSink, Tracker, flatten, log_dataset
from mbrec.training.hooks import Balancer
from mbrec.training.settings import TrainSettings
from mbrec.training.trainer import FitResult, Trainer, read_checkpoint_state
from mbrec.utils import seed_everything, stable_hash


def make_optimizer(cfg: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``optimizer`` group: a ``_target_`` optimizer class with ``_partial_: true``, over ``model``'s
    trainable parameters."""
    return instantiate(cfg)(params=[p for p in model.parameters() if p.requires_grad])


def summarise(fit: FitResult) -> dict[str, Any]:
    """The :class:`~mbrec.record.Results` fields a fit determines."""
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "best_epoch": fit.best_epoch,
        "best_valid": fit.best_valid,
        "epochs_run": len(fit.epoch_seconds),
        "stopped_early": fit.stopped_early,
        "max_epochs_hit": fit.max_epochs_hit,
        "seconds_per_epoch": mean(fit.epoch_seconds),
        "seconds_per_eval": mean(fit.eval_seconds),
    }


class FitService:
    """Trains models for one run, each as a nested MLflow run of ``tracker``'s.

    ``configs``: the run's resolved ``backbone`` and ``optimizer`` configs (a fit's defaults);
    ``balancer_name``: tagged on the nested runs (the row they belong to); ``run_key``: the run's identity
    (a fit without a key of its own is identified by it, its tag and its seed)."""

    def __init__(self, dataset: Dataset, device: torch.device, seed: int, settings: TrainSettings,
                 configs: Mapping[str, Any], tracker: Tracker, cache_dir: str = "", balancer_name: str = "",
                 run_key: str = "") -> None:
        self.dataset, self.device, self.seed, self.settings = dataset, device, seed, settings
        self.configs, self.tracker, self.cache_dir, self.balancer_name = configs, tracker, cache_dir, balancer_name
        self.run_key = run_key

    def __call__(
        self,
        tag: str,
        *,
        ablate: Iterable[str] = (),
        model: Backbone | None = None,
        balancer: Balancer | None = None,
        dataset: Dataset | None = None,
        backbone_cfg: Mapping[str, Any] | None = None,
        settings: TrainSettings | None = None,
        optimizer_cfg: Any = None,
        seed: int | None = None,
        key: str | None = None,
        test: bool = True,
        checkpoint: str | Path | None = None,
    ) -> tuple[Backbone, dict[str, Any]]:
        """Train ``model`` (or, when None, a fresh backbone of ``backbone_cfg``, default the run's, built
        after re-seeding with the run's seed and returned frozen) with ``balancer`` and ``ablate`` fixed,
        on ``dataset`` (default the run's), through the one trainer, early-stopped on validation as
        ``settings`` say (default the run's), with a fresh optimizer of ``optimizer_cfg`` (default the
        run's). Returns the model (at its best validation state) and its record: the fit's summary, its
        test metrics (``test=True``) and its MLflow run id.

        ``key``: the identity of this fit; RUNNING MLflow runs of a killed earlier attempt at it are
        marked KILLED. The caller holds that key's lock when a file depends on the fit (a teacher's cache
        entry); a fit inside the run (a probe) is covered by the run's own lock.

        ``checkpoint``: where the fit checkpoints at every validation (with ``train.resume``); a fit
        killed half-way resumes from it, in its own MLflow run. The caller removes it once the fit's
        result is stored (a teacher: once cached). Ctrl-C ends the nested run KILLED and raises
        :class:`~mbrec.errors.Interrupted` naming the fit and its epoch."""
        ablate = frozenset(ablate)
        dataset = dataset or self.dataset
        settings = settings or self.settings
        backbone_cfg = backbone_cfg or self.configs.get("backbone") or {"name": getattr(model, "name", "")}
        optimizer_cfg = optimizer_cfg or self.configs["optimizer"]
        seed = self.seed if seed is None else seed
        key = key or (stable_hash({"run": self.run_key, "tag": tag, "seed": seed}, 24) if self.run_key else None)
        fresh = model is None
        if fresh:
            seed_everything(self.seed)
        checkpoint = Path(checkpoint) if checkpoint is not None and self.settings.resume else None
        resume_id = read_checkpoint_state(checkpoint, MetricsSink.name).get("mlflow_run_id") if checkpoint else None
        child = self._child_run(tag, ablate, backbone_cfg, settings, optimizer_cfg, dataset, key, resume_id)
        if fresh:
            model = build_backbone(backbone_cfg, dataset).to(self.device)
        trainer = Trainer(dataset, settings, self.device, seed, checkpoint=checkpoint, desc=tag)
        sink = MetricsSink(child)
        try:
            fit = trainer.fit(model, make_optimizer(optimizer_cfg, model), balancer, ablate=ablate, callbacks=[sink])
            info: dict[str, Any] = summarise(fit)
            if test:
                info["test"] = trainer.evaluator.evaluate(model, "test", {"": ablate})
                child.log_metrics({f"test/{k}": v for k, v in info["test"].items()}, fit.best_epoch)
        except KeyboardInterrupt as stop:
            child.end("KILLED")
            if isinstance(stop, Interrupted):
                raise
            raise Interrupted(tag, 0 if sink.epoch is None else sink.epoch + 1) from None
        except BaseException:
            child.end("FAILED")
            raise
        child.end()
        if fresh:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
        return model, {**info, "mlflow_run_id": child.run_id}

    def _child_run(self, tag: str, ablate: frozenset[str], backbone_cfg: Mapping[str, Any], settings: TrainSettings,
                   optimizer_cfg: Any, dataset: Dataset, key: str | None, resume_id: str | None = None) -> Tracker:
        """The nested MLflow run: the student's tags (dataset, backbone, seed, row) plus what it keeps,
        its own params and dataset input; stale RUNNING runs of ``key`` ended."""
        kept = [m for m in dataset.modalities if m not in ablate]
        tags = {Tag.STAGE: tag, Tag.ABLATE: ",".join(sorted(ablate)), Tag.MODALITY: ",".join(kept),
                Tag.DATASET: dataset.name, Tag.BACKBONE: str(backbone_cfg["name"]), Tag.SEED: str(self.seed),
                Tag.BALANCER: self.balancer_name, Tag.DATA_FINGERPRINT: dataset.fingerprint[:16]}
        if key:
            tags.update({Tag.FIT_KEY: key, Tag.CACHE_DIR: self.cache_dir})
        child = self.tracker.child(f"{backbone_cfg['name']} {tag} s{self.seed}", tags, resume_run_id=resume_id)
        child.log_params(flatten({"backbone": backbone_cfg, "train": dataclasses.asdict(settings),
                                  "optimizer": optimizer_cfg, "seed": self.seed, "ablate": ",".join(sorted(ablate))}))
        log_dataset(child, dataset)
        if key and child.enabled:
            end_stale_runs(child.client, child.experiment_id, Tag.FIT_KEY, key, child.run_id, self.cache_dir)
        return child
