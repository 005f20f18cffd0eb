"""Vectorised BPR sampling on the device (no per-user Python loop)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass
class Batch:
    """One BPR batch: user u, observed item i (``pos``), unobserved item j (``neg``)."""

    users: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor

    def __len__(self) -> int:
        return self.users.numel()


class BPRSampler:
    """The CKD code's sampling: each step draws ``batch_size`` distinct users uniformly among users
    with training items, one uniform training positive each, and one negative drawn uniformly from the
    items the user has not interacted with in training. An epoch is ``n_train // batch_size + 1``
    steps, as in the reference code.

    Negatives are exact without rejection: a uniform rank r among the user's n_items − d_u free items
    is mapped to the r-th free item by one binary search, so a step never waits on the device (no
    data-dependent loop) and dense users cost the same as sparse ones."""

    def __init__(self, train: sp.csr_matrix, batch_size: int, device: torch.device, seed: int = 0) -> None:
        self.n_users, self.n_items = train.shape
        self.batch_size = batch_size
        self.device = device
        indptr = torch.as_tensor(train.indptr.astype(np.int64), device=device)
        self.indptr = indptr
        self.indices = torch.as_tensor(train.indices.astype(np.int64), device=device)
        self.degree = indptr[1:] - indptr[:-1]
        self.active_users = torch.nonzero(self.degree > 0).flatten()
        if self.degree.max() >= self.n_items:
            raise ValueError("a user has interacted with every item: no negative can be sampled")
        rows = torch.repeat_interleave(torch.arange(self.n_users, device=device), self.degree)
        self.keys = rows * self.n_items + self.indices  # sorted because CSR rows/indices are sorted
        # the k-th training item s_k of a user has s_k − k free items before it; as a global key it
        # stays sorted (non-decreasing within a row, rows apart by n_items)
        within = torch.arange(self.indices.numel(), device=device) - indptr[:-1].repeat_interleave(self.degree)
        self.free_keys = rows * self.n_items + (self.indices - within)
        self.steps_per_epoch = int(train.nnz) // batch_size + 1
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def is_observed(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) pair is a training interaction."""
        q = users * self.n_items + items
        pos = torch.searchsorted(self.keys, q).clamp_max(self.keys.numel() - 1)
        return self.keys[pos] == q

    def sample_negatives(self, users: torch.Tensor) -> torch.Tensor:
        """Uniform items not in each user's training set: rank r ~ U{0 … n_items − d_u − 1}, then
        j = r + #{k : s_k − k ≤ r} (the training items at or before the r-th free item)."""
        free = self.n_items - self.degree[users]
        u = torch.rand(users.shape, device=self.device, generator=self.generator, dtype=torch.float64)
        r = torch.minimum((u * free).long(), free - 1)
        q = users * self.n_items + r
        before = torch.searchsorted(self.free_keys, q, right=True) - self.indptr[users]
        return r + before

    def sample(self) -> Batch:
        n = self.active_users.numel()
        perm = torch.randperm(n, device=self.device, generator=self.generator)[: self.batch_size]
        users = self.active_users[perm]
        offset = (torch.rand(users.shape, device=self.device, generator=self.generator) * self.degree[users]).long()
        pos = self.indices[self.indptr[users] + offset]
        return Batch(users, pos, self.sample_negatives(users))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
