"""SMORE (spectrum-based modality fusion) after MMRec's port of the official code, enoche/MMRec
``src/models/smore.py`` with ``src/configs/model/SMORE.yaml``; docs/backbones.md#smore.

* Parameters (in this order): P (U×d), Q (I×d) Xavier-uniform; the raw feature tables F^m, trainable and
  initialised from the data (the reference's ``freeze=False``); per modality a projection W_m: d_m→d, an
  attention query q_m(·) = Linear(d,d,no bias)(tanh(Linear(d,d)(·))), a gate g_m, then the fusion gate
  g_f, the preference gates p_m and p_f (all d→d + sigmoid), and the complex spectral filters c_m and
  c_f (1 × (d/2+1), standard normal), as the reference (two modalities there; any number here).
* Graphs (built once per dataset): Ã = D^-½ A D^-½ (no self-loops), its user→item block R̃, per modality the
  kNN graph S^m of the initial raw features (top-k cosine neighbours with k = ``image_knn_k`` for visual,
  ``text_knn_k`` for text, self included, cosine weights, D^-½ S D^-½), and the fusion graph S^f, the
  element-wise maximum of the S^m over the union of their edges.
* Forward:

      spectrum:  X^m = rfft(W_m F^m) (over the d features, orthonormal)
                 conv_m = irfft(X^m ⊙ c_m);  conv_f = irfft(Π_m X^m ⊙ c_f)
      item views h^m = Q ⊙ g_m(conv_m), h^f = Q ⊙ g_f(conv_f), each propagated n_layers times over its
                 graph (S^m, S^f); V^k = [R̃ h^k ; h^k]
      content    C = mean of the LightGCN layers 0..n_ui_layers of [P ; Q] over Ã
      side       = mean over k ∈ {m…, f} of dropout(p_k(C)) ⊙ a_k,  a_m = softmax_d(q_m(V^f)) ⊙ V^m,  a_f = V^f
      representation = C + side;  score = inner product

* Auxiliary loss (:meth:`aux_loss`): ``cl_weight`` · [InfoNCE(side, C) over the batch's positive items +
  over its users], cosine similarity, temperature ``cl_temperature`` (as MGCN's); it reuses the views of
  the training pass just made. The base loss is BPR + ``train.l2`` (the reference's reg_weight term).
* Dropout (``dropout``, the reference's dropout_rate) on the preference gates in training, with torch's RNG;
  a multi-pass step (CKD, GB, OGM) shares one draw. The FFT runs in float32 on CPU and CUDA (outside
  autocast: bf16 has no FFT).

Ablating m: F^m → its (current) item mean, so X^m is the same for every item (and enters conv_f as a
constant), and every graph built from m's features is the one a kNN construction gives for identical
features (every similarity ties: each item receives the mean over items, J/n): S^m → J/n, and the fusion
graph → the element-wise maximum with J/n in place of S^m, i.e. J/n + relu(max over the kept modalities
of S^k − 1/n) on their edges (J/n when all are ablated). Keeping either graph would leak m.

``modality_parameters``: m owns F^m, W_m, c_m, g_m, q_m and p_m; P, Q and the fusion branch
(c_f, g_f, p_f) are shared.
"""

from __future__ import annotations

from itertools import combinations
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mbrec.backbones import graph
from mbrec.backbones.base import Backbone, embedding_table, register
from mbrec.backbones.mgcn import info_nce
from mbrec.data.dataset import Dataset
from mbrec.data.sampling import Batch


def _gate(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


def _query(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d, bias=False))


def max_union(graphs: list[torch.Tensor], floor: float | None = None) -> torch.Tensor:
    """Element-wise maximum of sparse n×n matrices over the union of their entries (an entry missing from
    one counts as −inf, as the reference's max-pool fusion); with ``floor`` the result is
    max(entry, floor) − floor, the sparse part of max(J·floor, ·)."""
    n = graphs[0].shape[0]
    idx = torch.cat([g.coalesce().indices() for g in graphs], 1)
    val = torch.cat([g.coalesce().values() for g in graphs])
    key, inverse = torch.unique(idx[0] * n + idx[1], return_inverse=True)
    top = torch.full((key.numel(),), float("-inf")).scatter_reduce(0, inverse, val, "amax")
    if floor is not None:
        top = (top - floor).clamp_min(0.0)
    return torch.sparse_coo_tensor(torch.stack([key // n, key % n]), top, (n, n), check_invariants=False).coalesce()


def spectrum(x: torch.Tensor) -> torch.Tensor:
    """rfft over the feature dimension (orthonormal), in float32 outside autocast (CPU and CUDA)."""
    with torch.autocast(x.device.type, enabled=False):
        return torch.fft.rfft(x.float(), dim=1, norm="ortho")


@register("smore")
class SMORE(Backbone):
    uses_features = True
    search_space: ClassVar = {  # SMORE.yaml: n_ui_layers x image_knn_k x text_knn_k x reg_weight x dropout_rate
        "backbone.n_ui_layers": [3, 4],
        "backbone.image_knn_k": [10, 15, 20, 40],
        "backbone.text_knn_k": [10, 15, 20, 40],
        "train.l2": [1e-5, 1e-4],
        "backbone.dropout": [0.0, 0.1],
    }

    def __init__(
        self,
        dataset: Dataset,
        embedding_dim: int = 64,
        n_ui_layers: int = 3,
        n_layers: int = 1,
        image_knn_k: int = 10,
        text_knn_k: int = 10,
        cl_weight: float = 0.01,
        cl_temperature: float = 0.2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dataset)
        knn = {"visual": int(image_knn_k), "text": int(text_knn_k)}
        other = [m for m in self.modalities if m not in knn]
        if other:
            raise ValueError(f"backbone=smore: modalities {other} have no kNN size (image_knn_k is visual's, "
                             "text_knn_k is text's); use a dataset with visual and/or text features")
        d = embedding_dim
        self.n_ui_layers, self.n_layers = int(n_ui_layers), int(n_layers)
        self.cl_weight, self.cl_temperature, self.dropout = float(cl_weight), float(cl_temperature), float(dropout)
        self.user_id = embedding_table(self.n_users, d)
        self.item_id = embedding_table(self.n_items, d)
        self.train_features()  # F^m: parameters features.<m>, initialised from the data (freeze=False)
        self.projection = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], d) for m in self.modalities})
        self.query = nn.ModuleDict({m: _query(d) for m in self.modalities})
        self.gate = nn.ModuleDict({m: _gate(d) for m in self.modalities})
        self.fusion_gate = _gate(d)
        self.preference_gate = nn.ModuleDict({m: _gate(d) for m in self.modalities})
        self.fusion_preference_gate = _gate(d)
        self.spectral_filter = nn.ParameterDict({m: nn.Parameter(torch.randn(1, d // 2 + 1, 2)) for m in self.modalities})
        self.fusion_filter = nn.Parameter(torch.randn(1, d // 2 + 1, 2))

        self.register_buffer("adj", graph.normalized_adjacency(dataset, "sym", self_loops=False).to_sparse_csr(), persistent=False)
        sparse = {"user_item": graph.normalized_interactions(dataset)}
        item_graphs = {m: graph.dataset_knn_graph(dataset, m, min(knn[m], self.n_items), "sym", weighted=True)
                       for m in self.modalities}
        sparse.update({f"item_graph_{m}": g for m, g in item_graphs.items()})
        # the fusion graph for every set of kept (not ablated) modalities: max-union; with some ablated,
        # its part above the uniform J/n of the ablated ones
        n_mod = len(self.modalities)
        for r in range(1, n_mod + 1):
            for kept in combinations(self.modalities, r):
                floor = None if r == n_mod else 1.0 / self.n_items
                sparse[self._fusion_key(frozenset(kept))] = max_union([item_graphs[m] for m in kept], floor)
        for key, a in sparse.items():
            self.register_buffer(key, a.to_sparse_csr(), persistent=False)
            self.register_buffer(f"{key}_t", a.t().coalesce().to_sparse_csr(), persistent=False)
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None

    def _fusion_key(self, kept: frozenset[str]) -> str:
        return "fusion_graph_" + "_".join(m for m in self.modalities if m in kept)

    def _spmm(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return graph.spmm(getattr(self, key), x, getattr(self, f"{key}_t"))

    # -- parts --------------------------------------------------------------------------------------
    def _content(self) -> torch.Tensor:
        layers = [torch.cat([self.user_id, self.item_id], 0)]
        for _ in range(self.n_ui_layers):
            layers.append(graph.spmm(self.adj, layers[-1], self.adj))
        return torch.stack(layers).mean(0)

    def _preferences(self, content: torch.Tensor) -> list[torch.Tensor]:
        """dropout(p_k(C)) for each modality, then the fusion branch (the reference's draw order)."""
        gates = [*(self.preference_gate[m](content) for m in self.modalities), self.fusion_preference_gate(content)]
        return [F.dropout(g, self.dropout, self.training) for g in gates]

    def _irfft(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return torch.fft.irfft(x * torch.view_as_complex(weight.float()), n=self.item_id.shape[1], dim=1, norm="ortho")

    def _item_view(self, key: str, h: torch.Tensor, ablated: bool, uniform: bool = False) -> torch.Tensor:
        """[R̃ h ; h] after n_layers steps over the graph ``key`` (over J/n when ``ablated``; over
        J/n + the graph when ``uniform``)."""
        for _ in range(self.n_layers):
            if ablated:
                h = h.mean(0, keepdim=True).expand(self.n_items, -1)
            elif uniform:
                h = h.mean(0, keepdim=True) + self._spmm(key, h)
            else:
                h = self._spmm(key, h)
        return torch.cat([self._spmm("user_item", h), h], 0)

    def _propagate(self, ablate: frozenset[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(representation, side, content) for every node, users first."""
        content = self.memo.get("content", self._content)
        preferences = self.memo.get("preferences", lambda: self._preferences(content))
        spectra = {m: spectrum(self.item_input(m, ablate, None, self.projection[m])) if m in ablate
                   else self.memo.get(("spectrum", m), lambda m=m: spectrum(self.projection[m](self.feature(m))))
                   for m in self.modalities}

        def view(m: str) -> torch.Tensor:
            h = self.item_id * self.gate[m](self._irfft(spectra[m], self.spectral_filter[m]))
            return self._item_view(f"item_graph_{m}", h, m in ablate)

        views = {m: view(m) if m in ablate else self.memo.get(("view", m), lambda m=m: view(m)) for m in self.modalities}
        product = spectra[self.modalities[0]]
        for m in self.modalities[1:]:
            product = product * spectra[m]
        fused = self.item_id * self.fusion_gate(self._irfft(product, self.fusion_filter))
        kept = frozenset(self.modalities) - ablate
        fusion = self._item_view(self._fusion_key(kept), fused, ablated=not kept, uniform=bool(ablate) and bool(kept))
        parts = [preferences[k] * torch.softmax(self.query[m](fusion), -1) * views[m] for k, m in enumerate(self.modalities)]
        side = torch.stack([*parts, preferences[-1] * fusion]).mean(0)
        return content + side, side, content

    def encode(
        self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z, side, content = self._propagate(ablate)
        # kept for aux_loss (the objective calls it right after this pass); not in eval / no_grad
        self._views = (side, content) if self.training and torch.is_grad_enabled() else None
        return graph.node_rows(z, self.n_users, users, items)

    def aux_loss(self, batch: Batch) -> torch.Tensor | None:
        """SMORE's contrastive term between the side and content views of the batch's positive items and
        users (weighted by ``cl_weight``)."""
        if self.cl_weight == 0:
            return None
        side, content = self._views if self._views is not None else self._propagate(frozenset())[1:]
        self._views = None
        loss = sum(info_nce(side.index_select(0, rows), content.index_select(0, rows), self.cl_temperature)
                   for rows in (batch.pos + self.n_users, batch.users))
        return self.cl_weight * loss

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {
            m: [self.features[m], *self.projection[m].parameters(), self.spectral_filter[m], *self.gate[m].parameters(),
                *self.query[m].parameters(), *self.preference_gate[m].parameters()]
            for m in self.modalities
        }
