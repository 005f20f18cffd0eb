"""The one training loop: BPR epochs, validation every ``eval_every`` epochs, early stopping on
``metric`` (``metric_mode`` max or min) with ``patience``, best state restored; checkpoints after every
validation so that a killed run resumes where it stopped. What else happens during a fit is a
:class:`~mbrec.training.hooks.Callback`: the balancer first, then the callbacks given to :meth:`Trainer.fit`."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from mbrec import cachefile
from mbrec.backbones.base import Backbone
from mbrec.data.dataset import Dataset
from mbrec.data.sampling import BPRSampler
from mbrec.errors import DivergedError
from mbrec.training.divergence import check_divergence
from mbrec.training.evaluation import Evaluator
from mbrec.training.hooks import Balancer, Callback
from mbrec.training.objective import base_pass
from mbrec.training.settings import TrainSettings

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    best_epoch: int = -1
    best_valid: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    stopped_early: bool = False
    best_value: float = float("-inf")  #: ``+inf`` before the first validation with ``metric_mode: min``
    max_epochs_hit: bool = False  #: ended by ``max_epochs`` before early stopping (still improving)


class Trainer:
    """Trains one backbone with one balancer. ``ablate`` fixes modalities to ablate throughout
    (uni-modal teachers); per-modality validation is then skipped."""

    def __init__(
        self,
        dataset: Dataset,
        settings: TrainSettings,
        device: torch.device,
        seed: int,
        checkpoint: str | Path | None = None,
        desc: str = "train",
    ) -> None:
        self.dataset, self.s, self.device, self.seed = dataset, settings, device, seed
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.desc = desc
        self.evaluator = Evaluator(dataset, settings.topk, device, settings.eval_batch_size)
        if device.type == "cuda":  # process-wide switches, set from the run's settings
            torch.backends.cuda.matmul.allow_tf32 = settings.tf32
            torch.backends.cudnn.allow_tf32 = settings.tf32

    def fit(
        self,
        model: Backbone,
        optimizer: torch.optim.Optimizer,
        balancer: Balancer | None = None,
        ablate: Iterable[str] = (),
        callbacks: Sequence[Callback] = (),
    ) -> FitResult:
        """Train until ``max_epochs`` or early stopping; the model ends at its best validation state.
        ``callbacks`` (after the balancer) get the fit's metrics and validations (an MLflow sink, a
        sweep's pruning hook that may raise to stop)."""
        balancer = balancer or Balancer()
        hooks: list[Callback] = [balancer, *callbacks]
        ablate = frozenset(ablate)
        sampler = BPRSampler(self.dataset.train, self.s.batch_size, self.device, seed=self.seed)
        ablations = self.evaluator.ablations(per_modality=not ablate, base=ablate)
        state = self._load_checkpoint(model, optimizer, hooks, sampler) or _FitState(self.s.metric_mode)
        model.train()
        bar = tqdm(range(state.next_epoch, self.s.max_epochs), desc=self.desc, disable=None, leave=False, dynamic_ncols=True)
        for epoch in bar:
            logs = self._train_epoch(model, optimizer, balancer, hooks, sampler, ablate, epoch, state.result)
            record = {"epoch": epoch, **logs}
            postfix = {"loss": f"{logs['loss/total']:.4f}"}
            # the last epoch always validates: max_epochs=3, eval_every=5 is a result (eval_every=0: never, probes)
            if self.s.eval_every > 0 and ((epoch + 1) % self.s.eval_every == 0 or epoch + 1 == self.s.max_epochs):
                value = self._valid_epoch(model, ablations, epoch, record, state, hooks)
                postfix[self.s.metric] = f"{value:.4f}"
                for hook in hooks:  # e.g. pruning: may raise TrialPruned
                    hook.on_validation(value, epoch + 1)
                state.result.history.append(record)
                if state.bad_evals > self.s.patience:
                    state.result.stopped_early = True
                    break
                state.next_epoch = epoch + 1
                self._save_checkpoint(model, optimizer, hooks, sampler, state)
            else:
                state.result.history.append(record)
            bar.set_postfix(postfix)
        bar.close()
        result = state.result
        result.max_epochs_hit = not result.stopped_early and len(result.history) >= self.s.max_epochs
        if state.best_state is not None:
            model.load_state_dict(state.best_state)
        elif self.s.eval_every > 0:  # validated, but never a finite metric: no best model, not a result
            raise DivergedError(f"{self.desc}: no validation gave a usable {self.s.metric} (non-finite) in "
                                f"{self.s.max_epochs} epochs; no best model. Fix: lower optimizer.lr")
        return state.result

    def evaluate_only(self, model: Backbone, callbacks: Sequence[Callback] = ()) -> FitResult:
        """A model trained elsewhere (a balancer's replacement model, e.g. the teacher ensemble): one
        validation, overall and per modality, recorded as a fit of 0 epochs (``best_epoch`` −1, no epoch
        times, ``history`` = that validation at epoch −1); ``callbacks`` get its ``val/`` metrics at step 0."""
        t0 = time.perf_counter()
        valid = self.evaluator.evaluate(model, "valid", self.evaluator.ablations())
        seconds = time.perf_counter() - t0
        metrics = {f"val/{k}": v for k, v in valid.items()}
        for hook in callbacks:
            hook.on_metrics(metrics, 0)
        value = valid[self.s.metric]
        if not math.isfinite(value):
            raise DivergedError(f"{self.desc}: the model's validation {self.s.metric} is not finite")
        log.info("%s: nothing to train (0 epochs); valid %s %.4f", self.desc, self.s.metric, value)
        return FitResult(best_epoch=-1, best_valid=valid, history=[{"epoch": -1, **metrics}],
                         eval_seconds=[seconds], best_value=value)

    def _train_epoch(self, model: Backbone, optimizer: torch.optim.Optimizer, balancer: Balancer,
                     hooks: list[Callback], sampler: BPRSampler, ablate: frozenset[str], epoch: int,
                     result: FitResult) -> dict[str, float]:
        """One pass of BPR steps; returns the epoch's mean loss terms and balancer logs.

        Loss terms and logs are summed on the device (float64) and read back once, after the last step:
        nothing inside a step waits for the device."""
        t0 = time.perf_counter()
        model.on_epoch_start(epoch)
        if self.s.lr_decay != 1.0:  # a function of the epoch alone, so a resumed run continues it exactly
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * self.s.lr_factor(epoch)
        sums: dict[str, torch.Tensor] = {}
        shared = balancer.passes_per_step(model.modalities) > 1
        net = self._compiled(model)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.s.precision == "bf16")

        def add(key: str, value: torch.Tensor | float) -> None:
            value = value.detach().to(torch.float64) if torch.is_tensor(value) else value
            sums[key] = sums[key] + value if key in sums else value

        for _ in range(sampler.steps_per_epoch):
            batch = sampler.sample()
            with model.step_cache() if shared else contextlib.nullcontext():
                with autocast:
                    base = base_pass(net, batch, self.s.l2, ablate)
                    total, logs = balancer.loss(net, base, epoch)
                optimizer.zero_grad(set_to_none=True)
                balancer.backward(total, net)
            for hook in hooks:
                hook.after_backward(model, epoch)
            optimizer.step()
            for k, v in base.terms.items():
                add(f"loss/{k}", v)
            add("loss/total", total)
            for k, v in logs.items():
                add(k, v)
        logs = dict(zip(sums, _to_floats(list(sums.values()))))  # the epoch's one read-back
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        result.epoch_seconds.append(time.perf_counter() - t0)
        logs = {k: v / sampler.steps_per_epoch for k, v in logs.items()}
        if self.s.lr_decay != 1.0:
            logs["lr"] = optimizer.param_groups[0]["lr"]
        for hook in hooks:
            logs.update(hook.on_epoch_end(model, epoch))
        check_divergence(self.desc, epoch, logs, optimizer)
        for hook in hooks:
            hook.on_metrics(logs, epoch)
        return logs

    def _compiled(self, model: Backbone) -> Backbone:
        """The module the training passes call: ``torch.compile(model)`` with ``train.compile`` (compiled
        once per model; attributes and parameters are the model's), else the model itself."""
        if not self.s.compile:
            return model
        if getattr(model, "_mbrec_compiled", None) is None:
            object.__setattr__(model, "_mbrec_compiled", torch.compile(model, dynamic=True))
        return model._mbrec_compiled  # type: ignore[return-value]

    def _valid_epoch(self, model: Backbone, ablations: dict[str, frozenset[str]], epoch: int,
                     record: dict[str, float], state: _FitState, hooks: list[Callback]) -> float:
        """Validate, keep the best state, count validations without improvement; returns the metric."""
        t1 = time.perf_counter()
        valid = self.evaluator.evaluate(model, "valid", ablations)
        result = state.result
        result.eval_seconds.append(time.perf_counter() - t1)
        metrics = {f"val/{k}": v for k, v in valid.items()}
        for hook in hooks:
            hook.on_metrics(metrics, epoch)
        record.update(metrics)
        value = valid[self.s.metric]
        if self.s.better(value, result.best_value):
            result.best_value, result.best_epoch, result.best_valid = value, epoch, valid
            state.best_state = copy.deepcopy(model.state_dict())
            state.bad_evals = 0
        else:
            state.bad_evals += 1
        log.info("%s epoch %d: loss %.4f, valid %s %.4f (best %.4f @ %d)", self.desc, epoch,
                 record["loss/total"], self.s.metric, value, result.best_value, result.best_epoch)
        return value

    def _save_checkpoint(self, model, optimizer, hooks: list[Callback], sampler, state: _FitState) -> None:
        """Everything a resumed fit continues from, as tensors and plain containers (mbrec.cachefile)."""
        if self.checkpoint is None:
            return
        cachefile.save({
            **_components(model, optimizer, hooks, sampler), "format": CHECKPOINT_FORMAT,
            "result": dataclasses.asdict(state.result), "best_state": state.best_state,
            "next_epoch": state.next_epoch, "bad_evals": state.bad_evals,
        }, self.checkpoint)

    def _load_checkpoint(self, model, optimizer, hooks: list[Callback], sampler) -> _FitState | None:
        """The saved state, applied to the components; None (reported, file removed, components
        untouched) if there is none or it is unusable."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return None
        before = _components(model, optimizer, hooks, sampler, copy_model=True)
        try:
            saved = cachefile.load(self.checkpoint, map_location=self.device)
            if saved.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"format {saved.get('format')!r}, expected {CHECKPOINT_FORMAT}")
            state = _FitState(self.s.metric_mode, FitResult(**saved["result"]), saved["best_state"],
                              int(saved["next_epoch"]), int(saved["bad_evals"]))
            _apply(saved, model, optimizer, hooks, sampler)
        except Exception as e:  # noqa: BLE001 - an unusable checkpoint is reported and removed, never used
            _apply(before, model, optimizer, hooks, sampler)
            log.warning("%s: ignoring unusable checkpoint %s (%s); starting from scratch", self.desc, self.checkpoint, e)
            self.checkpoint.unlink(missing_ok=True)
            return None
        log.info("%s: resumed from %s at epoch %d", self.desc, self.checkpoint, state.next_epoch)
        return state


#: version of the checkpoint layout (a checkpoint of another layout is reported and ignored)
CHECKPOINT_FORMAT = 3


def _hook_key(index: int, hook: Callback) -> str:
    """A callback's key in a checkpoint: ``balancer`` for the first (the balancer), else its name."""
    return "balancer" if index == 0 else (hook.name or type(hook).__name__)


def _components(model, optimizer, hooks: list[Callback], sampler, copy_model: bool = False) -> dict[str, Any]:
    """The states of what a fit mutates besides its result (``copy_model``: a snapshot, not views)."""
    weights = model.state_dict()
    states = {_hook_key(i, h): h.state_dict() for i, h in enumerate(hooks)}
    return {
        "model": {k: v.clone() for k, v in weights.items()} if copy_model else weights,
        "optimizer": copy.deepcopy(optimizer.state_dict()) if copy_model else optimizer.state_dict(),
        "callbacks": copy.deepcopy(states) if copy_model else states,
        "sampler": sampler.state_dict(), "torch_rng": torch.get_rng_state(),
    }


def _apply(state: dict[str, Any], model, optimizer, hooks: list[Callback], sampler) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for i, hook in enumerate(hooks):
        hook.load_state_dict(state["callbacks"].get(_hook_key(i, hook), {}))
    sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(state["torch_rng"])


def _to_floats(values: list[torch.Tensor | float]) -> list[float]:
    """Python floats of device scalars and plain numbers, with one device-to-host copy for all."""
    tensors = [v for v in values if torch.is_tensor(v)]
    host = iter(torch.stack(tensors).cpu().tolist()) if tensors else iter(())
    return [next(host) if torch.is_tensor(v) else float(v) for v in values]


@dataclass
class _FitState:
    """What a resumed fit continues from."""

    mode: str = "max"
    result: FitResult | None = None
    best_state: dict[str, torch.Tensor] | None = None
    next_epoch: int = 0
    bad_evals: int = 0

    def __post_init__(self) -> None:
        if self.result is None:
            self.result = FitResult(best_value=float("-inf") if self.mode == "max" else float("inf"))


def read_checkpoint_state(path: str | Path, callback: str) -> dict[str, Any]:
    """The state a callback named ``callback`` saved in a checkpoint (e.g. the MLflow sink's run id);
    empty if missing or unusable (the trainer reports an unusable checkpoint when it would load it)."""
    try:
        states = cachefile.load(path, map_location="cpu").get("callbacks", {})
    except (cachefile.UnusableFile, AttributeError):
        return {}
    state = states.get(callback, {}) if isinstance(states, dict) else {}
    return state if isinstance(state, dict) else {}
