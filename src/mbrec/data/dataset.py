"""The immutable Dataset every other part of mbrec reads."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Mapping

import numpy as np
import scipy.sparse as sp

SPLITS = ("train", "valid", "test")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Dataset:
    """Users, items, per-user train/validation/test interactions (CSR, users x items, binary) and one
    dense feature matrix per modality (items x width), keyed by modality name.

    ``item_categories`` (one integer per item) is optional side information (DeepStyle).
    Arrays are made read-only so that nothing downstream can change a dataset in place.
    """

    name: str
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    features: Mapping[str, np.ndarray]
    item_categories: np.ndarray | None = None
    source: str = ""
    meta: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {self.train.shape, self.valid.shape, self.test.shape}
        if len(shapes) != 1:
            raise ValueError(f"dataset {self.name}: split shapes differ: {shapes}")
        feats = {}
        for m, f in self.features.items():
            if f.ndim != 2 or f.shape[0] != self.n_items:
                raise ValueError(f"dataset {self.name}: features {m!r} have shape {f.shape}, expected ({self.n_items}, d)")
            feats[m] = _readonly(np.asarray(f, dtype=np.float32))
        object.__setattr__(self, "features", MappingProxyType(feats))
        for s in SPLITS:
            m = getattr(self, s)
            for a in (m.data, m.indices, m.indptr):
                a.setflags(write=False)
        if self.item_categories is not None:
            object.__setattr__(self, "item_categories", _readonly(np.asarray(self.item_categories, dtype=np.int64)))

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    def split(self, name: str) -> sp.csr_matrix:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; one of {SPLITS}")
        return getattr(self, name)

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 over everything that defines the data (interactions, features, categories)."""
        h = hashlib.sha256()
        h.update(f"{self.n_users}x{self.n_items}".encode())
        for s in SPLITS:
            m = self.split(s)
            h.update(s.encode())
            h.update(np.ascontiguousarray(m.indptr, dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(m.indices, dtype=np.int64).tobytes())
        for name in sorted(self.features):
            h.update(name.encode())
            h.update(self.features[name].tobytes())
        if self.item_categories is not None:
            h.update(b"categories")
            h.update(self.item_categories.tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, object]:
        """Counts for logs and results.json."""
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            **{f"{s}_interactions": int(self.split(s).nnz) for s in SPLITS},
            "features": {m: int(f.shape[1]) for m, f in self.features.items()},
            "fingerprint": self.fingerprint[:16],
            # odd input the reader accepted (e.g. ids written as 12.0), counted; absent when there was none
            **({"accepted": dict(self.meta["accepted"])} if self.meta.get("accepted") else {}),
        }


def interactions_to_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary users x items CSR with sorted indices (callers check duplicates first)."""
    m = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (np.asarray(users, np.int64), np.asarray(items, np.int64))),
        shape=(n_users, n_items),
    )
    m.sum_duplicates()
    m.sort_indices()
    m.data[:] = 1.0
    return m
