"""Full-ranking evaluation over all items, batched over users on the device.

Candidates are all items except the user's training items (validation items stay candidates at test
time and vice versa, as in MMRec and the CKD code). Users are those with at least one item in the
evaluated split; each counts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

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


def score_sharing(same: np.ndarray, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Columns to take out of the reference pass's scores and to put in from this pass's, or None when
    scoring the pass on its own is as cheap.

    Scores are inner products, so a pass whose representations equal the reference pass's in the
    columns ``same`` scores S_ref − U_ref[:, ~same]·I_ref[:, ~same]ᵀ + U[:, ~same]·I[:, ~same]ᵀ. A column
    where the pass's item representation is the same for every item (``flat``) adds the same number to
    all of a user's scores, which no ranking can see, so it is left out. A per-modality pass of VBPR or
    DeepStyle thus costs the ablated modality's columns only; graph backbones, whose every column
    changes, score each pass on its own. The rankings are those of the direct product up to rounding.
    """
    drop = ~same
    add = drop & ~flat
    return (drop, add) if int(drop.sum()) + int(add.sum()) < same.size else None


@dataclass(frozen=True)
class _Derived:
    """A pass scored from the reference pass (:func:`score_sharing`), operands ready per user batch."""

    same: bool
    drop_u: torch.Tensor
    drop_i: torch.Tensor
    add_u: torch.Tensor | None
    add_i: torch.Tensor | None


class Evaluator:
    """Evaluates a backbone on the validation or test split, overall and per modality."""

    def __init__(self, dataset: Dataset, topk: Iterable[int], device: torch.device, batch_size: int = 1024) -> None:
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
        names, (total,) = self._rank_passes([(user_repr, item_repr)], split)
        return names, total

    def _rank_passes(self, reps: Sequence[tuple[torch.Tensor, torch.Tensor]],
                     split: str) -> tuple[list[str], list[torch.Tensor]]:
        """Metric sums of several passes over the same users: the first pass is scored in full, each
        other one from it when :func:`score_sharing` finds that cheaper (see there)."""
        truth = self.splits[split]
        ref_u, ref_i = reps[0]
        derived = self._derivations(reps)
        names = list(ranking_metrics(torch.zeros(0, self.max_k, dtype=torch.bool, device=self.device),
                                     torch.zeros(0, device=self.device), self.topk))
        totals = [torch.zeros(len(names), dtype=torch.float64, device=self.device) for _ in reps]
        for ub, train_r, train_c, rel_r, rel_c in self._plan(split):
            relevant = torch.zeros(ub.numel(), self.n_items, dtype=torch.bool, device=self.device)
            relevant[rel_r, rel_c] = True
            n_relevant = truth.degree[ub]

            def add(p: int, scores: torch.Tensor) -> None:
                scores[train_r, train_c] = -torch.inf  # noqa: B023 (add runs inside this iteration)
                top = scores.topk(min(self.max_k, scores.shape[1]), dim=1).indices
                hits = relevant.gather(1, top)  # noqa: B023 (add runs inside this iteration)
                if hits.shape[1] < self.max_k:  # a catalogue smaller than K: the missing ranks are misses
                    hits = torch.nn.functional.pad(hits, (0, self.max_k - hits.shape[1]))
                totals[p] += torch.stack([v.sum() for v in ranking_metrics(hits, n_relevant, self.topk).values()])  # noqa: B023 (add runs inside this iteration)

            ref = ref_u[ub] @ ref_i.T
            for p, how in enumerate(derived[1:], start=1):
                if how is None:  # nothing shared: score the pass on its own
                    user_repr, item_repr = reps[p]
                    add(p, user_repr[ub] @ item_repr.T)
                elif how.same:  # identical scores: identical sums, filled in below
                    continue
                else:
                    scores = torch.addmm(ref, how.drop_u[ub], how.drop_i, alpha=-1)
                    if how.add_u is not None:
                        scores.addmm_(how.add_u[ub], how.add_i)
                    add(p, scores)
            add(0, ref)
        for p, how in enumerate(derived[1:], start=1):
            if how is not None and how.same:
                totals[p] = totals[0]
        return names, totals

    def _derivations(self, reps: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[_Derived | None]:
        """How each pass after the first is scored: None (on its own) or a :class:`_Derived`. Comparing
        the columns costs one read-back for all passes together."""
        ref_u, ref_i = reps[0]
        comparable = [p for p, (u, i) in enumerate(reps) if p > 0 and u.shape == ref_u.shape and i.shape == ref_i.shape]
        out: list[_Derived | None] = [None] * len(reps)
        if not comparable:
            return out
        flags = []
        for p in comparable:
            u, i = reps[p]
            flags += [((u == ref_u).all(0) & (i == ref_i).all(0)), (i == i[:1]).all(0)]
        read = torch.stack(flags).cpu().numpy()  # the one read-back
        for n, p in enumerate(comparable):
            plan = score_sharing(read[2 * n], read[2 * n + 1])
            if plan is not None:
                drop, add = (torch.as_tensor(np.flatnonzero(c), device=self.device) for c in plan)
                u, i = reps[p]
                out[p] = _Derived(same=drop.numel() == 0 and add.numel() == 0,
                                  drop_u=ref_u[:, drop], drop_i=ref_i[:, drop].T.contiguous(),
                                  add_u=u[:, add] if add.numel() else None,
                                  add_i=i[:, add].T.contiguous() if add.numel() else None)
        return out

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
            passes = ablations if ablations is not None else self.ablations()
            names, sums = self._rank_passes([model(ablate=ablate) for ablate in passes.values()], split)
            keys = [f"{name}/{suffix}" if suffix else name for suffix in passes for name in names]
            n = max(self.users[split].numel(), 1)
            return dict(zip(keys, (torch.cat(sums) / n).tolist()))  # one read-back for every pass
        finally:
            model.train(was_training)
