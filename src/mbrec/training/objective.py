"""The BPR objective on one batch (CKD eq. 2 plus the reference code's L2 term; docs/method.md#bpr-eq-2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn.functional as F

from mbrec.backbones.base import Backbone
from mbrec.data.sampling import Batch


@dataclass
class BatchPass:
    """Representations and scores of one forward pass over a batch, and its loss terms."""

    batch: Batch
    user: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor
    pos_score: torch.Tensor
    neg_score: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def margin(self) -> torch.Tensor:
        """ŷ_ui − ŷ_uj per triple."""
        return self.pos_score - self.neg_score


def batch_pass(model: Backbone, batch: Batch, ablate: Iterable[str] = ()) -> BatchPass:
    """One forward pass for the batch: the batch's users and the union of its items only."""
    items, inverse = torch.unique(torch.cat([batch.pos, batch.neg]), return_inverse=True)
    user, item = model(users=batch.users, items=items, ablate=ablate)
    pos, neg = item.index_select(0, inverse[: len(batch)]), item.index_select(0, inverse[len(batch) :])
    return BatchPass(batch, user, pos, neg, model.score(user, pos), model.score(user, neg))


def bpr_loss(p: BatchPass) -> torch.Tensor:
    """mean −ln σ(ŷ_ui − ŷ_uj) (eq. 2, averaged over the batch)."""
    return -F.logsigmoid(p.margin).mean()


def l2_loss(p: BatchPass, coefficient: float) -> torch.Tensor:
    """coefficient · (½‖U_b‖² + ½‖I_b‖² + ½‖J_b‖²) / B on the batch's final representations (CKD code)."""
    sq = p.user.pow(2).sum() + p.pos.pow(2).sum() + p.neg.pow(2).sum()
    return coefficient * 0.5 * sq / len(p.batch)


def base_pass(model: Backbone, batch: Batch, l2: float, ablate: Iterable[str] = ()) -> BatchPass:
    """The forward pass with the base terms ``bpr``, ``l2`` and (if the model has one) ``aux``."""
    p = batch_pass(model, batch, ablate)
    p.terms["bpr"] = bpr_loss(p)
    p.terms["l2"] = l2_loss(p, l2)
    aux = model.aux_loss(batch)
    if aux is not None:
        p.terms["aux"] = aux
    return p
