"""The BPR sampler: distinct users with training items, training positives, never a training negative."""

import numpy as np
import torch

from mbrec.data.dataset import interactions_to_csr
from mbrec.data.sampling import BPRSampler


def test_negatives_never_training_items_and_positives_always(tiny_dataset):
    s = BPRSampler(tiny_dataset.train, 32, torch.device("cpu"), seed=0)
    train = tiny_dataset.train.toarray().astype(bool)
    for _ in range(200):
        b = s.sample()
        u, p, n = b.users.numpy(), b.pos.numpy(), b.neg.numpy()
        assert len(np.unique(u)) == len(u)  # distinct users per batch
        assert train[u, p].all()
        assert not train[u, n].any()


def test_dense_user_still_gets_valid_negatives():
    # user 0 has every item but one: rejection sampling must find item 9
    users = [0] * 9 + [1]
    items = list(range(9)) + [0]
    s = BPRSampler(interactions_to_csr(users, items, 2, 10), 2, torch.device("cpu"), seed=1)
    for _ in range(50):
        b = s.sample()
        neg = dict(zip(b.users.tolist(), b.neg.tolist()))
        assert neg[0] == 9 and neg[1] != 0


def test_users_without_training_items_are_never_drawn():
    s = BPRSampler(interactions_to_csr([0, 2], [1, 1], 4, 3), 8, torch.device("cpu"))
    seen = set()
    for _ in range(20):
        seen |= set(s.sample().users.tolist())
    assert seen == {0, 2}


def test_same_seed_same_batches(tiny_dataset):
    a = BPRSampler(tiny_dataset.train, 16, torch.device("cpu"), seed=3)
    b = BPRSampler(tiny_dataset.train, 16, torch.device("cpu"), seed=3)
    for _ in range(5):
        x, y = a.sample(), b.sample()
        assert torch.equal(x.users, y.users) and torch.equal(x.neg, y.neg)


def test_negatives_are_uniform_over_each_users_free_items():
    """Exact sampling by rank: every free item of a user equally likely (chi-square), observed never."""
    from scipy import stats

    # user 0: items 1, 2, 5, 6 of 10 -> free {0, 3, 4, 7, 8, 9}; user 1: item 9 only; user 2: all but 4
    users = [0, 0, 0, 0, 1] + [2] * 9
    items = [1, 2, 5, 6, 9] + [i for i in range(10) if i != 4]
    s = BPRSampler(interactions_to_csr(users, items, 3, 10), 3, torch.device("cpu"), seed=5)
    for user, free in ((0, [0, 3, 4, 7, 8, 9]), (1, list(range(9))), (2, [4])):
        draws = s.sample_negatives(torch.full((30000,), user)).numpy()
        counts = np.bincount(draws, minlength=10)
        assert set(np.flatnonzero(counts)) == set(free)
        if len(free) > 1:
            assert stats.chisquare(counts[free]).pvalue > 1e-3
