"""Full-ranking evaluation over all items, batched over users on the device.

Candidates are all items except the user's training items (validation items stay candidates at test
time and vice versa, as in MMRec and the CKD code). Users are those with at least one item in the
evaluated split; each counts once.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import scipy.sparse as sp
import torch

from mbrec.backbones.base import Backbone
from mbrec.data.dataset import Dataset
from mbrec.training.metrics import ranking_metrics


class _DeviceCSR:
    def __init__(self, m: sp.csr_matrix, device: torch.device) -> None:
        self.indptr = torch.as_tensor(m.indptr.astype(np.int64), device=device)
        self.indices = torch.as_tensor(m.indices.astype(np.int64), device=device)
        self.degree = self.indptr[1:] - self.indptr[:-1]

    def rows(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row position in ``users``, column) of every stored entry of the given rows."""
        counts = self.degree[users]
        starts = self.indptr[users]
        pos = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), counts)
        first = torch.cumsum(counts, 0) - counts
        offsets = torch.arange(int(counts.sum()), device=users.device) - first[pos]
        return pos, self.indices[starts[pos] + offsets]


class Evaluator:
    """Evaluates a backbone on the validation or test split, overall and per modality."""

    def __init__(self, dataset: Dataset, topk: Iterable[int], device: torch.device, batch_size: int = 4096) -> None:
        self.topk = sorted(int(k) for k in topk)
        self.max_k = self.topk[-1]
        self.device = device
        self.batch_size = batch_size
        self.n_items = dataset.n_items
        self.modalities = dataset.modalities
        self.train = _DeviceCSR(dataset.train, device)
        self.splits = {s: _DeviceCSR(dataset.split(s), device) for s in ("valid", "test")}
        self.users = {s: torch.nonzero(c.degree > 0).flatten() for s, c in self.splits.items()}

    def ablations(self, per_modality: bool = True, base: frozenset[str] = frozenset()) -> dict[str, frozenset[str]]:
        """Name suffix -> ablation: '' for the model as trained, and '<m>' keeping only modality m."""
        out = {"": base}
        if per_modality:
            out.update({m: frozenset(self.modalities) - {m} for m in self.modalities})
        return out

    @torch.no_grad()
    def rank_metrics(self, user_repr: torch.Tensor, item_repr: torch.Tensor, split: str) -> dict[str, float]:
        """Mean metrics over the split's users for given full representation matrices."""
        truth = self.splits[split]
        users = self.users[split]
        sums: dict[str, float] = {}
        for start in range(0, users.numel(), self.batch_size):
            ub = users[start : start + self.batch_size]
            scores = user_repr[ub] @ item_repr.T
            r, c = self.train.rows(ub)
            scores[r, c] = -torch.inf
            top = scores.topk(min(self.max_k, scores.shape[1]), dim=1).indices
            relevant = torch.zeros_like(scores, dtype=torch.bool)
            r, c = truth.rows(ub)
            relevant[r, c] = True
            hits = relevant.gather(1, top)
            if hits.shape[1] < self.max_k:  # a catalogue smaller than K: the missing ranks are misses
                hits = torch.nn.functional.pad(hits, (0, self.max_k - hits.shape[1]))
            per_user = ranking_metrics(hits, truth.degree[ub], self.topk)
            for name, v in per_user.items():
                sums[name] = sums.get(name, 0.0) + float(v.sum())
        n = max(users.numel(), 1)
        return {name: s / n for name, s in sums.items()}

    @torch.no_grad()
    def evaluate(self, model: Backbone, split: str, ablations: Mapping[str, frozenset[str]] | None = None) -> dict[str, float]:
        """Metrics named ``<metric>@<K>`` for the full pass and ``<metric>@<K>/<m>`` per ablation suffix."""
        was_training = model.training
        model.eval()
        try:
            out: dict[str, float] = {}
            for suffix, ablate in (ablations if ablations is not None else self.ablations()).items():
                u, i = model(ablate=ablate)
                for name, v in self.rank_metrics(u, i, split).items():
                    out[f"{name}/{suffix}" if suffix else name] = v
            return out
        finally:
            model.train(was_training)
