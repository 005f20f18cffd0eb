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
        self._plans: dict[str, list[tuple[torch.Tensor, ...]]] = {}

    def _plan(self, split: str) -> list[tuple[torch.Tensor, ...]]:
        """Per user batch of ``split``: (users, training entries to mask, relevant entries), built once
        per evaluator — they never change between validations or per-modality passes."""
        if split not in self._plans:
            users, truth = self.users[split], self.splits[split]
            self._plans[split] = [(ub, *self.train.rows(ub), *truth.rows(ub))
                                  for ub in users.split(self.batch_size)]
        return self._plans[split]

    def ablations(self, per_modality: bool = True, base: frozenset[str] = frozenset()) -> dict[str, frozenset[str]]:
        """Name suffix -> ablation: '' for the model as trained, and '<m>' keeping only modality m."""
        out = {"": base}
        if per_modality:
            out.update({m: frozenset(self.modalities) - {m} for m in self.modalities})
        return out

    @torch.no_grad()
    def rank_sums(self, user_repr: torch.Tensor, item_repr: torch.Tensor, split: str) -> tuple[list[str], torch.Tensor]:
        """Metric names and their sums over the split's users (float64, on the device, not read back)."""
        truth = self.splits[split]
        names: list[str] = []
        total: torch.Tensor | None = None
        for ub, train_r, train_c, rel_r, rel_c in self._plan(split):
            scores = user_repr[ub] @ item_repr.T
            scores[train_r, train_c] = -torch.inf
            top = scores.topk(min(self.max_k, scores.shape[1]), dim=1).indices
            relevant = torch.zeros_like(scores, dtype=torch.bool)
            relevant[rel_r, rel_c] = True
            hits = relevant.gather(1, top)
            if hits.shape[1] < self.max_k:  # a catalogue smaller than K: the missing ranks are misses
                hits = torch.nn.functional.pad(hits, (0, self.max_k - hits.shape[1]))
            per_user = ranking_metrics(hits, truth.degree[ub], self.topk)
            names = list(per_user)
            sums = torch.stack([v.sum() for v in per_user.values()])
            total = sums if total is None else total + sums
        if total is None:  # no user has items in this split
            names = list(ranking_metrics(torch.zeros(0, self.max_k, dtype=torch.bool, device=self.device),
                                         torch.zeros(0, device=self.device), self.topk))
            total = torch.zeros(len(names), dtype=torch.float64, device=self.device)
        return names, total

    def rank_metrics(self, user_repr: torch.Tensor, item_repr: torch.Tensor, split: str) -> dict[str, float]:
        """Mean metrics over the split's users for given full representation matrices."""
        names, sums = self.rank_sums(user_repr, item_repr, split)
        n = max(self.users[split].numel(), 1)
        return dict(zip(names, (sums / n).tolist()))

    @torch.no_grad()
    def evaluate(self, model: Backbone, split: str, ablations: Mapping[str, frozenset[str]] | None = None) -> dict[str, float]:
        """Metrics named ``<metric>@<K>`` for the full pass and ``<metric>@<K>/<m>`` per ablation suffix."""
        was_training = model.training
        model.eval()
        try:
            keys: list[str] = []
            sums: list[torch.Tensor] = []
            for suffix, ablate in (ablations if ablations is not None else self.ablations()).items():
                u, i = model(ablate=ablate)
                names, total = self.rank_sums(u, i, split)
                keys += [f"{name}/{suffix}" if suffix else name for name in names]
                sums.append(total)
            n = max(self.users[split].numel(), 1)
            return dict(zip(keys, (torch.cat(sums) / n).tolist()))  # one read-back for every pass
        finally:
            model.train(was_training)
