"""Full-ranking evaluation: training items are masked, validation/test ground truth is used, users
without items in the split are skipped, per-modality passes use the ablation."""

import math

import numpy as np
import pytest
import torch

from mbrec.backbones.base import Backbone
from mbrec.data.dataset import Dataset, interactions_to_csr
from mbrec.training.evaluation import Evaluator


def _dataset() -> Dataset:
    # 3 users x 5 items. user 0: train {0}, valid {3}, test {2}; user 1: train {1}, test {4}, no valid;
    # user 2: train {2}, valid {0}, test {1}
    tr = interactions_to_csr([0, 1, 2], [0, 1, 2], 3, 5)
    va = interactions_to_csr([0, 2], [3, 0], 3, 5)
    te = interactions_to_csr([0, 1, 2], [2, 4, 1], 3, 5)
    return Dataset("t", tr, va, te, {"text": np.zeros((5, 1), np.float32), "visual": np.zeros((5, 1), np.float32)})


class FixedScores(Backbone):
    """Scores = one fixed matrix per ablation (identity user representations)."""

    def __init__(self, dataset, scores):
        super().__init__(dataset)
        self.scores = scores
        self.calls = []

    def forward(self, users=None, items=None, ablate=()):
        key = frozenset(ablate)
        self.calls.append(key)
        s = self.scores[key]
        return torch.eye(s.shape[0]), s.T.clone()


def test_train_items_are_masked_and_metrics_match_hand_ranking():
    ds = _dataset()
    full = torch.tensor([[9.0, 8, 7, 6, 5], [5, 9, 8, 7, 6], [9, 8, 7, 6, 5]])
    ev = Evaluator(ds, [2], torch.device("cpu"))
    model = FixedScores(ds, {frozenset(): full})
    test = ev.evaluate(model, "test", {"": frozenset()})
    # user 0: train item 0 masked -> ranking 1,2,... : test item 2 at rank 2
    # user 1: item 1 masked -> ranking 2,3,4 : test item 4 not in top 2
    # user 2: item 2 masked -> ranking 0,1 : test item 1 at rank 2
    assert test["recall@2"] == pytest.approx((1 + 0 + 1) / 3)
    assert test["ndcg@2"] == pytest.approx((1 / math.log2(3) + 0 + 1 / math.log2(3)) / 3)
    assert test["precision@2"] == pytest.approx((0.5 + 0 + 0.5) / 3)
    # validation: only users 0 and 2 have items. user 0: valid item 3 at rank 3 -> miss; user 2: item 0 rank 1
    valid = ev.evaluate(model, "valid", {"": frozenset()})
    assert valid["recall@2"] == pytest.approx(0.5)


def test_a_train_item_with_the_top_score_never_counts():
    ds = _dataset()
    scores = torch.zeros(3, 5)
    scores[:, 0] = 100.0  # item 0 is user 0's training item
    scores[0, 2] = 1.0
    ev = Evaluator(ds, [1], torch.device("cpu"))
    out = ev.rank_metrics(torch.eye(3), scores.T.clone(), "test")
    assert out["recall@1"] == pytest.approx(1 / 3)  # user 0 gets item 2 at rank 1; the others miss


def test_per_modality_passes_keep_only_one_modality():
    ds = _dataset()
    good, bad = torch.tensor([[0.0, 5, 9, 1, 1]] * 3), torch.zeros(3, 5)
    scores = {frozenset(): good, frozenset({"visual"}): good, frozenset({"text"}): bad}
    model = FixedScores(ds, scores)
    out = Evaluator(ds, [1], torch.device("cpu"), batch_size=2).evaluate(model, "test")
    assert set(model.calls) == {frozenset(), frozenset({"visual"}), frozenset({"text"})}
    assert out["recall@1"] == out["recall@1/text"]  # text-only pass = "visual ablated"
    assert "recall@1/visual" in out


def test_k_larger_than_the_catalogue_counts_the_missing_ranks_as_misses():
    """5 items, K = 10: the ranking is the whole catalogue and precision divides by K."""
    ds = _dataset()
    full = torch.tensor([[9.0, 8, 7, 6, 5], [5, 9, 8, 7, 6], [9, 8, 7, 6, 5]])
    ev = Evaluator(ds, [2, 10], torch.device("cpu"))
    test = ev.evaluate(FixedScores(ds, {frozenset(): full}), "test", {"": frozenset()})
    assert test["recall@10"] == pytest.approx(1.0)  # every test item is somewhere in the 5 items
    assert test["precision@10"] == pytest.approx(1 / 10)
    assert test["recall@2"] == pytest.approx(2 / 3)
