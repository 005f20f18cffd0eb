"""How a balancer plugs into the one training loop (:class:`Balancer`) and what it may use before
training (:class:`RunContext`). Balancers import this module; the trainer never imports a balancer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

import torch

from mbrec.backbones.base import Backbone
from mbrec.data.dataset import Dataset
from mbrec.training.objective import BatchPass
from mbrec.training.settings import TrainSettings


class Tracker(Protocol):
    """The part of :class:`mbrec.tracking.Tracker` a balancer may use."""

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...


class NullTracker:
    """Logs nothing (unit tests, probes)."""

    run_id = None

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass


#: ``fit_backbone(ablate, tag, backbone_cfg=None, settings=None, optimizer_cfg=None) -> (model, results)``:
#: train a fresh backbone of the run's kind with ``ablate`` fixed, early-stopped on validation, as a
#: nested tracked run; return the best model (frozen) and its metrics
FitBackbone = Callable[..., tuple[Backbone, dict[str, Any]]]


@dataclass
class RunContext:
    """What a balancer may use in :meth:`Balancer.prepare`.

    ``configs``: the run's resolved ``backbone``, ``train`` and ``optimizer`` configs (for cache keys);
    ``make_optimizer(model, optimizer_cfg=None)``: the run's optimizer (or another config's) over
    ``model``'s trainable parameters.
    """

    dataset: Dataset
    device: torch.device
    seed: int
    cache_dir: str
    settings: TrainSettings
    configs: Mapping[str, Any]
    fit_backbone: FitBackbone
    make_optimizer: Callable[..., torch.optim.Optimizer]
    tracker: Tracker = field(default_factory=NullTracker)


class Balancer:
    """Default behaviour = no balancing. Subclasses override what they need.

    Class attributes used by the paper workflow (Table 1 driver, presets, reports):
    ``label`` (row label in reports), ``paper_row`` (the row's name in the paper's tables, None if it
    has none), ``row_order`` (position of the row) and ``search_space`` (what its study tunes).
    """

    name: str = ""
    label: str = ""
    paper_row: str | None = None
    row_order: int = 100
    #: the balancer's own hyper-parameters a Table 1 study searches (besides lr and L2): key -> values
    search_space: Mapping[str, list] = {}
    #: forward passes per training step (the trainer lets the backbone share work when > 1)
    passes_per_step: int = 1

    def prepare(self, ctx: RunContext, model: Backbone) -> None:
        """Once, before the student trains (CKD trains or loads its teachers here)."""

    def loss(self, model: Backbone, base: BatchPass, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss of a batch and the named values to log (averaged over the epoch)."""
        return sum(base.terms.values()), {}

    def after_backward(self, model: Backbone, epoch: int) -> None:
        """Between backward and the optimizer step (OGM modulates gradients here)."""

    def on_epoch_end(self, model: Backbone, epoch: int) -> dict[str, float]:
        """After each training epoch (before any validation); returns values to log (GB online weights)."""
        return {}

    def results(self) -> dict[str, Any]:
        """Extra entries for results.json (e.g. the teachers' metrics)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any], root: Mapping[str, Any]) -> None:
        """Checks of nested keys beyond the constructor's (CKD's teacher settings); raise ConfigError."""

    @classmethod
    def study_settings(cls, base_best: Mapping[str, Any]) -> dict[str, Any]:
        """Dotted overrides a tuning study of this balancer runs with, given the base row's tuned point
        (CKD: its teachers train at the base row's lr, L2 and backbone keys, so once per study)."""
        return {}

    @classmethod
    def row_label(cls) -> str:
        return cls.label or cls.name
