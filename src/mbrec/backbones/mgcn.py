"""MGCN (early fusion, graph + item–item kNN) after the official code, demonph10/MGCN ``src/models/mgcn.py``
and ``src/utils/utils.py`` (identical in MMRec); docs/backbones.md#mgcn.

* Parameters: P (U×d), Q (I×d) Xavier-uniform; the raw feature tables F^m, trainable and initialised
  from the data as in the reference (``trainable_features``); projections W_m: d_m→d; purifier gates
  G_m and preference gates G'_m (d→d + sigmoid, one per modality); the attention query
  q(·) = Linear(d,1,no bias)(tanh(Linear(d,d)(·))), shared by all modalities.
* Graphs, built once per dataset (``mbrec.backbones.graph``, memoised): Ã = D^-½ A D^-½ (bipartite,
  no self-loops), its user→item block R̃, and per modality the item–item kNN graph S^m of the *initial*
  raw features (top-``knn_k`` cosine neighbours, self included, cosine values as weights,
  D^-½ S D^-½ with D the row sums).
* Forward: purifier h^m = Q ⊙ σ(G_m(W_m F^m)); content view C = mean of LightGCN layers 0..n_ui_layers
  on [P ; Q] over Ã; item–item view h^m ← S^m h^m (``n_layers`` times), H^m = [R̃ h^m ; h^m];
  fuser: a = softmax(q(H^m) over modalities), common = Σ_m a_m H^m,
  side = (Σ_m σ(G'_m(C)) ⊙ (H^m − common) + common)/(n+1); representation C + side (d), score = dot.
* Auxiliary loss (:meth:`aux_loss`): ``cl_weight`` · [InfoNCE(side, C) over the batch's positive
  items + InfoNCE(side, C) over its users], cosine similarity, temperature ``cl_temperature``, in-batch
  negatives (duplicates included, as in the reference). It uses the views of the model's last training
  forward (the pass ``objective.base_pass`` just made), so it costs no extra propagation.

Decisions and quirks, each a config switch:

* ``fuser_softmax: modality`` (default) normalises the attention over the modalities of each node, as
  the MGCN paper writes it. The reference code applies ``Softmax(dim=0)`` to the (U+I)×n logits, i.e.
  over *all nodes* for each modality, so every weight is ≈ 1/(U+I) and "common" nearly vanishes;
  ``fuser_softmax: nodes`` reproduces that.
* ``ablated_item_graph: uniform`` (default). Ablating m replaces F^m by its current column mean;
  the kNN graph of m, however, was built from the real features, so keeping it (``keep``) would leak
  m's information into the counterfactual pass. The graph a kNN construction gives for identical
  features is the complete graph with equal weights (every similarity ties), i.e. every item receives
  the mean over items: that is ``uniform``. ``identity`` (no item–item smoothing) is the other clean
  choice; ``keep`` exists to demonstrate the leak and is not a valid CKD ablation.
* ``n + 1`` divides the side representation (the reference's 3 for two modalities).
* ``dropout`` is not in the reference (0 = reference); output dropout in training, so the paper's
  dropout grid applies. The reference's LR schedule (×0.96^(epoch/50)) and lr 1e-3 are optimizer
  settings and are not set here; its L2 (reg_weight 1e-4 on the output representations) is the
  trainer's ``train.l2``.

``modality_parameters`` (the CKD paper's "roughly dividing the parameters into two parts"): m owns F^m
(when trainable), W_m, G_m and G'_m; P, Q and the shared query are shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mbrec.backbones import graph
from mbrec.backbones.base import Backbone, check_choice, embedding_table, register
from mbrec.data.dataset import Dataset
from mbrec.data.sampling import Batch

ABLATED_GRAPHS = ("uniform", "identity", "keep")


def info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE of row i of ``view1`` against row i of ``view2``, the other rows as negatives
    (cosine similarity / temperature)."""
    a, b = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    logits = a @ b.T / temperature
    return (torch.logsumexp(logits, 1) - logits.diagonal()).mean()


def _gate(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


@register("mgcn")
class MGCN(Backbone):
    uses_features = True

    def __init__(
        self,
        dataset: Dataset,
        embedding_dim: int = 64,
        n_ui_layers: int = 2,
        n_layers: int = 1,
        knn_k: int = 10,
        cl_weight: float = 0.01,
        cl_temperature: float = 0.2,
        trainable_features: bool = True,
        fuser_softmax: str = "modality",
        ablated_item_graph: str = "uniform",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dataset)
        check_choice("fuser_softmax", fuser_softmax, ("modality", "nodes"))
        check_choice("ablated_item_graph", ablated_item_graph, ABLATED_GRAPHS)
        d = embedding_dim
        self.n_ui_layers, self.n_layers = int(n_ui_layers), int(n_layers)
        self.cl_weight, self.cl_temperature = float(cl_weight), float(cl_temperature)
        self.fuser_softmax, self.ablated_item_graph, self.dropout = fuser_softmax, ablated_item_graph, float(dropout)

        self.user_id = embedding_table(self.n_users, d)
        self.item_id = embedding_table(self.n_items, d)
        if trainable_features:
            self.train_features()  # F^m: parameters features.<m>, initialised from the data
        self.projection = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], d) for m in self.modalities})
        self.purifier = nn.ModuleDict({m: _gate(d) for m in self.modalities})
        self.preference_gate = nn.ModuleDict({m: _gate(d) for m in self.modalities})
        self.query = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))

        # CSR matrices with their transposes for graph.spmm (Ã is symmetric; R̃ and the kNN graphs are not)
        self.register_buffer("adj", graph.normalized_adjacency(dataset, "sym", self_loops=False).to_sparse_csr(), persistent=False)
        sparse = {"user_item": graph.normalized_interactions(dataset)}
        sparse.update({f"item_graph_{m}": graph.dataset_knn_graph(dataset, m, knn_k, "sym", weighted=True) for m in self.modalities})
        for key, a in sparse.items():
            self.register_buffer(key, a.to_sparse_csr(), persistent=False)
            self.register_buffer(f"{key}_t", a.t().coalesce().to_sparse_csr(), persistent=False)
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None

    def _content(self) -> torch.Tensor:
        """C: LightGCN over Ã on [P ; Q], mean of layers 0..n_ui_layers."""
        x = torch.cat([self.user_id, self.item_id], 0)
        layers = [x]
        for _ in range(self.n_ui_layers):
            layers.append(graph.spmm(self.adj, layers[-1], self.adj))
        return torch.stack(layers).mean(0)

    def _view(self, m: str, ablate: frozenset[str]) -> torch.Tensor:
        """H^m = [R̃ h^m ; h^m] after the purifier and the item–item propagation."""
        ablated = m in ablate
        h = self.item_id * self.purifier[m](self.projection[m](self.modality_input(m, ablate)))
        for _ in range(self.n_layers):
            if ablated and self.ablated_item_graph == "uniform":
                h = h.mean(0, keepdim=True).expand(self.n_items, -1)
            elif not ablated or self.ablated_item_graph == "keep":
                h = self._spmm(f"item_graph_{m}", h)
        return torch.cat([self._spmm("user_item", h), h], 0)

    def _spmm(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return graph.spmm(getattr(self, key), x, getattr(self, f"{key}_t"))

    def _propagate(self, ablate: frozenset[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(representation, side, content) for every node, users first."""
        content = self.memo.get("content", self._content)
        views = [
            self._view(m, ablate) if m in ablate else self.memo.get(("view", m), lambda m=m: self._view(m, ablate))
            for m in self.modalities
        ]
        weights = torch.softmax(torch.cat([self.query(v) for v in views], 1), dim=1 if self.fuser_softmax == "modality" else 0)
        common = sum(weights[:, k : k + 1] * v for k, v in enumerate(views))
        specific = sum(self.preference_gate[m](content) * (v - common) for m, v in zip(self.modalities, views))
        side = (specific + common) / (len(views) + 1)
        return content + side, side, content

    def encode(
        self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z, side, content = self._propagate(ablate)
        # kept for aux_loss (the objective calls it right after this pass); not in eval / no_grad
        self._views = (side, content) if self.training and torch.is_grad_enabled() else None
        z = F.dropout(z, self.dropout, self.training)
        return graph.node_rows(z, self.n_users, users, items)

    def aux_loss(self, batch: Batch) -> torch.Tensor | None:
        """MGCN's contrastive term between the side and content views of the batch's users and
        positive items (weighted by ``cl_weight``)."""
        if self.cl_weight == 0:
            return None
        side, content = self._views if self._views is not None else self._propagate(frozenset())[1:]
        self._views = None
        users, items = batch.users, batch.pos + self.n_users
        loss = sum(
            info_nce(side.index_select(0, rows), content.index_select(0, rows), self.cl_temperature)
            for rows in (items, users)
        )
        return self.cl_weight * loss

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        owned = {
            m: [*self.projection[m].parameters(), *self.purifier[m].parameters(), *self.preference_gate[m].parameters()]
            for m in self.modalities
        }
        if hasattr(self, "features"):
            for m in self.modalities:
                owned[m].insert(0, self.features[m])
        return owned
