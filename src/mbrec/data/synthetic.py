"""The embedded synthetic dataset: a latent-factor world with an informative and a weak modality.

Generative model (seeded, deterministic):

1. Item factors z_i ~ N(0, I_k), user factors z_u ~ N(0, I_k); item popularity b_i ~ N(0, popularity²).
2. Each user u draws n_u = min_interactions + Poisson(mean_interactions - min_interactions) distinct
   items without replacement with probability ∝ exp(affinity · z_u·z_i / √k + b_i) (Gumbel top-k).
3. Each modality m sees a contiguous block of the item factors (``factors``: the fraction
   [start, stop) of the k dimensions) through a random linear map to ``dim`` dimensions, plus Gaussian
   noise at signal-to-noise ratio ``snr`` (signal variance / noise variance, per feature).
4. Interactions are split per user with MMRec's rule (split.py).

The default makes text see 3/4 of the factors at SNR 4 and visual 1/2 of them at SNR 0.25, so text is
clearly the stronger modality and the imbalance the CKD paper studies exists here.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from mbrec.data.dataset import Dataset, interactions_to_csr
from mbrec.data.split import split_per_user


def make_synthetic(
    n_users: int = 2000,
    n_items: int = 1000,
    n_factors: int = 16,
    mean_interactions: float = 20.0,
    min_interactions: int = 5,
    affinity: float = 3.0,
    popularity: float = 0.5,
    n_categories: int = 8,
    modalities: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    name: str = "synthetic",
) -> Dataset:
    """Generate the synthetic dataset described in the module docstring."""
    if modalities is None:
        modalities = {
            "text": {"dim": 64, "factors": [0.0, 0.75], "snr": 4.0},
            "visual": {"dim": 128, "factors": [0.5, 1.0], "snr": 0.25},
        }
    if min_interactions < 3 or mean_interactions < min_interactions:
        raise ValueError("need 3 <= min_interactions <= mean_interactions (each user needs train, valid and test items)")
    rng = np.random.default_rng(seed)
    k = n_factors
    z_items = rng.standard_normal((n_items, k))
    z_users = rng.standard_normal((n_users, k))
    pop = popularity * rng.standard_normal(n_items)

    n_per_user = min_interactions + rng.poisson(mean_interactions - min_interactions, n_users)
    n_per_user = np.minimum(n_per_user, n_items // 2)
    max_n = int(n_per_user.max())
    users, items = [], []
    for start in range(0, n_users, 4096):  # chunks bound memory at 4096 x n_items
        zu = z_users[start : start + 4096]
        logits = affinity * zu @ z_items.T / np.sqrt(k) + pop
        keys = logits + rng.gumbel(size=logits.shape)
        top = np.argpartition(-keys, max_n - 1, axis=1)[:, :max_n]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, 1), axis=1), 1)
        keep = np.arange(max_n)[None, :] < n_per_user[start : start + len(zu), None]
        rows = np.broadcast_to(np.arange(start, start + len(zu))[:, None], top.shape)
        users.append(rows[keep])
        items.append(top[keep])
    users_a, items_a = np.concatenate(users), np.concatenate(items)
    labels = split_per_user(users_a, rng)

    features = {}
    for m, spec in modalities.items():
        lo, hi = (int(round(f * k)) for f in spec["factors"])
        if hi <= lo:
            raise ValueError(f"synthetic modality {m!r}: factors {spec['factors']} select no dimension")
        proj = rng.standard_normal((hi - lo, int(spec["dim"]))) / np.sqrt(hi - lo)
        signal = z_items[:, lo:hi] @ proj
        noise = rng.standard_normal(signal.shape) * np.sqrt(signal.var() / float(spec["snr"]))
        features[m] = (signal + noise).astype(np.float32)

    # Categories follow the first factor's quantiles so that they carry some signal.
    edges = np.quantile(z_items[:, 0], np.linspace(0, 1, n_categories + 1)[1:-1])
    categories = np.searchsorted(edges, z_items[:, 0])

    mats = [interactions_to_csr(users_a[labels == s], items_a[labels == s], n_users, n_items) for s in range(3)]
    return Dataset(name=name, train=mats[0], valid=mats[1], test=mats[2], features=features,
                   item_categories=categories, source=f"synthetic(seed={seed})")
