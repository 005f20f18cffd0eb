"""VBPR in the form of the CKD authors' code (docs/backbones.md#vbpr).

u = [p_u ‖ θ_u^m for each m],  i = [q_i ‖ W_m f_i^m + b_m for each m],  score = u·i.
Per-modality user preferences θ^m make the ablation exact: with m ablated its term becomes one
constant θ̄^m·(W_m f̄^m + b_m) shared by every (u, i), which cancels in every pairwise difference.
No bias terms, no dropout (as in the reference). A single pass projects only the batch's items; inside
:meth:`step_cache` (several passes per step, e.g. CKD) every item is projected once per modality and
shared by all passes of the step, which halves the projection work of a CKD step.
"""

from __future__ import annotations

import torch
from torch import nn

from mbrec.backbones.base import Backbone, embedding_table, register, rows
from mbrec.data.dataset import Dataset


@register("vbpr")
class VBPR(Backbone):
    uses_features = True

    def __init__(self, dataset: Dataset, embedding_dim: int = 64) -> None:
        super().__init__(dataset)
        d = embedding_dim
        self.user_id = embedding_table(self.n_users, d)
        self.item_id = embedding_table(self.n_items, d)
        self.preference = nn.ParameterDict({m: embedding_table(self.n_users, d) for m in self.modalities})
        self.projection = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], d) for m in self.modalities})

    def _project(self, m: str, items: torch.Tensor | None, ablate: frozenset[str]) -> torch.Tensor:
        if self.memo.active_now and m not in ablate:
            return rows(self.memo.get(("projection", m), lambda: self.projection[m](self.feature(m))), items)
        return self.item_input(m, ablate, items, self.projection[m])

    def encode(
        self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        user_parts, item_parts = [rows(self.user_id, users)], [rows(self.item_id, items)]
        for m in self.modalities:
            user_parts.append(self.user_input(self.preference[m], users, m in ablate))
            item_parts.append(self._project(m, items, ablate))
        return torch.cat(user_parts, 1), torch.cat(item_parts, 1)

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {m: [self.preference[m], *self.projection[m].parameters()] for m in self.modalities}
