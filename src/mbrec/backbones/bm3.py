"""BM3 (bootstrapped latent representations, trained without negatives) after enoche/MMRec
``src/models/bm3.py`` and ``src/configs/model/BM3.yaml``; docs/backbones.md#bm3.

* Parameters, in this order: P (U×d), Q (I×d) Xavier-uniform; the predictor φ: d→d (weight
  Xavier-normal, default bias); the raw feature tables Fᵐ, trainable and initialised from the data; one
  projection Wₘ: dₘ→d per modality (weight Xavier-normal, default bias).
* Online representations: [ū ; ī] = mean of LightGCN layers 0..n_layers of [P ; Q] over
  Ã = D^-½ A D^-½ (no self-loops), and ī ← ī + Q. The model's representations are φ(ū), φ(ī) and the score
  is φ(ū) · φ(ī) (the reference's ``full_sort_predict``). The score does not read the features.
* Objective (:meth:`objective`, replacing BPR + L2; the batch's negatives are not used): with targets
  ũ, ĩ, f̃ᵐ = dropout(·, ``dropout``) of the detached online ū, ī, Wₘ Fᵐ (torch's RNG, drawn in that
  order over the full matrices, as the reference),

      L = [1 − cos(φ(ū_u), ĩ_i)] + [1 − cos(φ(ī_i), ũ_u)] + reg_weight · (‖ū‖ + ‖ī‖)/I
          + cl_weight · Σₘ ([1 − cos(φ(Wₘ Fᵐ_i), ĩ_i)] + [1 − cos(φ(Wₘ Fᵐ_i), f̃ᵐ_i)])

  averaged over the batch's (u, i) pairs; ‖·‖ is the Frobenius norm of all rows (the reference's EmbLoss).
  ``train.l2`` is not used (the reference's regulariser is ``reg_weight``).

Ablating m removes m's two alignment terms from the loss of that pass (what the reference does when m's
feature file is absent): an m-ablated teacher is BM3 trained without m. The scores never read the
features, so every ablated *score* pass equals the full one: modalities reach BM3 only through training.

``modality_parameters``: m owns Fᵐ and Wₘ; P, Q and the predictor are shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mbrec.backbones import graph
from mbrec.backbones.base import Backbone, embedding_table, register
from mbrec.data.dataset import Dataset


def _linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.xavier_normal_(layer.weight)
    return layer


def _dropout_rows(x: torch.Tensor, p: float, rows: torch.Tensor) -> torch.Tensor:
    """``F.dropout(x, p)[rows]`` drawing the mask for every row of x (the reference's RNG use) but
    computing only the requested rows."""
    mask = F.dropout(torch.ones(x.shape, device=x.device, dtype=x.dtype), p)
    return x.index_select(0, rows) * mask.index_select(0, rows)


def _misalignment(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − mean cosine similarity of matching rows."""
    return 1 - F.cosine_similarity(online, target, dim=-1).mean()


@register("bm3")
class BM3(Backbone):
    uses_features = True
    #: the reference grid (BM3.yaml ``hyper_parameters``)
    search_space = {"backbone.n_layers": [1, 2], "backbone.reg_weight": [0.1, 0.01], "backbone.dropout": [0.3, 0.5]}

    def __init__(
        self,
        dataset: Dataset,
        embedding_dim: int = 64,
        n_layers: int = 1,
        reg_weight: float = 0.1,
        cl_weight: float = 2.0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(dataset)
        d = embedding_dim
        self.n_layers, self.reg_weight = int(n_layers), float(reg_weight)
        self.cl_weight, self.dropout = float(cl_weight), float(dropout)
        self.user_id = embedding_table(self.n_users, d)
        self.item_id = embedding_table(self.n_items, d)
        self.predictor = _linear(d, d)
        self.train_features()  # Fᵐ: parameters features.<m>, initialised from the data
        self.projection = nn.ModuleDict({m: _linear(self.feature_dims[m], d) for m in self.modalities})
        self.register_buffer("adj", graph.normalized_adjacency(dataset, "sym", self_loops=False).to_sparse_csr(),
                             persistent=False)  # symmetric: its own transpose for graph.spmm
        self._online: tuple[torch.Tensor, torch.Tensor] | None = None

    def online(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(ū, ī): the LightGCN mean over Ã of [P ; Q], items plus Q (the reference's ``forward``)."""
        layers = [torch.cat([self.user_id, self.item_id], 0)]
        for _ in range(self.n_layers):
            layers.append(graph.spmm(self.adj, layers[-1], self.adj))
        z = torch.stack(layers).mean(0)
        return z[: self.n_users], z[self.n_users :] + self.item_id

    def encode(
        self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        u, i = self.memo.get("online", lambda: torch.cat(self.online(), 0)).split([self.n_users, self.n_items])
        # kept for the objective (it runs right after this pass); not in eval / no_grad
        self._online = (u, i) if self.training and torch.is_grad_enabled() else None
        return self.predictor(graph.rows(u, users)), self.predictor(graph.rows(i, items))

    def objective(self, batch_pass, l2: float) -> dict[str, torch.Tensor]:
        """BM3's negative-free loss on the batch's (user, positive) pairs (module docstring)."""
        p = batch_pass
        users, items = p.batch.users, p.batch.pos
        u, i = self._online if self._online is not None else self.online()
        self._online = None
        with torch.no_grad():
            u_target = _dropout_rows(u.detach(), self.dropout, users)
            i_target = _dropout_rows(i.detach(), self.dropout, items)
        terms = {
            "bm3": _misalignment(p.user, i_target) + _misalignment(p.pos, u_target),
            "reg": self.reg_weight * (torch.linalg.vector_norm(u) + torch.linalg.vector_norm(i)) / self.n_items,
        }
        align = 0.0
        for m in self.modalities:
            if m in p.ablate:
                continue
            f = self.feature(m)
            with torch.no_grad():  # the target: the full projection, dropped out (reference RNG order)
                mask = F.dropout(torch.ones(f.shape[0], self.predictor.in_features, device=f.device), self.dropout)
            online = self.projection[m](f.index_select(0, items))
            target = online.detach() * mask.index_select(0, items)
            online = self.predictor(online)
            align = align + _misalignment(online, i_target) + _misalignment(online, target)
        if torch.is_tensor(align):
            terms["align"] = self.cl_weight * align
        return terms

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {m: [self.features[m], *self.projection[m].parameters()] for m in self.modalities}
