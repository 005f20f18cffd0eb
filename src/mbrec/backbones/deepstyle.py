"""DeepStyle (Liu et al., SIGIR'17) in mbrec's two-modality, CKD-compatible form (docs/backbones.md#deepstyle).

No official code exists; the CKD authors did not release theirs. The form implemented here mirrors
CKD's VBPR so that every modality has its own user preference to ablate::

    u = [p_u ‖ θᵐ_u for each m]
    i = [q_i ‖ Eₘ fᵐ_i − l^m_{c(i)} for each m]       (l^m only for m in ``category_modalities``)
    score = u·i

Decisions, each a config switch in ``conf/backbone/deepstyle.yaml``:

* ``category_modalities: [visual]`` — the category vector is subtracted from the visual branch only
  (the paper's idea: category dominates CNN features, what remains is "style"). Listing ``text`` too
  gives the text branch its own, separate category table. A listed modality that the dataset lacks is
  ignored with a warning (datasets need not have exactly the two usual modalities).
* ``categories: auto`` — ``dataset.item_categories`` gives c(i) (ids are re-indexed densely). When
  the dataset has none, mbrec falls back to Elliot's per-item vector l_i and logs it; with a per-item
  l_i, ``−l_i + q_i`` collapses into one free item vector, so the category idea is lost there.
  ``categories: per_item`` forces that fallback (Elliot's behaviour).
* ``user_preference: per_modality`` — one θᵐ per modality (needed for a per-modality ablation that
  also touches the user side). ``shared`` is the paper/Elliot form u = p_u, i = q_i + Σₘ sᵐ_i; there
  only the item side can be ablated (p_u·Eₘf̄ᵐ is constant over items and drops out of rankings).
* ``bias: false`` — the paper's style map Eₘ has no bias (CKD's VBPR has one; it only adds an item-
  constant per user).
* No dropout (neither the paper nor Elliot has any). Embedding tables Xavier-uniform (CKD's VBPR and
  Elliot); Eₘ PyTorch's default Linear init. Loss: the framework's BPR + L2 on final representations
  (as the CKD code trains every backbone), not Elliot's summed softplus.

Ablating m (docs/method.md#ablating-a-modality): fᵐ → its item mean before Eₘ, θᵐ → its user mean;
the category vectors are kept (they are ID-like side information, not content of m).

``modality_parameters()``: m owns Eₘ, θᵐ and m's category table; p, q are shared.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch import nn

from mbrec.backbones.base import Backbone, check_choice, embedding_table, register, rows
from mbrec.data.dataset import Dataset

log = logging.getLogger(__name__)

USER_PREFERENCES = ("per_modality", "shared")
CATEGORY_SOURCES = ("auto", "per_item")


def category_index(dataset: Dataset, categories: str) -> tuple[torch.Tensor, int, str]:
    """(dense category id per item, number of categories, description of the source)."""
    check_choice("categories", categories, CATEGORY_SOURCES)
    if categories == "auto" and dataset.item_categories is not None:
        uniq, dense = np.unique(dataset.item_categories, return_inverse=True)
        return torch.from_numpy(dense.astype(np.int64)), len(uniq), f"{len(uniq)} item categories"
    if categories == "auto":
        log.warning("deepstyle: dataset %s has no item_categories; falling back to a per-item vector l_i "
                    "(Elliot's form; the category subtraction degenerates to a free item vector)", dataset.name)
    return torch.arange(dataset.n_items), dataset.n_items, "per-item vectors (no categories)"


@register("deepstyle")
class DeepStyle(Backbone):
    """DeepStyle with per-modality style branches; see the module docstring for the form and quirks."""

    uses_features = True

    def __init__(
        self,
        dataset: Dataset,
        embedding_dim: int = 64,
        category_modalities: Sequence[str] = ("visual",),
        categories: str = "auto",
        user_preference: str = "per_modality",
        bias: bool = False,
    ) -> None:
        super().__init__(dataset)
        check_choice("user_preference", user_preference, USER_PREFERENCES)
        d = embedding_dim
        self.shared_user = user_preference == "shared"
        self.user_id = embedding_table(self.n_users, d)
        self.item_id = embedding_table(self.n_items, d)
        self.preference = nn.ParameterDict(
            {} if self.shared_user else {m: embedding_table(self.n_users, d) for m in self.modalities})
        self.style = nn.ModuleDict({m: nn.Linear(self.feature_dims[m], d, bias=bias) for m in self.modalities})

        missing = [m for m in category_modalities if m not in self.modalities]
        if missing:
            log.warning("deepstyle: category_modalities %s are not modalities of %s %s; ignored",
                        missing, dataset.name, list(self.modalities))
        with_categories = [m for m in self.modalities if m in category_modalities]
        self.category = nn.ParameterDict()
        if with_categories:
            index, n_cat, source = category_index(dataset, categories)
            self.register_buffer("item_category", index, persistent=False)
            self.category.update({m: embedding_table(n_cat, d) for m in with_categories})
            log.info("deepstyle: subtracting category vectors from %s (%s)", with_categories, source)

    def _style(self, m: str, items: torch.Tensor | None, ablate: frozenset[str]) -> torch.Tensor:
        """Eₘ fᵐ_i − l^m_{c(i)} for the given items (all when None), with fᵐ → mean if m is ablated."""
        s = self.item_input(m, ablate, items, self.style[m])
        if m in self.category:
            s = s - self.category[m].index_select(0, rows(self.item_category, items))
        return s

    def encode(
        self, users: torch.Tensor | None, items: torch.Tensor | None, ablate: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p = rows(self.user_id, users)
        q = rows(self.item_id, items)
        styles = [self._style(m, items, ablate) for m in self.modalities]
        if self.shared_user:
            return p, q + torch.stack(styles).sum(0)
        prefs = [self.user_input(self.preference[m], users, m in ablate) for m in self.modalities]
        return torch.cat([p, *prefs], 1), torch.cat([q, *styles], 1)

    def modality_parameters(self) -> dict[str, list[nn.Parameter]]:
        owned: dict[str, list[nn.Parameter]] = {}
        for m in self.modalities:
            owned[m] = [*self.style[m].parameters()]
            if m in self.preference:
                owned[m].append(self.preference[m])
            if m in self.category:
                owned[m].append(self.category[m])
        return owned
