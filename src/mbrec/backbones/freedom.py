"""FREEDOM (frozen item–item graph + denoised user–item graph) after enoche/MMRec ``src/models/freedom.py``
and ``src/configs/model/FREEDOM.yaml``; docs/backbones.md#freedom.

* Parameters, in this order: P (U×d), Q (I×d) Xavier-uniform; the raw feature tables Fᵐ, trainable and
  initialised from the data (the reference's ``nn.Embedding.from_pretrained(freeze=False)``); one
  projection Wₘ: dₘ→d per modality (PyTorch's default init).
* Graphs, built once per dataset (``mbrec.backbones.graph``, kept in the on-disk cache): Ã = D^-½ A D^-½
  (bipartite, no self-loops); per modality the kNN graph Sᵐ of the *initial* raw features (top-``knn_k``
  cosine neighbours, self included, binary, each entry 1/k: the reference's row-sum normalisation), mixed
  S = Σₘ wₘ Sᵐ with ``graph_weights`` (the reference's ``mm_image_weight`` 0.1: visual 0.1, text 0.9).
* Forward: h = S^n_mm_layers Q; LightGCN mean of layers 0..n_ui_layers on [P ; Q] over Ã in evaluation,
  over the *pruned* graph in training; u = user rows, i = item rows + h; score = u · i (the reference's
  ``full_sort_predict``).
* Degree-sensitive edge pruning (:meth:`on_epoch_start`, the reference's ``pre_epoch_processing``): each
  epoch keeps ⌊E (1 − ``dropout``)⌋ training edges drawn without replacement with probability ∝
  1/√(d_u d_i) (torch's RNG) and re-normalises them symmetrically.
* Objective (:meth:`objective`): BPR on the scores + the trainer's L2 (``train.l2``; the reference has
  none, set ``train.l2=0`` for it) + ``reg_weight`` · Σₘ BPR(u, Wₘ Fᵐ_i, Wₘ Fᵐ_j) (the reference's
  per-modality BPR terms, which train the projections).

Ablating m (``ablated_item_graph``, as MGCN): Sᵐ is replaced by the graph a kNN construction builds from
the mean-ablated (identical) features, the complete graph with equal weights (``uniform``: every item
receives the item mean), or by no smoothing (``identity``); ``keep`` leaks m and only demonstrates the leak.
m's BPR term is dropped from the loss of a pass that ablates m. The score reads the features only through
Sᵐ, so nothing else of m reaches it.

``modality_parameters``: m owns Fᵐ and Wₘ (they enter only m's BPR term); P and Q are shared.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mbrec.backbones import graph
from mbrec.backbones.base import Backbone, check_choice, embedding_table, register
from mbrec.data.dataset import Dataset

ABLATED_GRAPHS = ("uniform", "identity", "keep")


def graph_mixture(weights: Mapping[str, float], modalities: tuple[str, ...]) -> dict[str, float]:
    """Each modality's weight in S = Σₘ wₘ Sᵐ, normalised over the dataset's modalities (one modality:
    weight 1, as the reference with one feature file). A modality without a weight is refused."""
    missing = [m for m in modalities if m not in weights]
    if missing:
        raise ValueError(f"backbone.graph_weights={dict(weights)} has no weight for {missing}: add e.g. "
                         f"backbone.graph_weights.{missing[0]}=0.5")
    total = sum(float(weights[m]) for m in modalities)
    if not total > 0 or any(float(weights[m]) < 0 for m in modalities):
        raise ValueError(f"backbone.graph_weights={dict(weights)}: use weights >= 0 with a positive sum")
    return {m: float(weights[m]) / total for m in modalities}


@register("freedom")
class FREEDOM(Backbone):
    uses_features = True
    #: the reference grid (FREEDOM.yaml ``hyper_parameters``)
    search_space = {"backbone.dropout": [0.8, 0.9], "backbone.reg_weight": [0.0, 1e-5, 1e-4, 1e-3]}

    def __init__(
        self,
        dataset: Dataset,
        embedding_dim: int = 64,
        knn_k: int = 10,
        n_mm_layers: int = 1,
        n_ui_layers: int = 2,
        reg_weight: float = 1e-4,
        dropout: float = 0.8,
        graph_weights: Mapping[str, float] = {"visual": 0.1, "text": 0.9},  # noqa: B006 - a config default
        ablated_item_graph: str = "uniform",
    ) -> None:
        super().__init__(dataset)
        check_choice("ablated_item_graph", ablated_item_graph, ABLATED_GRAPHS)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"backbone.dropout={dropout!r}: use a fraction of edges to drop in [0, 1)")
        d = embedding_dim
        self.n_mm_layers, self.n_ui_layers = int(n_mm_layers), int(n_ui_layers)
        self.reg_weight, self.dropout, self.ablated_item_graph = float(reg_weight), float(dropout), ablated_item_graph
        self.weights = graph_mixture(graph_weights, self.modalities)

        self.user_id = embedding_table(self.n_users, d)
        self.item_id = embedding_table(self.n_items, d)
        self.train_features()  # Fᵐ: parameters features.<m>, initialised from the data
        self.projection = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], d) for m in self.modalities})

        adj = graph.normalized_adjacency(dataset, "sym", self_loops=False)
        self.register_buffer("adj", adj.to_sparse_csr(), persistent=False)  # symmetric: its own transpose
        knn = {m: graph.dataset_knn_graph(dataset, m, knn_k, "sym") for m in self.modalities}
        mixed = knn[self.modalities[0]] * self.weights[self.modalities[0]]
        for m in self.modalities[1:]:
            mixed = mixed + knn[m] * self.weights[m]
        mixed = mixed.coalesce()
        for key, a in {"item_graph": mixed, **{f"item_graph_{m}": knn[m] for m in self.modalities}}.items():
            self.register_buffer(key, a.to_sparse_csr(), persistent=False)
            self.register_buffer(f"{key}_t", a.t().coalesce().to_sparse_csr(), persistent=False)
        # the training edges (user, item) and their pruning probabilities 1/√(d_u d_i)
        coo = dataset.train.tocoo()
        users, items = (torch.from_numpy(x.astype(np.int64)) for x in (coo.row, coo.col))
        self.register_buffer("edge_users", users, persistent=False)
        self.register_buffer("edge_items", items, persistent=False)
        self.register_buffer("edge_values", self._edge_norm(users, items), persistent=False)
        self._pruned: torch.Tensor | None = None

    # -- graphs ------------------------------------------------------------------------------------
    def _edge_norm(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """1/√(d_u d_i) of each edge, degrees counted over the given edges (+1e-7 as the reference)."""
        du = torch.bincount(users, minlength=self.n_users).to(torch.float32) + 1e-7
        di = torch.bincount(items, minlength=self.n_items).to(torch.float32) + 1e-7
        return du.pow(-0.5).index_select(0, users) * di.pow(-0.5).index_select(0, items)

    def on_epoch_start(self, epoch: int) -> None:
        """Degree-sensitive edge pruning: a new pruned user–item graph for the epoch."""
        self._pruned = self._prune()

    def _prune(self) -> torch.Tensor:
        if self.dropout <= 0:
            return self.adj
        keep = torch.multinomial(self.edge_values, int(self.edge_values.numel() * (1.0 - self.dropout)))
        users, items = self.edge_users.index_select(0, keep), self.edge_items.index_select(0, keep)
        values = self._edge_norm(users, items)
        n = self.n_users + self.n_items
        idx = torch.stack([torch.cat([users, items + self.n_users]), torch.cat([items + self.n_users, users])])
        a = torch.sparse_coo_tensor(idx, torch.cat([values, values]), (n, n), check_invariants=False)
        return a.coalesce().to_sparse_csr()

    def _content(self) -> torch.Tensor:
        """LightGCN over Ã (evaluation) or the epoch's pruned graph (training): mean of layers 0..n_ui_layers."""
        if self.training:
            if self._pruned is None or self._pruned.device != self.item_id.device:
                self._pruned = self._prune()
            a = self._pruned
        else:
            a = self.adj
        layers = [torch.cat([self.user_id, self.item_id], 0)]
        for _ in range(self.n_ui_layers):
            layers.append(graph.spmm(a, layers[-1], a))
        return torch.stack(layers).mean(0)

    def _item_view(self, ablate: frozenset[str]) -> torch.Tensor:
        """h = S^n_mm_layers Q with the ablated modalities' graphs replaced (``ablated_item_graph``)."""
        h = self.item_id
        replaced = [m for m in self.modalities if m in ablate and self.ablated_item_graph != "keep"]
        for _ in range(self.n_mm_layers):
            if not replaced:
                h = graph.spmm(self.item_graph, h, self.item_graph_t)
                continue
            out = 0.0
            for m in self.modalities:
                if m not in replaced:
                    out = out + self.weights[m] * graph.spmm(getattr(self, f"item_graph_{m}"), h, getattr(self, f"item_graph_{m}_t"))
                elif self.ablated_item_graph == "uniform":
                    out = out + self.weights[m] * h.mean(0, keepdim=True)
                else:  # identity
                    out = out + self.weights[m] * h
            h = out
        return h

    def encode(
        self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.memo.get("content", self._content)
        key = frozenset(m for m in ablate if self.ablated_item_graph != "keep")
        h = self.memo.get(("items", key), lambda: self._item_view(ablate))
        return graph.node_rows(torch.cat([z[: self.n_users], z[self.n_users :] + h], 0), self.n_users, users, items)

    # -- loss --------------------------------------------------------------------------------------
    def objective(self, batch_pass, l2: float) -> dict[str, torch.Tensor]:
        """BPR + the trainer's L2 + ``reg_weight`` · Σₘ BPR(u, Wₘ Fᵐ_i, Wₘ Fᵐ_j) over the modalities the
        pass does not ablate."""
        p = batch_pass  # BPR and L2 as mbrec.training.objective's bpr_loss / l2_loss (a lower layer here)
        sq = p.user.pow(2).sum() + p.pos.pow(2).sum() + p.neg.pow(2).sum()
        terms = {"bpr": -F.logsigmoid(p.margin).mean(), "l2": l2 * 0.5 * sq / len(p.batch)}
        kept = [m for m in self.modalities if m not in p.ablate]
        if self.reg_weight and kept:
            b = p.batch
            modal = 0.0
            both = torch.cat([b.pos, b.neg])  # one gather per table: its backward fills one I × dₘ gradient, not two
            for m in kept:
                pos, neg = self.projection[m](self.feature(m).index_select(0, both)).split(len(b))
                modal = modal - F.logsigmoid((p.user * (pos - neg)).sum(-1)).mean()
            terms["modal"] = self.reg_weight * modal
        return terms

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {m: [self.features[m], *self.projection[m].parameters()] for m in self.modalities}
