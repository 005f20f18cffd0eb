"""The Backbone interface: what every model must provide so that every balancer works with it."""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from mbrec.data.dataset import Dataset
from mbrec.registry import Registry

Ablation = frozenset  # a set of modality names to ablate


class Backbone(nn.Module):
    """A multimodal recommender that scores (u, i) by the inner product of representations.

    Subclasses implement :meth:`forward`; everything else has a sensible default.

    Ablating modality m (docs/method.md#ablating-a-modality) replaces every item's feature vector of m by
    the mean over items and, where the model has them, every user's preference vector for m by the
    mean over users, so the input stays in-distribution but carries no information about m.
    """

    #: the config group name (``backbone=<name>``); set by :func:`register`.
    name: str = ""

    def __init__(self, dataset: Dataset, **config: Any) -> None:
        super().__init__()
        self.modalities: tuple[str, ...] = dataset.modalities
        self.n_users, self.n_items = dataset.n_users, dataset.n_items

    def forward(
        self,
        users: torch.Tensor | None = None,
        items: torch.Tensor | None = None,
        ablate: Iterable[str] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """User and item representations (rows in the order of ``users``/``items``; all when None)
        with the modalities in ``ablate`` replaced by their means."""
        raise NotImplementedError

    def score(self, user_repr: torch.Tensor, item_repr: torch.Tensor) -> torch.Tensor:
        """Row-wise inner product of aligned user and item representations."""
        return (user_repr * item_repr).sum(-1)

    def aux_loss(self, batch: Any) -> torch.Tensor | None:
        """An extra training term of the model itself (e.g. MGCN's contrastive loss); None if none."""
        return None

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Which parameters belong to which modality; parameters not listed are shared."""
        return {m: [] for m in self.modalities}

    def check_ablation(self, ablate: Iterable[str]) -> frozenset[str]:
        ablate = frozenset(ablate)
        unknown = ablate - set(self.modalities)
        if unknown:
            raise ValueError(f"cannot ablate {sorted(unknown)}: modalities are {list(self.modalities)}")
        return ablate

    def keep_only(self, modality: str) -> frozenset[str]:
        """The ablation that keeps only ``modality`` (the uni-modal pass)."""
        return frozenset(self.modalities) - {modality}

    def step_cache(self) -> contextlib.AbstractContextManager:
        """A context for one training step with several forward passes (CKD, GB, OGM): inside it a
        backbone may compute what all passes share once (e.g. VBPR's item projections). No-op here."""
        return contextlib.nullcontext()


BACKBONES: Registry[Backbone] = Registry("backbone")
register = BACKBONES.register


def build_backbone(cfg: Mapping[str, Any], dataset: Dataset) -> Backbone:
    """Build the backbone named ``cfg['name']`` with the rest of ``cfg`` as keyword arguments."""
    return BACKBONES.build(cfg, dataset)


def rows(table: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """``table[index]`` (all rows when ``index`` is None); ``index_select`` has a cheaper backward
    than advanced indexing."""
    return table if index is None else table.index_select(0, index)


def feature_tensors(dataset: Dataset) -> dict[str, torch.Tensor]:
    """The dataset's feature matrices as float32 tensors (CPU; move with the module)."""
    return {m: torch.from_numpy(np.array(f, dtype=np.float32)) for m, f in dataset.features.items()}
