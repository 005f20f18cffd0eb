"""GRCN (Wei et al., MM'20) as in its official code and MMRec's port (docs/backbones.md#grcn).

Graph: the bidirectional user–item edge list E₂ (items offset by U, no self-loops); messages go from
source to target. Per modality m (content GCN), with has_norm on as in both references::

    X = [normalize(Θᵐ) ; normalize(lrelu(Wₘ fᵐ + bₘ))]
    αᵐ_{y→x} = softmax_{y ∈ N(x)} ⟨X_x, X_y⟩           Zᵐ_x = X_x + Σ_y αᵐ_{y→x} X_y

Graph refining: every edge e = s→t gets w_e = max_m(αᵐ_e · C_m[s]) (``weight_mode: confid``, C the
trainable per-node confidence), ReLU'd when ``pruning`` is on. ID GCN on those weights::

    X₀ = normalize(E_id),  X_{k+1} = Σ_{s→t} w_e X_k[s],   id = X₀ + … + X_{id_layers}
    Z = [id ‖ Zᵐ for each m]   (64·(1 + #modalities) wide), score = inner product.

Quirks and decisions, switches in ``conf/backbone/grcn.yaml``:

* ``routing: none`` (faithful). The references' routing convolves over the *directed* user→item
  edges and then updates the user rows, which are never targets, so the loop changes nothing; it is
  skipped. ``routing: users`` is the fixed orientation the GRCN paper describes, ``num_routing``
  times: Θᵐ_u ← normalize(Θᵐ_u + Σ_{i∈N(u)} softmax_i⟨Θᵐ_u, gᵐ_i⟩ gᵐ_i).
* ``pruning: true`` (MMRec hard-codes it; it is the paper's graph pruning): negative edge weights are
  cut to 0. ``false`` is the official README runs' soft pruning (no ReLU).
* ``weight_mode: confid`` (default in both); ``mean`` / ``max`` of the αᵐ are the other reference modes.
* ``dropout`` is the reference's edge dropout (p = 0 there, a no-op). mbrec drops each user–item pair
  in both directions at once, in training only, once per step (shared by the passes of a CKD step).
* Init as MMRec (whose numbers are the reference table): E_id, Θᵐ, C and the Wₘ weights Xavier-normal.
  C is one Xavier-normal (U+I)×M matrix stored as one column per modality.
* The reference's own regulariser (means of squared E_id/Θ rows) is not used: the CKD trainers use
  their L2 on final representations for every backbone.

Ablating m (docs/method.md#ablating-a-modality): raw fᵐ → item mean before Wₘ and the lrelu, Θᵐ → user
mean; every node of branch m then carries one vector, so αᵐ becomes uniform (1/deg of the target) and
w_e mixes that uniform term with the other modalities' attention. The confidence table is not ablated.

Inside :meth:`step_cache` each (modality, ablated?) content branch and the dropout mask are computed
once per step and shared by its passes; the ID GCN depends on the whole ablation and is recomputed.

``modality_parameters()``: m owns Θᵐ, Wₘ and its confidence column C_m; E_id is shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mbrec.backbones import graph
from mbrec.backbones.base import Backbone, check_choice, embedding_table, register
from mbrec.data.dataset import Dataset

ROUTING = ("none", "users")
WEIGHT_MODES = ("confid", "mean", "max")


@register("grcn")
class GRCN(Backbone):
    """GRCN with the routing, pruning and edge-weight choices as switches; see the module docstring."""

    uses_features = True

    def __init__(
        self,
        dataset: Dataset,
        embedding_dim: int = 64,
        routing: str = "none",
        num_routing: int = 3,
        weight_mode: str = "confid",
        pruning: bool = True,
        id_layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dataset)
        check_choice("routing", routing, ROUTING)
        check_choice("weight_mode", weight_mode, WEIGHT_MODES)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"backbone.dropout={dropout}: an edge-dropout probability in [0, 1)")
        d, n_nodes = embedding_dim, self.n_users + self.n_items
        self.num_routing = num_routing if routing == "users" else 0
        self.weight_mode, self.pruning, self.id_layers, self.dropout = weight_mode, pruning, id_layers, dropout
        self.id_embedding = embedding_table(n_nodes, d, nn.init.xavier_normal_)
        self.preference = nn.ParameterDict({m: embedding_table(self.n_users, d, nn.init.xavier_normal_) for m in self.modalities})
        self.projection = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], d) for m in self.modalities})
        for layer in self.projection.values():
            nn.init.xavier_normal_(layer.weight)
        self.confidence = nn.ParameterDict()
        if weight_mode == "confid":
            table = nn.init.xavier_normal_(torch.empty(n_nodes, len(self.modalities)))
            self.confidence.update({m: nn.Parameter(table[:, k].clone()) for k, m in enumerate(self.modalities)})
        self.graph = graph.dataset_edge_graph(dataset)
        pair = torch.minimum(self.graph.target, self.graph.source) * n_nodes + torch.maximum(self.graph.target, self.graph.source)
        self.register_buffer("pair", torch.unique(pair, return_inverse=True)[1], persistent=False)

    def _keep(self) -> torch.Tensor | None:
        """Which edges survive edge dropout in this pass (None: all)."""
        if not (self.training and self.dropout > 0):
            return None
        n_pairs = int(self.pair.max()) + 1 if self.pair.numel() else 0
        kept = torch.rand(n_pairs, device=self.pair.device) >= self.dropout
        return kept.index_select(0, self.pair).to(self.id_embedding.dtype)

    def _content(self, m: str, ablate: frozenset[str], keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(Zᵐ over all nodes, αᵐ per edge) of modality m's content GCN."""
        theta = self.user_input(self.preference[m], None, m in ablate, lambda t: F.normalize(t, dim=1))
        g = self.item_input(m, ablate, None, lambda f: F.normalize(F.leaky_relu(self.projection[m](f)), dim=1))
        for _ in range(self.num_routing):  # fixed orientation: users gather their items
            x = torch.cat([theta, g])
            routed = self.graph.propagate(self.graph.softmax(self.graph.scores(x), keep), x)
            theta = F.normalize(theta + routed[: self.n_users], dim=1)
        x = torch.cat([theta, g])
        alpha = self.graph.softmax(self.graph.scores(x), keep)
        return x + self.graph.propagate(alpha, x), alpha

    def _edge_weights(self, alphas: list[torch.Tensor]) -> torch.Tensor:
        if self.weight_mode == "confid":
            src = self.graph.source
            w = torch.stack([a * self.confidence[m].index_select(0, src) for m, a in zip(self.modalities, alphas)])
            w = w.max(0).values
        elif self.weight_mode == "mean":
            w = torch.stack(alphas).mean(0)
        else:
            w = torch.stack(alphas).max(0).values
        return F.relu(w) if self.pruning else w

    def _id_representation(self, weights: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.id_embedding, dim=1)
        total = x
        for _ in range(self.id_layers):
            x = self.graph.propagate(weights, x)
            total = total + x
        return total

    def encode(
        self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = self.memo.get("keep", self._keep)
        content = [self.memo.get(("content", m, m in ablate), lambda m=m: self._content(m, ablate, keep))
                   for m in self.modalities]
        ids = self._id_representation(self._edge_weights([alpha for _, alpha in content]))
        z = torch.cat([ids, *(zm for zm, _ in content)], 1)
        return graph.node_rows(z, self.n_users, users, items)

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        owned: dict[str, list[nn.Parameter]] = {}
        for m in self.modalities:
            owned[m] = [self.preference[m], *self.projection[m].parameters()]
            if m in self.confidence:
                owned[m].append(self.confidence[m])
        return owned
