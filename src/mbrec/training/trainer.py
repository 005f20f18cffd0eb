"""The one training loop: BPR epochs, validation every ``eval_every`` epochs, early stopping on
``metric`` with ``patience``, best state restored; checkpoints after every validation so that a
killed run resumes where it stopped."""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from tqdm.auto import tqdm

from mbrec.backbones.base import Backbone
from mbrec.balancers.base import Balancer
from mbrec.data.dataset import Dataset
from mbrec.data.sampling import BPRSampler
from mbrec.training.evaluation import Evaluator
from mbrec.training.objective import base_pass
from mbrec.utils import atomic_torch_save

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    batch_size: int = 1024
    max_epochs: int = 1000
    eval_every: int = 5
    patience: int = 10
    topk: tuple[int, ...] = (10, 20)
    metric: str = "recall@20"
    l2: float = 1e-5
    eval_batch_size: int = 4096

    @classmethod
    def from_config(cls, cfg: Any) -> "TrainSettings":
        known = {k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg}
        known["topk"] = tuple(int(k) for k in known.get("topk", cls.topk))
        s = cls(**known)
        if s.metric.split("/")[0] not in {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "hit", "ndcg_lattice") for k in s.topk}:
            raise ValueError(f"train.metric={s.metric!r} is not computed; use e.g. 'recall@{max(s.topk)}' (K must be in train.topk)")
        return s


@dataclass
class FitResult:
    best_epoch: int = -1
    best_valid: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    stopped_early: bool = False
    best_value: float = float("-inf")


MetricsLogger = Callable[[dict[str, float], int], None]


class Trainer:
    """Trains one backbone with one balancer. ``ablate`` fixes modalities to ablate throughout
    (uni-modal teachers); per-modality validation is then skipped."""

    def __init__(
        self,
        dataset: Dataset,
        settings: TrainSettings,
        device: torch.device,
        seed: int,
        log_metrics: MetricsLogger | None = None,
        checkpoint: str | Path | None = None,
        desc: str = "train",
    ) -> None:
        self.dataset, self.s, self.device, self.seed = dataset, settings, device, seed
        self.log_metrics = log_metrics or (lambda metrics, step: None)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.desc = desc
        self.evaluator = Evaluator(dataset, settings.topk, device, settings.eval_batch_size)

    def fit(
        self,
        model: Backbone,
        optimizer: torch.optim.Optimizer,
        balancer: Balancer,
        ablate: Iterable[str] = (),
        extra_state: dict[str, Any] | None = None,
        on_validation: Callable[[float, int], None] | None = None,
    ) -> FitResult:
        """``on_validation(value, epochs_trained)`` is called after every validation with the value of
        ``metric`` (a sweep's pruning hook, :func:`mbrec.pruning.report`; it may raise to stop)."""
        ablate = frozenset(ablate)
        s = self.s
        sampler = BPRSampler(self.dataset.train, s.batch_size, self.device, seed=self.seed)
        ablations = self.evaluator.ablations(per_modality=not ablate, base=ablate)
        result, best_state, start_epoch, bad_evals = FitResult(), None, 0, 0
        resumed = self._load_checkpoint(model, optimizer, balancer, sampler)
        if resumed is not None:
            result, best_state, start_epoch, bad_evals = resumed
            log.info("%s: resumed from %s at epoch %d", self.desc, self.checkpoint, start_epoch)
        model.train()
        bar = tqdm(range(start_epoch, s.max_epochs), desc=self.desc, disable=None, leave=False, dynamic_ncols=True)
        for epoch in bar:
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            for _ in range(sampler.steps_per_epoch):
                batch = sampler.sample()
                with model.step_cache() if balancer.passes_per_step > 1 else contextlib.nullcontext():
                    base = base_pass(model, batch, s.l2, ablate)
                    total, logs = balancer.loss(model, base, epoch)
                    optimizer.zero_grad(set_to_none=True)
                    total.backward()
                balancer.after_backward(model, epoch)
                optimizer.step()
                for k, v in base.terms.items():
                    sums[f"loss/{k}"] = sums.get(f"loss/{k}", 0.0) + float(v.detach())
                sums["loss/total"] = sums.get("loss/total", 0.0) + float(total.detach())
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            result.epoch_seconds.append(time.perf_counter() - t0)
            epoch_logs = {k: v / sampler.steps_per_epoch for k, v in sums.items()}
            epoch_logs.update(balancer.on_epoch_end(model, epoch))
            if not all(map(lambda v: v == v and abs(v) != float("inf"), epoch_logs.values())):
                raise FloatingPointError(f"{self.desc}: non-finite loss at epoch {epoch}: {epoch_logs}; lower optimizer.lr or raise train.l2")
            self.log_metrics(epoch_logs, epoch)
            record = {"epoch": epoch, **epoch_logs}
            postfix = {"loss": f"{epoch_logs['loss/total']:.4f}"}
            if (epoch + 1) % s.eval_every == 0:
                t1 = time.perf_counter()
                valid = self.evaluator.evaluate(model, "valid", ablations)
                result.eval_seconds.append(time.perf_counter() - t1)
                self.log_metrics({f"val/{k}": v for k, v in valid.items()}, epoch)
                record.update({f"val/{k}": v for k, v in valid.items()})
                value = valid[s.metric]
                if value > result.best_value:
                    result.best_value, result.best_epoch, result.best_valid = value, epoch, valid
                    best_state = copy.deepcopy(model.state_dict())
                    bad_evals = 0
                else:
                    bad_evals += 1
                postfix[s.metric] = f"{value:.4f}"
                log.info("%s epoch %d: loss %.4f, valid %s %.4f (best %.4f @ %d)", self.desc, epoch,
                         epoch_logs["loss/total"], s.metric, value, result.best_value, result.best_epoch)
                if on_validation is not None:  # pruning (mbrec.pruning.report): may raise TrialPruned
                    on_validation(value, epoch + 1)
                result.history.append(record)
                if bad_evals > s.patience:
                    result.stopped_early = True
                    break
                self._save_checkpoint(model, optimizer, balancer, sampler, result, best_state, epoch + 1, bad_evals, extra_state)
            else:
                result.history.append(record)
            bar.set_postfix(postfix)
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        return result

    def _save_checkpoint(self, model, optimizer, balancer, sampler, result, best_state, next_epoch, bad_evals, extra) -> None:
        if self.checkpoint is None:
            return
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "balancer": balancer.state_dict(),
            "sampler": sampler.state_dict(), "result": result, "best_state": best_state,
            "next_epoch": next_epoch, "bad_evals": bad_evals, "torch_rng": torch.get_rng_state(),
            "extra": extra or {},
        }
        atomic_torch_save(state, self.checkpoint)

    def _load_checkpoint(self, model, optimizer, balancer, sampler):
        if self.checkpoint is None or not self.checkpoint.is_file():
            return None
        try:
            state = torch.load(self.checkpoint, map_location=self.device, weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            balancer.load_state_dict(state["balancer"])
            sampler.load_state_dict(state["sampler"])
            torch.set_rng_state(state["torch_rng"])
        except Exception as e:  # noqa: BLE001 - an unusable checkpoint is reported and ignored
            log.warning("%s: ignoring unusable checkpoint %s (%s); starting from scratch", self.desc, self.checkpoint, e)
            return None
        return state["result"], state["best_state"], state["next_epoch"], state["bad_evals"]


def read_checkpoint_extra(path: str | Path) -> dict[str, Any]:
    """The ``extra`` dict saved with a checkpoint (e.g. the MLflow run id); empty if unreadable."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return torch.load(path, map_location="cpu", weights_only=False).get("extra", {})
    except Exception:  # noqa: BLE001
        return {}
