"""MMGCN (Wei et al., MM'19) in the form of the CKD authors' code (docs/backbones.md#mmgcn).

Per modality m, on the node matrix of users then items (Â = D⁻¹(A + I), the CKD code's adjacency)::

    X⁰ = normalize([Θᵐ ; Wₘ fᵐ + bₘ])                   E_id = [P ; Q]
    layer ℓ:  h = lrelu(Â · (W^conv_ℓ X + b))
              x̂ = lrelu(W^lin_ℓ X + b) + E_id
              X ← lrelu(W^g_ℓ h + b + x̂)                ("sum" variant of the CKD code)
    Z = mean over modalities of Xᵐ (after ``n_layers`` layers); users' rows → u, items' rows → i.

Quirks and decisions, switches in ``conf/backbone/mmgcn.yaml``:

* Θᵐ are Xavier-normal and **untrained** in the reference, and, not being registered anywhere, a
  reloaded teacher got fresh random Θᵐ. Here they are untrained (``trainable_preferences: false``,
  faithful) but **persistent buffers**, so checkpoints and cached teachers carry the values a model was
  trained with. ``trainable_preferences: true`` makes them parameters (an explicitly labelled variant).
  The state-dict key (``preference.<m>``) is the same either way.
* ``self_loops: true`` — the CKD adjacency D⁻¹(A + I); ``false`` gives the original MMGCN's mean over
  neighbours without self.
* No dropout (the CKD code has none); ``n_layers: 3`` as both references. P, Q Xavier-uniform; all
  Linear layers PyTorch's default init (CKD code). The original's concatenation variant and its
  256-d visual / raw 384-d text branches are not implemented (CKD form only).

Ablating m (the CKD code exactly): fᵐ → item mean before Wₘ, Θᵐ → user mean. The
ablated branch still outputs personalised vectors because E_id is added in every layer.

Inside :meth:`step_cache` (several passes per step, e.g. CKD) each modality branch is propagated once
per (modality, ablated?) and shared: a CKD step with two modalities costs 4 branch passes, not 6.

``modality_parameters()``: m owns Wₘ, its GCN layers and (when trainable) Θᵐ; P, Q are shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mbrec.backbones import graph
from mbrec.backbones.base import Backbone, embedding_table, register
from mbrec.data.dataset import Dataset


class MMGCNLayer(nn.Module):
    """One CKD-form MMGCN layer (sum variant): X ← lrelu(W^g h + x̂) with h the propagated message."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.conv, self.lin, self.g = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, adj: graph.EdgeGraph, ids: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(adj.mm(self.conv(x)))
        x_hat = F.leaky_relu(self.lin(x)) + ids
        return F.leaky_relu(self.g(h) + x_hat)


@register("mmgcn")
class MMGCN(Backbone):
    """MMGCN, CKD authors' form; see the module docstring for the equations and quirks."""

    uses_features = True

    def __init__(
        self,
        dataset: Dataset,
        embedding_dim: int = 64,
        n_layers: int = 3,
        trainable_preferences: bool = False,
        self_loops: bool = True,
    ) -> None:
        super().__init__(dataset)
        d = embedding_dim
        self.user_id = embedding_table(self.n_users, d)
        self.item_id = embedding_table(self.n_items, d)
        self.preference = nn.Module()
        for m in self.modalities:
            theta = nn.init.xavier_normal_(torch.empty(self.n_users, d))
            if trainable_preferences:
                self.preference.register_parameter(m, nn.Parameter(theta))
            else:  # faithful: never trained, but saved with the model (docs/backbones.md#mmgcn, the teacher fix)
                self.preference.register_buffer(m, theta, persistent=True)
        self.trainable_preferences = trainable_preferences
        self.projection = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], d) for m in self.modalities})
        self.layers = nn.ModuleDict({m: nn.ModuleList(MMGCNLayer(d) for _ in range(n_layers)) for m in self.modalities})
        self.adj = graph.EdgeGraph.from_sparse(graph.normalized_adjacency(dataset, "row", self_loops))

    def _input(self, m: str, ablate: frozenset[str]) -> torch.Tensor:
        """X⁰ = normalize([Θᵐ ; Wₘ fᵐ + bₘ]), with the user and item means when m is ablated."""
        users = self.user_input(getattr(self.preference, m), None, m in ablate)
        items = self.item_input(m, ablate, None, self.projection[m])
        return F.normalize(torch.cat([users, items]), dim=1)

    def _branch(self, m: str, ablate: frozenset[str]) -> torch.Tensor:
        x = self._input(m, ablate)
        ids = torch.cat([self.user_id, self.item_id])
        for layer in self.layers[m]:
            x = layer(x, self.adj, ids)
        return x

    def encode(
        self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        branches = [self.memo.get(("branch", m, m in ablate), lambda m=m: self._branch(m, ablate)) for m in self.modalities]
        z = torch.stack(branches).mean(0)
        return graph.node_rows(z, self.n_users, users, items)

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        owned: dict[str, list[nn.Parameter]] = {}
        for m in self.modalities:
            owned[m] = [*self.projection[m].parameters(), *self.layers[m].parameters()]
            if self.trainable_preferences:
                owned[m].append(getattr(self.preference, m))
        return owned
