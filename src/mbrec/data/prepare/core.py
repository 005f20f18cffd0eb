"""The iterative k-core filter, with what each step removed."""

from __future__ import annotations

import numpy as np
import pandas as pd


def k_core(users: np.ndarray, items: np.ndarray, k: int = 5) -> tuple[np.ndarray, list[dict[str, int]]]:
    """Mask of the interactions that survive the k-core filter, and one report per step.

    Each round drops the interactions of users with < k interactions, then those of items with < k
    (recounted after the user step), until nothing changes — so every remaining user and item has at
    least k interactions. ``users_removed``/``items_removed`` count the ids that failed the rule in
    that step (an id can also vanish because all its partners were removed; ``*_left`` show that).
    """
    keep = np.ones(len(users), dtype=bool)
    steps: list[dict[str, int]] = []
    while True:
        removed = {}
        for side, ids in (("user", users), ("item", items)):
            counts = pd.Series(ids[keep]).value_counts()
            rare = counts.index[counts < k]
            drop = keep & np.isin(ids, rare)
            keep &= ~drop
            removed[side] = int(drop.sum())
            removed[f"{side}s"] = int(len(rare))
        steps.append({"round": len(steps) + 1, "rows_removed_by_user_rule": removed["user"],
                      "users_removed": removed["users"], "rows_removed_by_item_rule": removed["item"],
                      "items_removed": removed["items"], "rows_left": int(keep.sum()),
                      "users_left": int(pd.unique(users[keep]).size), "items_left": int(pd.unique(items[keep]).size)})
        if removed["user"] == 0 and removed["item"] == 0:
            return keep, steps


def index_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous 0-based ids in order of first appearance (as MMRec assigns them): (ids, raw by id)."""
    codes, uniques = pd.factorize(pd.Series(raw), sort=False)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)
