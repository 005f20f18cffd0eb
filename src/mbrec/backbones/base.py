"""The Backbone interface: what every model must provide so that every balancer works with it."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from mbrec.data.dataset import Dataset
from mbrec.registry import Registry


class StepMemo:
    """Values shared by the several forward passes of one training step (``Backbone.step_cache``):
    inside :meth:`active`, :meth:`get` builds each key once; outside it always rebuilds."""

    def __init__(self) -> None:
        self._values: dict[Hashable, torch.Tensor] | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._values = {}
        try:
            yield
        finally:
            self._values = None

    @property
    def active_now(self) -> bool:
        """True inside :meth:`active` (a multi-pass step)."""
        return self._values is not None

    def get(self, key: Hashable, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self._values is None:
            return build()
        if key not in self._values:
            self._values[key] = build()
        return self._values[key]


class Backbone(nn.Module):
    """A multimodal recommender that scores (u, i) by the inner product of its representations
    (``mbrec.training.objective.inner``; evaluation ranks all items by the same product).

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
        self.memo = StepMemo()

    def forward(
        self,
        users: torch.Tensor | None = None,
        items: torch.Tensor | None = None,
        ablate: Iterable[str] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """User and item representations (rows in the order of ``users``/``items``; all when None)
        with the modalities in ``ablate`` replaced by their means."""
        raise NotImplementedError

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
        """A context for one training step with several forward passes (CKD, GB, OGM): inside it
        ``self.memo.get(key, build)`` computes what all passes share once (e.g. VBPR's item projections)."""
        return self.memo.active()

    def register_features(self, features: Mapping[str, torch.Tensor]) -> None:
        """Each modality's feature matrix and its item mean as constant buffers (moved with the module,
        not trained, not saved): :meth:`feature` and :meth:`feature_mean`."""
        for m, f in features.items():
            self.register_buffer(f"feat_{m}", f, persistent=False)
            self.register_buffer(f"feat_mean_{m}", f.mean(0, keepdim=True), persistent=False)

    def feature(self, m: str) -> torch.Tensor:
        return getattr(self, f"feat_{m}")

    def feature_mean(self, m: str) -> torch.Tensor:
        return getattr(self, f"feat_mean_{m}")


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
