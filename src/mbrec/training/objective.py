"""The BPR objective on one batch (eq. 2 of the paper plus the reference code's L2 term;
docs/method.md#bpr-eq-2), and the one function that runs a backbone over sets of (user, i, j) triples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from mbrec.backbones.base import Backbone
from mbrec.data.sampling import Batch

Triples = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (users, i, j), aligned


def inner(user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
    """ŷ = ⟨u, i⟩ row-wise: every backbone scores by the inner product of its representations
    (evaluation ranks by the same product over all items)."""
    return (user * item).sum(-1)


def triple_representations(model: Backbone, triples: Sequence[Triples], ablate: Iterable[str] = ()
                           ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(user, i, j) representations for several triple sets from ONE forward pass over their users and
    the union of their items (each item computed once)."""
    users = torch.cat([t[0] for t in triples])
    items, inverse = torch.unique(torch.cat([torch.cat([t[1], t[2]]) for t in triples]), return_inverse=True)
    u_rep, i_rep = model(users=users, items=items, ablate=ablate)
    out, u0, i0 = [], 0, 0
    for u, _, _ in triples:
        n = u.numel()
        pos = i_rep.index_select(0, inverse[i0 : i0 + n])
        neg = i_rep.index_select(0, inverse[i0 + n : i0 + 2 * n])
        out.append((u_rep[u0 : u0 + n], pos, neg))
        u0, i0 = u0 + n, i0 + 2 * n
    return out


def margins(model: Backbone, triples: Sequence[Triples], ablate: Iterable[str] = ()) -> list[torch.Tensor]:
    """ŷ_ui − ŷ_uj for several triple sets, from one forward pass (:func:`triple_representations`)."""
    return [inner(u, p) - inner(u, n) for u, p, n in triple_representations(model, triples, ablate)]


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
    #: the modalities ablated in this pass (a model's :meth:`~Backbone.objective` may drop their terms)
    ablate: frozenset[str] = frozenset()

    @property
    def margin(self) -> torch.Tensor:
        """ŷ_ui − ŷ_uj per triple."""
        return self.pos_score - self.neg_score


def batch_pass(model: Backbone, batch: Batch, ablate: Iterable[str] = ()) -> BatchPass:
    """One forward pass for the batch: the batch's users and the union of its items only."""
    ablate = frozenset(ablate)
    [(user, pos, neg)] = triple_representations(model, [(batch.users, batch.pos, batch.neg)], ablate)
    return BatchPass(batch, user, pos, neg, inner(user, pos), inner(user, neg), ablate=ablate)


def bpr_loss(p: BatchPass) -> torch.Tensor:
    """mean −ln σ(ŷ_ui − ŷ_uj) (eq. 2, averaged over the batch)."""
    return -F.logsigmoid(p.margin).mean()


def l2_loss(p: BatchPass, coefficient: float) -> torch.Tensor:
    """coefficient · (½‖U_b‖² + ½‖I_b‖² + ½‖J_b‖²) / B on the batch's final representations (CKD code)."""
    sq = p.user.pow(2).sum() + p.pos.pow(2).sum() + p.neg.pow(2).sum()
    return coefficient * 0.5 * sq / len(p.batch)


def base_pass(model: Backbone, batch: Batch, l2: float, ablate: Iterable[str] = ()) -> BatchPass:
    """The forward pass with the base terms: ``bpr`` and ``l2``, or the model's own
    (:meth:`Backbone.objective`), and (if the model has one) ``aux``."""
    p = batch_pass(model, batch, ablate)
    own = model.objective(p, l2)
    if own is None:
        p.terms["bpr"] = bpr_loss(p)
        p.terms["l2"] = l2_loss(p, l2)
    else:
        p.terms.update(own)
    aux = model.aux_loss(batch)
    if aux is not None:
        p.terms["aux"] = aux
    return p
