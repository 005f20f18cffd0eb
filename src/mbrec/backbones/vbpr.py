"""VBPR in the form of the CKD authors' code (docs/backbones.md#vbpr).

u = [p_u ‖ θ_u^m for each m],  i = [q_i ‖ W_m f_i^m + b_m for each m],  score = u·i.
Per-modality user preferences θ^m make the ablation exact: with m ablated its term becomes one
constant θ̄^m·(W_m f̄^m + b_m) shared by every (u, i), which cancels in every pairwise difference.
No bias terms, no dropout (as in the reference). A single pass projects only the batch's items; inside
:meth:`step_cache` (several passes per step, e.g. CKD) every item is projected once per modality and
shared by all passes of the step, which halves the projection work of a CKD step.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from mbrec.backbones.base import Backbone, feature_tensors, register, rows
from mbrec.data.dataset import Dataset


@register("vbpr")
class VBPR(Backbone):
    def __init__(self, dataset: Dataset, embedding_dim: int = 64) -> None:
        super().__init__(dataset)
        d = embedding_dim

        def table(n: int) -> nn.Parameter:
            return nn.Parameter(nn.init.xavier_uniform_(torch.empty(n, d)))

        self.user_id = table(self.n_users)
        self.item_id = table(self.n_items)
        self.preference = nn.ParameterDict({m: table(self.n_users) for m in self.modalities})
        feats = feature_tensors(dataset)
        self.projection = nn.ModuleDict({m: nn.Linear(f.shape[1], d) for m, f in feats.items()})
        self.register_features(feats)

    def _project(self, m: str, items: torch.Tensor | None) -> torch.Tensor:
        if self.memo.active_now:
            return rows(self.memo.get(("projection", m), lambda: self.projection[m](self.feature(m))), items)
        return self.projection[m](rows(self.feature(m), items))

    def forward(
        self,
        users: torch.Tensor | None = None,
        items: torch.Tensor | None = None,
        ablate: Iterable[str] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ablate = self.check_ablation(ablate)
        p = rows(self.user_id, users)
        q = rows(self.item_id, items)
        user_parts, item_parts = [p], [q]
        for m in self.modalities:
            theta = self.preference[m]
            if m in ablate:
                user_parts.append(theta.mean(0, keepdim=True).expand(p.shape[0], -1))
                item_parts.append(self.projection[m](self.feature_mean(m)).expand(q.shape[0], -1))
            else:
                user_parts.append(rows(theta, users))
                item_parts.append(self._project(m, items))
        return torch.cat(user_parts, 1), torch.cat(item_parts, 1)

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {m: [self.preference[m], *self.projection[m].parameters()] for m in self.modalities}
