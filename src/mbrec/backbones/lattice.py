"""LATTICE (latent item–item structure learned from the features) after MMRec's port,
enoche/MMRec ``src/models/lattice.py`` with ``src/configs/model/LATTICE.yaml``; docs/backbones.md#lattice.

* Parameters (in this order): P (U×d), Q (I×d) Xavier-uniform; the raw feature tables F^m, trainable
  and initialised from the data (the reference's ``freeze=False``); projections W_m: d_m→d_f
  (PyTorch's default init); the modality weights ``modal_weight`` (one per modality, 0.5 each for two).
* Graphs: per modality the *initial* kNN graph Ŝ^m of the raw features (top-``knn_k`` cosine neighbours,
  self included, cosine weights, D^-½ S D^-½; built once per dataset by ``mbrec.backbones.graph``), and
  the *learned* kNN graph S^m of the projected features W_m F^m (top-``knn_k`` cosine weights, not yet
  normalised). With w = softmax(modal_weight):

      A_item = (1 − λ) · norm(Σ_m w_m S^m) + λ · Σ_m w_m Ŝ^m          (norm = D^-½ · D^-½, D the row sums)
      h = A_item^n_layers Q
      [u ; i_cf] = mean of the LightGCN layers 0..n_ui_layers of [P ; Q] over D⁻¹(A + I)
      user = u;  item = i_cf + normalize(h);  score = inner product

  ``cf_model: mf`` uses [P ; Q] in place of the LightGCN mean (the reference's ``mf``).
* When the learned graph is built (as the reference): at the first training step of every epoch
  (:meth:`on_epoch_start`), *with* gradients into W_m, F^m and the modality weights; the later steps of the
  epoch reuse it detached; every evaluation builds it afresh from the current weights.
  The reference builds dense n_items² similarity, kNN and normalisation matrices; here the kNN indices come
  from row chunks (memory O(chunk × n_items)), their cosine values are recomputed differentiably for the
  k selected pairs only, and A_item is applied as gathers over the k neighbours of each row: the same
  operator (docs/backbones.md#lattice), never an n_items² matrix.

Ablating m: F^m → its (current) item mean, so W_m F^m is the same for every item. The graphs of m are
those a kNN construction gives for identical features: every similarity ties, so every item has every
item as a neighbour with equal weight — S^m = (k/n)·J (row sums k, as a real kNN graph of cosine 1) and
Ŝ^m = J/n. Keeping m's graphs would leak m into the counterfactual pass (as MGCN's
``ablated_item_graph: keep``). ``modal_weight`` is shared and stays.

``modality_parameters``: m owns F^m and W_m; P, Q and ``modal_weight`` are shared.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mbrec.backbones import graph
from mbrec.backbones.base import Backbone, check_choice, embedding_table, register
from mbrec.data.dataset import Dataset

#: rows of the learned similarity computed at once (memory chunk × n_items floats)
CHUNK = 1024


def knn_indices(x: torch.Tensor, k: int, chunk: int = CHUNK) -> torch.Tensor:
    """n × k indices of each row's k largest inner products with all rows (self included for unit
    rows), computed in row chunks without gradients: memory O(chunk × n)."""
    with torch.no_grad():
        return torch.cat([(x[s : s + chunk] @ x.T).topk(k, dim=1).indices for s in range(0, x.shape[0], chunk)])


def gather_mm(index: torch.Tensor, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """S @ x for a graph with exactly k entries per row: (S x)_i = Σ_j values[i, j] · x[index[i, j]];
    differentiable in ``values`` and ``x``."""
    n, k = index.shape
    return (values.unsqueeze(-1) * x.index_select(0, index.reshape(-1)).view(n, k, -1)).sum(1)


@register("lattice")
class LATTICE(Backbone):
    uses_features = True
    search_space: ClassVar = {  # LATTICE.yaml: reg_weight x learning_rate
        "train.l2": [0.0, 1e-5, 1e-4, 1e-3],
        "optimizer.lr": [1e-4, 5e-4, 1e-3, 5e-3],
    }

    def __init__(
        self,
        dataset: Dataset,
        embedding_dim: int = 64,
        feat_embed_dim: int = 64,
        n_ui_layers: int = 2,
        n_layers: int = 1,
        knn_k: int = 10,
        lambda_coeff: float = 0.9,
        cf_model: str = "lightgcn",
    ) -> None:
        super().__init__(dataset)
        check_choice("cf_model", cf_model, ("lightgcn", "mf"))
        d = embedding_dim
        self.n_ui_layers, self.n_layers, self.knn_k = int(n_ui_layers), int(n_layers), min(int(knn_k), self.n_items)
        self.lambda_coeff, self.cf_model = float(lambda_coeff), cf_model
        self.user_id = embedding_table(self.n_users, d)
        self.item_id = embedding_table(self.n_items, d)
        self.train_features()  # F^m: parameters features.<m>, initialised from the data (freeze=False)
        self.projection = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], feat_embed_dim) for m in self.modalities})
        self.modal_weight = nn.Parameter(torch.full((len(self.modalities),), 1.0 / len(self.modalities)))
        self.register_buffer("adj", graph.normalized_adjacency(dataset, "row", self_loops=True).to_sparse_csr(), persistent=False)
        self.register_buffer("adj_t", graph.normalized_adjacency(dataset, "row", self_loops=True).t().coalesce().to_sparse_csr(),
                             persistent=False)
        for m in self.modalities:
            s = graph.dataset_knn_graph(dataset, m, self.knn_k, "sym", weighted=True)
            self.register_buffer(f"item_graph_{m}", s.to_sparse_csr(), persistent=False)
            self.register_buffer(f"item_graph_{m}_t", s.t().coalesce().to_sparse_csr(), persistent=False)
        #: the learned kNN graph of each modality built at the epoch's first step, detached: (index, values)
        self._learned: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._stale: set[str] = set(self.modalities)  # modalities whose learned graph is rebuilt at next use

    def on_epoch_start(self, epoch: int) -> None:
        """The reference's ``pre_epoch_processing``: rebuild the learned graphs at the next training step."""
        self._stale = set(self.modalities)

    # -- the learned item graph ---------------------------------------------------------------------
    def _build(self, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """m's learned kNN graph from the current weights: (n × k indices, n × k cosine values)."""
        x = F.normalize(self.projection[m](self.feature(m)), dim=1)
        index = knn_indices(x, self.knn_k)
        values = (x.unsqueeze(1) * x.index_select(0, index.reshape(-1)).view(*index.shape, -1)).sum(-1)
        return index, values

    def _learned_graph(self, m: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(index, values, fresh): built now with gradients at the epoch's first training step (then kept
        detached for the rest of the epoch); always built afresh outside training."""
        if not (self.training and torch.is_grad_enabled()):
            return (*self._build(m), True)
        if m in self._stale or m not in self._learned or self._learned[m][0].device != self.item_id.device:
            index, values = self._build(m)
            self._learned[m] = (index, values.detach())
            self._stale.discard(m)
            return index, values, True
        return (*self._learned[m], False)

    def _item_graph_op(self, ablate: frozenset[str]):
        """y ↦ A_item y for this ablation (docs/backbones.md#lattice)."""
        n, k = self.n_items, self.knn_k
        learned = {m: self.memo.get(("learned", m), lambda m=m: self._learned_graph(m)) for m in self.modalities if m not in ablate}
        w = torch.softmax(self.modal_weight, 0)
        if not any(fresh for _, _, fresh in learned.values()):
            w = w.detach()  # the reference detaches the whole item graph between rebuilds
        weight = dict(zip(self.modalities, w))
        deg = sum(weight[m] * (learned[m][1].sum(1) if m in learned else torch.full_like(self.item_id[:, 0], float(k)))
                  for m in self.modalities)
        d = deg.pow(-0.5)
        d = torch.where(torch.isinf(d), torch.zeros_like(d), d).unsqueeze(1)

        def op(y: torch.Tensor) -> torch.Tensor:
            dy = d * y
            learned_y = sum(weight[m] * (gather_mm(learned[m][0], learned[m][1], dy) if m in learned
                                         else (k / n) * dy.sum(0, keepdim=True))
                            for m in self.modalities)
            original_y = sum(weight[m] * (graph.spmm(getattr(self, f"item_graph_{m}"), y, getattr(self, f"item_graph_{m}_t"))
                                          if m not in ablate else y.mean(0, keepdim=True))
                             for m in self.modalities)
            return (1 - self.lambda_coeff) * d * learned_y + self.lambda_coeff * original_y

        return op

    # -- forward ------------------------------------------------------------------------------------
    def _collaborative(self) -> torch.Tensor:
        """[u ; i_cf]: LightGCN over D⁻¹(A + I) on [P ; Q], mean of layers 0..n_ui_layers (or [P ; Q])."""
        x = torch.cat([self.user_id, self.item_id], 0)
        if self.cf_model == "mf":
            return x
        layers = [x]
        for _ in range(self.n_ui_layers):
            layers.append(graph.spmm(self.adj, layers[-1], self.adj_t))
        return torch.stack(layers).mean(0)

    def encode(
        self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.memo.get("collaborative", self._collaborative)
        op = self._item_graph_op(ablate)
        h = self.item_id
        for _ in range(self.n_layers):
            h = op(h)
        user, item = graph.node_rows(z, self.n_users, users, items)
        return user, item + F.normalize(h if items is None else h.index_select(0, items), dim=1)

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {m: [self.features[m], *self.projection[m].parameters()] for m in self.modalities}
