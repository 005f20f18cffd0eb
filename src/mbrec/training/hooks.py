"""How a balancer plugs into the one training loop (:class:`Balancer`) and what it may use before
training (:class:`RunContext`). Balancers import this module; the trainer never imports a balancer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

import torch

from mbrec.backbones.base import Backbone
from mbrec.data.dataset import Dataset
from mbrec.training.objective import BatchPass
from mbrec.training.settings import TrainSettings


class Tracker(Protocol):
    """The part of :class:`mbrec.services.tracking.Tracker` a balancer may use."""

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...


class Callback:
    """Something the trainer calls at fixed points of a fit (every method optional). A fit's callbacks
    are its balancer plus those given to ``Trainer.fit`` (an MLflow sink, a sweep's pruning hook), called
    in that order; their ``state_dict`` is checkpointed with the fit and restored when it resumes.

    ``name`` keys the callback's state in a checkpoint (unique within a fit)."""

    name: str = ""

    def after_backward(self, model: Backbone, epoch: int) -> None:
        """Between backward and the optimizer step (OGM modulates gradients here)."""

    def on_epoch_end(self, model: Backbone, epoch: int) -> dict[str, float]:
        """After each training epoch, before any validation; returns values to log (GB online weights)."""
        return {}

    def on_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Metrics of the fit: the epoch's losses and logs (after the divergence check), then, on a
        validation epoch, ``val/<metric>`` values."""

    def on_validation(self, value: float, epochs_trained: int) -> None:
        """After every validation, with the value of ``train.metric``; may raise to stop the fit (a
        sweep's pruner raises ``TrialPruned``)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Fit(Protocol):
    """``RunContext.fit``: train a model inside the run as a nested tracked fit (mbrec.services.fitting)."""

    def __call__(self, tag: str, *, ablate: Iterable[str] = (), model: Backbone | None = None,
                 balancer: Balancer | None = None, dataset: Dataset | None = None,
                 backbone_cfg: Mapping[str, Any] | None = None, settings: TrainSettings | None = None,
                 optimizer_cfg: Any = None, seed: int | None = None, key: str | None = None,
                 test: bool = True, checkpoint: str | Path | None = None) -> tuple[Backbone, dict[str, Any]]: ...


@dataclass
class RunContext:
    """What a balancer may use in :meth:`Balancer.prepare`.

    ``configs``: the run's resolved ``backbone``, ``train`` and ``optimizer`` configs (for cache keys);
    ``fit``: the one way to train a model inside the run (CKD's teachers, GB's probes), see :class:`Fit`;
    ``tracker``: the run's MLflow run (tags and metrics of the balancer's own).
    """

    dataset: Dataset
    device: torch.device
    seed: int
    cache_dir: str
    settings: TrainSettings
    configs: Mapping[str, Any]
    fit: Fit
    tracker: Tracker


class Balancer(Callback):
    """Default behaviour = no balancing. Subclasses override what they need: :meth:`loss`, and the
    :class:`Callback` hooks (how a balancer appears in reports and studies is its
    :class:`mbrec.balancers.Row`, given when it registers)."""

    name: str = ""

    def passes_per_step(self, modalities: Sequence[str]) -> int:
        """Forward passes of the model per training step with these modalities (when more than one, the
        trainer opens ``model.step_cache()`` so that the passes share what does not change)."""
        return 1

    def prepare(self, ctx: RunContext, model: Backbone) -> None:
        """Once, before the student trains (CKD trains or loads its teachers here)."""

    def replacement_model(self) -> Backbone | None:
        """A model that replaces the student, set up by :meth:`prepare` (the teacher ensemble): when not
        None the run trains nothing (0 student epochs) and validates, tests and records this model as it
        would the trained student (``Trainer.evaluate_only``). None (default): the student trains."""
        return None

    def loss(self, model: Backbone, base: BatchPass, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss of a batch and the named values to log (averaged over the epoch)."""
        return sum(base.terms.values()), {}

    def backward(self, total: torch.Tensor, model: Backbone) -> None:
        """Fill the parameters' ``.grad`` for the batch (default: ``total.backward()``). A balancer that
        combines several objectives' gradients itself (MMPareto) overrides it; the callbacks'
        ``after_backward`` and the optimizer step follow as usual."""
        total.backward()

    def results(self) -> dict[str, Any]:
        """Extra entries for results.json (e.g. the teachers' metrics)."""
        return {}

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], root: Mapping[str, Any]) -> None:
        """Checks of nested keys beyond the constructor's (CKD's teacher settings); raise ConfigError."""
