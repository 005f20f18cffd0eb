"""Per-user train/validation/test split rules, vectorised over all interactions."""

from __future__ import annotations

import numpy as np

TRAIN, VALID, TEST = 0, 1, 2


def split_per_user(users: np.ndarray, rng: np.random.Generator, rule: str = "mmrec") -> np.ndarray:
    """Assign each interaction a split label (0 train, 1 validation, 2 test).

    ``users`` holds the user id of each interaction. Within each user the interactions are shuffled
    with ``rng``; then, for a user with n interactions:

    * ``mmrec`` (MMRec's ``1splitting`` notebook): n < 10 -> 1 validation, 1 test, rest train;
      otherwise vt = floor(0.2 n), validation = floor(vt / 2), test = vt - validation.
    * ``lattice`` (LATTICE ``build_data.py``): n < 10 -> 1 test, 1 validation; otherwise
      h = floor(0.2 n) held out, test = floor(h / 2), validation = h - test.
    """
    users = np.asarray(users, dtype=np.int64)
    if users.size == 0:
        return np.zeros(0, dtype=np.int8)
    order = np.lexsort((rng.random(users.size), users))  # by user, random within user
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, users.size])
    rank = np.arange(users.size) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    held = np.where(n < 10, 2, n // 5)
    if rule == "mmrec":
        n_valid = np.where(n < 10, 1, held // 2)
        n_test = held - n_valid
    elif rule == "lattice":
        n_test = np.where(n < 10, 1, held // 2)
        n_valid = held - n_test
    else:
        raise ValueError(f"unknown split rule {rule!r}; use 'mmrec' or 'lattice'")
    labels_sorted = np.full(users.size, TRAIN, dtype=np.int8)
    n_train = n - n_valid - n_test
    labels_sorted[(rank >= n_train) & (rank < n_train + n_valid)] = VALID
    labels_sorted[rank >= n_train + n_valid] = TEST
    labels = np.empty_like(labels_sorted)
    labels[order] = labels_sorted
    return labels
