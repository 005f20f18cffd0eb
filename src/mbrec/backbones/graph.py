"""Graphs shared by the graph backbones, sparse throughout and built once per dataset (memoised by
the dataset fingerprint and the arguments)."""

from __future__ import annotations


import numpy as np
import scipy.sparse as sp
import torch

from mbrec.data.dataset import Dataset

_MEMO: dict[tuple, torch.Tensor] = {}


def _memo(key: tuple, build) -> torch.Tensor:
    if key not in _MEMO:
        if len(_MEMO) > 32:
            _MEMO.clear()
        _MEMO[key] = build()
    return _MEMO[key]


def to_torch_sparse(m: sp.spmatrix) -> torch.Tensor:
    """scipy sparse -> coalesced torch sparse COO (float32, CPU; move with ``.to(device)``)."""
    m = m.tocoo()
    idx = torch.from_numpy(np.vstack([m.row, m.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(m.data.astype(np.float32)), m.shape, check_invariants=False).coalesce()


def bipartite_adjacency(train: sp.csr_matrix) -> sp.csr_matrix:
    """The symmetric (U+I)×(U+I) user–item adjacency A (items offset by U), binary."""
    n_users, n_items = train.shape
    r = sp.csr_matrix(train, dtype=np.float32)
    return sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32).tocsr() if n_users and n_items else r


def normalized_adjacency(dataset: Dataset, norm: str = "row", self_loops: bool = True) -> torch.Tensor:
    """Normalised bipartite adjacency as torch sparse.

    * ``norm="row"``, ``self_loops=True``: D⁻¹(A + I), the CKD code's ``s_norm_adj_mat`` (backbones.md §1).
    * ``norm="sym"``: D^-½ (A [+ I]) D^-½ (LightGCN / MGCN). Zero-degree rows stay zero.
    """

    def build() -> torch.Tensor:
        a = bipartite_adjacency(dataset.train)
        if self_loops:
            a = a + sp.identity(a.shape[0], dtype=np.float32, format="csr")
        deg = np.asarray(a.sum(1)).ravel()
        with np.errstate(divide="ignore"):
            if norm == "row":
                inv = np.where(deg > 0, 1.0 / deg, 0.0)
                a = sp.diags(inv) @ a
            elif norm == "sym":
                inv = np.where(deg > 0, deg ** -0.5, 0.0)
                a = sp.diags(inv) @ a @ sp.diags(inv)
            else:
                raise ValueError(f"norm={norm!r}: use 'row' or 'sym'")
        return to_torch_sparse(a)

    return _memo(("adj", dataset.fingerprint, norm, self_loops), build)


def edge_index(dataset: Dataset, undirected: bool = True) -> torch.Tensor:
    """2×E long tensor of user→item edges (items offset by n_users), plus reversed edges if undirected."""

    def build() -> torch.Tensor:
        coo = dataset.train.tocoo()
        u = torch.from_numpy(coo.row.astype(np.int64))
        i = torch.from_numpy(coo.col.astype(np.int64)) + dataset.n_users
        e = torch.stack([u, i])
        return torch.cat([e, e.flip(0)], 1) if undirected else e

    return _memo(("edges", dataset.fingerprint, undirected), build)


def knn_graph(features: torch.Tensor, k: int, norm: str = "sym", chunk: int = 4096) -> torch.Tensor:
    """Item–item kNN graph by cosine similarity (each row keeps its k most similar items, self
    included as in MGCN/LATTICE), binarised and normalised (``sym``: D^-½ S D^-½; ``row``: D⁻¹ S).
    Computed in row chunks so memory stays O(chunk × n)."""
    x = torch.nn.functional.normalize(features.float(), dim=1)
    n = x.shape[0]
    k = min(k, n)
    rows, cols = [], []
    for start in range(0, n, chunk):
        sim = x[start : start + chunk] @ x.T
        top = sim.topk(k, dim=1).indices
        rows.append(torch.arange(start, start + top.shape[0]).repeat_interleave(k))
        cols.append(top.reshape(-1))
    idx = torch.stack([torch.cat(rows), torch.cat(cols)])
    vals = torch.ones(idx.shape[1])
    deg = torch.zeros(n).index_add_(0, idx[0], vals)
    if norm == "sym":
        d = deg.pow(-0.5)
        vals = d[idx[0]] * d[idx[1]]
    elif norm == "row":
        vals = 1.0 / deg[idx[0]]
    else:
        raise ValueError(f"norm={norm!r}: use 'row' or 'sym'")
    return torch.sparse_coo_tensor(idx, vals, (n, n), check_invariants=False).coalesce()


def dataset_knn_graph(dataset: Dataset, modality: str, k: int, norm: str = "sym") -> torch.Tensor:
    """:func:`knn_graph` of one modality's raw features, memoised per dataset."""
    return _memo(("knn", dataset.fingerprint, modality, k, norm),
                 lambda: knn_graph(torch.from_numpy(np.asarray(dataset.features[modality])), k, norm))
