"""The Balancer interface: how none, GB, OGM and CKD plug into the one training loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from mbrec.backbones.base import Backbone
from mbrec.data.dataset import Dataset
from mbrec.registry import Registry
from mbrec.training.objective import BatchPass


@dataclass
class RunContext:
    """What a balancer may use in :meth:`Balancer.prepare`.

    ``fit_backbone(ablate, tag)`` trains a fresh backbone of the run's kind with the given modalities
    ablated through the same trainer (early-stopped on validation) and returns ``(model, results)``.
    """

    dataset: Dataset
    device: torch.device
    seed: int
    cache_dir: str
    fingerprint: Mapping[str, Any]
    fit_backbone: Callable[..., tuple[Backbone, dict[str, Any]]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Balancer:
    """Default behaviour = no balancing. Subclasses override what they need."""

    name: str = ""
    #: the row label in reports ("" = the registered name)
    label: str = ""
    #: the row's name in the paper's tables (report/paper/table*.tsv); None = not in the paper
    paper_row: str | None = None
    #: position of the row in reports (smaller first)
    row_order: int = 100
    #: forward passes per training step (the trainer lets the backbone share work when > 1)
    passes_per_step: int = 1

    def __init__(self, **config: Any) -> None:
        self.config = config

    def prepare(self, ctx: RunContext, model: Backbone) -> None:
        """Once, before the student trains (CKD trains or loads its teachers here)."""

    def loss(self, model: Backbone, base: BatchPass, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The total loss of a batch and the named values to log (averaged over the epoch)."""
        total = sum(base.terms.values())
        return total, {}

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


BALANCERS: Registry[Balancer] = Registry("balancer")
register = BALANCERS.register


def build_balancer(cfg: Mapping[str, Any]) -> Balancer:
    """Build the balancer named ``cfg['name']`` with the rest of ``cfg`` as keyword arguments."""
    return BALANCERS.build(cfg)
