"""Graphs shared by the graph backbones, sparse throughout and built once per dataset (memoised by
the dataset fingerprint and the arguments). Item–item kNN graphs are built in row chunks (never the
dense items × items similarity) and, once :func:`use_disk_cache` names a folder (a run does: its
``paths.cache_dir``), kept there as checksummed files (mbrec.cachefile), so a second run or process loads
them instead of rebuilding."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from mbrec import cachefile
from mbrec.backbones.base import rows
from mbrec.data.dataset import Dataset
from mbrec.utils import stable_hash

log = logging.getLogger(__name__)

# torch warns once per process that CSR support is "beta"; CSR SpMM/SDDMM are what we want on CPU.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)

_MEMO: dict[tuple, torch.Tensor] = {}
#: where kNN graphs are kept on disk (``<folder>/graphs/``); None: this process only
_DISK: Path | None = None
#: version of the on-disk graph layout (another version is rebuilt)
GRAPH_FORMAT = 1
#: the similarity block of one chunk of rows holds at most this many entries (256 MB in float32)
CHUNK_ENTRIES = 1 << 26


def use_disk_cache(folder: str | Path | None) -> None:
    """Keep kNN graphs in ``<folder>/graphs/`` (None: in this process only). A run sets its
    ``paths.cache_dir`` here before it builds its model."""
    global _DISK
    _DISK = None if folder is None else Path(folder)


def _memo(key: tuple, build: Callable[[], torch.Tensor]) -> torch.Tensor:
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

    * ``norm="row"``, ``self_loops=True``: D⁻¹(A + I), the CKD code's ``s_norm_adj_mat``.
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


def knn_graph(features: torch.Tensor, k: int, norm: str = "sym", chunk: int | None = None, weighted: bool = False) -> torch.Tensor:
    """Item–item kNN graph by cosine similarity (each row keeps its k most similar items, self
    included as in MGCN/LATTICE/FREEDOM), binarised and normalised (``sym``: D^-½ S D^-½; ``row``: D⁻¹ S),
    D the row sums. ``weighted=True`` keeps the cosine values as edge weights (MGCN's
    ``build_knn_normalized_graph``). Computed in chunks of ``chunk`` rows (default: as many as keep one
    similarity block under :data:`CHUNK_ENTRIES`), so the dense n × n matrix is never built."""
    x = torch.nn.functional.normalize(features.float(), dim=1)
    n = x.shape[0]
    k = min(k, n)
    chunk = chunk or max(1, min(n, CHUNK_ENTRIES // max(n, 1)))
    rows, cols, weights = [], [], []
    for start in range(0, n, chunk):
        sim = x[start : start + chunk] @ x.T
        top = sim.topk(k, dim=1)
        rows.append(torch.arange(start, start + top.indices.shape[0]).repeat_interleave(k))
        cols.append(top.indices.reshape(-1))
        weights.append(top.values.reshape(-1))
    idx = torch.stack([torch.cat(rows), torch.cat(cols)])
    vals = torch.cat(weights) if weighted else torch.ones(idx.shape[1])
    # a row of all-zero features has zero similarities: keep its degree positive (no inf/NaN)
    deg = torch.zeros(n).index_add_(0, idx[0], vals).clamp_min(1e-12)
    if norm == "sym":
        d = deg.pow(-0.5)
        vals = d[idx[0]] * vals * d[idx[1]]
    elif norm == "row":
        vals = vals / deg[idx[0]]
    else:
        raise ValueError(f"norm={norm!r}: use 'row' or 'sym'")
    return torch.sparse_coo_tensor(idx, vals, (n, n), check_invariants=False).coalesce()


def dataset_knn_graph(dataset: Dataset, modality: str, k: int, norm: str = "sym", weighted: bool = False) -> torch.Tensor:
    """:func:`knn_graph` of one modality's raw features, memoised per dataset and, with
    :func:`use_disk_cache`, kept on disk keyed by (data fingerprint, modality, k, normalisation)."""
    key = {"format": GRAPH_FORMAT, "data": dataset.fingerprint, "modality": modality, "k": int(k), "norm": norm,
           "weighted": bool(weighted)}

    def build() -> torch.Tensor:
        path = None if _DISK is None else _DISK / "graphs" / f"knn-{stable_hash(key, 24)}.pt"
        if path is not None and path.exists():
            cached = _load_graph(path, key)
            if cached is not None:
                return cached
        g = knn_graph(torch.from_numpy(np.array(dataset.features[modality], dtype=np.float32)), k, norm, weighted=weighted)
        if path is not None:
            try:
                cachefile.save({"key": key, "indices": g.indices(), "values": g.values(), "shape": list(g.shape)}, path)
            except OSError as e:  # a read-only cache only costs the rebuild next time
                log.warning("kNN graph: cannot keep %s (%s); it will be rebuilt next time", path, e)
        return g

    return _memo(("knn", dataset.fingerprint, modality, k, norm, weighted), build)


def _load_graph(path: Path, key: dict) -> torch.Tensor | None:
    """The kNN graph cached at ``path``; None (reported in one line, file removed) if it is unusable."""
    try:
        entry = cachefile.load(path, map_location="cpu")
        if not isinstance(entry, dict) or entry.get("key") != key:
            raise ValueError("its stored key does not match")
        idx, vals, shape = entry["indices"], entry["values"], tuple(entry["shape"])
        if idx.dim() != 2 or idx.shape[0] != 2 or vals.shape != (idx.shape[1],) or not torch.isfinite(vals).all():
            raise ValueError("malformed entries")
        if idx.numel() and (idx.min() < 0 or idx.max() >= shape[0]):
            raise ValueError("indices out of range")
        return torch.sparse_coo_tensor(idx, vals, shape, check_invariants=False).coalesce()
    except (cachefile.UnusableFile, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("kNN graph: cache file %s is unusable (%s); rebuilding it", path, e)
        path.unlink(missing_ok=True)
        return None


def normalized_interactions(dataset: Dataset) -> torch.Tensor:
    """The user→item block of D^-½ A D^-½ (no self-loops): U×I with entries 1/√(d_u d_i) (MGCN's R̃)."""

    def build() -> torch.Tensor:
        r = sp.csr_matrix(dataset.train, dtype=np.float32)
        with np.errstate(divide="ignore"):
            du, di = (np.where(d > 0, d ** -0.5, 0.0) for d in (np.asarray(r.sum(1)).ravel(), np.asarray(r.sum(0)).ravel()))
        return to_torch_sparse(sp.diags(du) @ r @ sp.diags(di))

    return _memo(("ui", dataset.fingerprint), build)


def spmm(a: torch.Tensor, x: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """a @ x for a constant sparse ``a`` whose transpose ``a_t`` is given (pass ``a`` itself when it is
    symmetric): the backward is then one SpMM, where torch's own transposes the matrix every call
    (a sort of all entries: ~6× slower for a CSR matrix on the Baby graph)."""
    return _FixedSpMM.apply(x, a, a_t)


class _FixedSpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.a_t = a_t
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return torch.sparse.mm(ctx.a_t, grad), None, None


# --------------------------------------------------------------------------------------------------
# Attention over a fixed edge pattern (GRCN): per-edge scores, per-target softmax and weighted sums as
# torch.sparse kernels. SDDMM / CSR SpMM are several times faster on CPU than gathering one row per
# edge and index_add-ing it back, and the pattern is built once per dataset.


def _csr_pattern(target: torch.Tensor, source: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """(crow, col, transpose crow, transpose col, transpose permutation) of edges sorted by target."""
    crow = torch.zeros(n + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(target, minlength=n).cumsum(0)
    perm = torch.argsort(source * n + target)  # edge ids in (source, target) order
    t_crow = torch.zeros(n + 1, dtype=torch.int64)
    t_crow[1:] = torch.bincount(source, minlength=n).cumsum(0)
    return crow, source.clone(), t_crow, target[perm].clone(), perm


class EdgeGraph(torch.nn.Module):
    """A fixed directed edge set on ``n`` nodes (edges sorted by target, then source) for attention
    message passing: ``scores`` (⟨x_target, y_source⟩ per edge), ``softmax`` (over each target's
    incoming edges) and ``propagate`` (out_t = Σ_e w_e x_source(e)), differentiable in the weights and
    the node matrix. An ``nn.Module`` with buffers only, so it moves with its backbone."""

    def __init__(self, target: torch.Tensor, source: torch.Tensor, n: int, values: torch.Tensor | None = None) -> None:
        super().__init__()
        order = torch.argsort(target * n + source)
        target, source = target[order], source[order]
        self.n = n
        crow, col, t_crow, t_col, t_perm = _csr_pattern(target, source, n)
        for name, t in dict(target=target, source=source, crow=crow, col=col, t_crow=t_crow, t_col=t_col,
                            t_perm=t_perm).items():
            self.register_buffer(name, t, persistent=False)
        #: fixed edge weights for :meth:`mm` (None unless ``values`` were given)
        self.register_buffer("weight", None if values is None else values[order], persistent=False)

    @classmethod
    def from_sparse(cls, adj: torch.Tensor) -> EdgeGraph:
        """A square sparse matrix as an EdgeGraph with its values as fixed weights: ``g.mm(x)`` is
        ``adj @ x`` with a transpose built once (torch's CSR backward re-transposes every call)."""
        adj = adj.coalesce()
        return cls(adj.indices()[0], adj.indices()[1], adj.shape[0], adj.values())

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        """A @ x with the fixed weights given at construction."""
        if self.weight is None:
            raise ValueError("EdgeGraph.mm needs fixed weights: build it with EdgeGraph.from_sparse")
        return self.propagate(self.weight, x)

    @property
    def n_edges(self) -> int:
        return self.target.numel()

    def matrix(self, weights: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """The n×n CSR matrix with ``weights`` (one per edge, in edge order) at (target, source)."""
        if transpose:
            return torch.sparse_csr_tensor(self.t_crow, self.t_col, weights[self.t_perm], (self.n, self.n),
                                           check_invariants=False)
        return torch.sparse_csr_tensor(self.crow, self.col, weights, (self.n, self.n), check_invariants=False)

    def scores(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """⟨x_target(e), y_source(e)⟩ for every edge (y = x when None), by SDDMM."""
        return _EdgeSDDMM.apply(x, x if y is None else y, self)

    def softmax(self, logits: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax of per-edge logits over each target's incoming edges; edges with ``keep`` False get
        weight 0 and do not count (a target without kept edges gets none, never NaN)."""
        top = torch.zeros(self.n, dtype=logits.dtype, device=logits.device)
        top = top.scatter_reduce(0, self.target, logits.detach(), "amax", include_self=False)
        e = (logits - top.index_select(0, self.target)).exp()
        if keep is not None:
            e = e * keep
        total = torch.zeros_like(top).index_add(0, self.target, e)
        return e / total.index_select(0, self.target).clamp_min(torch.finfo(e.dtype).tiny)

    def propagate(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out_t = Σ_{e: s→t} w_e x_s (n × d), differentiable in ``weights`` and ``x``."""
        return _EdgeSpMM.apply(weights, x, self)


class _EdgeSpMM(torch.autograd.Function):
    """A(w) @ x on a fixed CSR pattern; backward: ∂w = SDDMM(pattern, grad, xᵀ), ∂x = A(w)ᵀ @ grad."""

    @staticmethod
    def forward(ctx, weights: torch.Tensor, x: torch.Tensor, g: EdgeGraph) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(weights, x)
        ctx.graph = g
        return torch.sparse.mm(g.matrix(weights), x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        weights, x = ctx.saved_tensors
        g: EdgeGraph = ctx.graph
        grad_w = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_w = g.scores(grad.contiguous(), x)
        if ctx.needs_input_grad[1]:
            grad_x = torch.sparse.mm(g.matrix(weights, transpose=True), grad)
        return grad_w, grad_x, None


class _EdgeSDDMM(torch.autograd.Function):
    """⟨x_target(e), y_source(e)⟩ per edge; backward ∂x = A(grad) @ y, ∂y = A(grad)ᵀ @ x on the fixed
    CSR patterns (torch's own SDDMM backward transposes the sparse matrix and runs dense @ sparse: ~4×
    slower on the Baby graph)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, g: EdgeGraph) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, y)
        ctx.graph = g
        pattern = g.matrix(torch.zeros(g.n_edges, dtype=x.dtype, device=x.device))
        return torch.sparse.sampled_addmm(pattern, x, y.T, beta=0.0).values()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, y = ctx.saved_tensors
        g: EdgeGraph = ctx.graph
        grad = grad.contiguous()
        grad_x = torch.sparse.mm(g.matrix(grad), y) if ctx.needs_input_grad[0] else None
        grad_y = torch.sparse.mm(g.matrix(grad, transpose=True), x) if ctx.needs_input_grad[1] else None
        return grad_x, grad_y, None


def dataset_edge_graph(dataset: Dataset) -> EdgeGraph:
    """The bidirectional user–item :class:`EdgeGraph` (items offset by n_users; no self-loops), a fresh
    module per call (so each backbone moves its own) over a memoised edge list."""
    e = edge_index(dataset, undirected=True)
    return EdgeGraph(e[1], e[0], dataset.n_users + dataset.n_items)


def node_rows(
    z: torch.Tensor, n_users: int, users: torch.Tensor | None, items: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a (U+I)-row node matrix (users first) into the requested user and item rows (all when None)."""
    user, item = z[:n_users], z[n_users:]
    return rows(user, users), rows(item, items)
