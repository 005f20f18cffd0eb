"""Ranking metrics as pure functions of the hit matrix of each user's top-K list.

``hits[u, r]`` is True when the item at rank r+1 of user u's list is relevant; ``n_relevant[u]`` is
|T_u|, the number of relevant items of u. Every function returns one value per user.
"""

from __future__ import annotations

from typing import Iterable

import torch

#: every metric :func:`ranking_metrics` computes, in the order reports show them
METRIC_NAMES = ("recall", "ndcg", "precision", "ndcg_lattice", "hit")


def _discounts(n: int, device: torch.device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, n + 2, device=device, dtype=torch.float64))


def ranking_metrics(hits: torch.Tensor, n_relevant: torch.Tensor, ks: Iterable[int]) -> dict[str, torch.Tensor]:
    """Recall, Precision, hit rate and both NDCGs at every K, per user (float64).

    * ``recall@K`` = hits in top K / |T_u|; ``precision@K`` = hits in top K / K.
    * ``ndcg@K`` (standard, MMRec): DCG@K / IDCG, the ideal list having min(|T_u|, K) relevant items.
    * ``ndcg_lattice@K`` (CKD/LATTICE code): the ideal list is the retrieved top-``hits.shape[1]``
      list itself sorted, i.e. min(hits in the whole retrieved list, K) ones; 0 without hits.
    """
    hits = hits.to(torch.float64)
    n_relevant = n_relevant.to(torch.float64)
    max_k = hits.shape[1]
    disc = _discounts(max_k, hits.device)
    cum_hits = hits.cumsum(1)
    dcg = (hits * disc).cumsum(1)
    ideal = disc.cumsum(0)  # ideal[n-1] = IDCG of n relevant items at the top
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        if not 1 <= k <= max_k:
            raise ValueError(f"K={k} outside 1..{max_k}")
        h = cum_hits[:, k - 1]
        out[f"recall@{k}"] = h / n_relevant
        out[f"precision@{k}"] = h / k
        out[f"hit@{k}"] = (h > 0).to(torch.float64)
        n_ideal = n_relevant.clamp(max=k).long()
        out[f"ndcg@{k}"] = dcg[:, k - 1] / ideal[(n_ideal - 1).clamp(min=0)]
        n_lat = cum_hits[:, -1].clamp(max=k).long()
        out[f"ndcg_lattice@{k}"] = torch.where(n_lat > 0, dcg[:, k - 1] / ideal[(n_lat - 1).clamp(min=0)], torch.zeros_like(h))
    return out
