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


# --- per-modality passes scored from the full pass (score_sharing) -------------------------------------

def test_score_sharing_by_hand():
    from mbrec.training.evaluation import score_sharing

    T, F = True, False
    # columns 0,1 equal to the reference, column 2 flat (per-user constant), column 3 changed
    drop, add = score_sharing(np.array([T, T, F, F]), np.array([F, F, T, F]))
    assert drop.tolist() == [F, F, T, T] and add.tolist() == [F, F, F, T]
    # 2 columns out + 2 in is not cheaper than 4 columns on its own
    assert score_sharing(np.array([T, T, F, F]), np.array([F, F, F, F])) is None
    drop, add = score_sharing(np.array([T, T, T]), np.array([F, T, F]))  # identical pass
    assert not drop.any() and not add.any()


class Representations(Backbone):
    """Fixed (users, items) representations per ablation."""

    def __init__(self, dataset, reps):
        super().__init__(dataset)
        self.reps = reps

    def forward(self, users=None, items=None, ablate=()):
        return self.reps[frozenset(ablate)]


def _shared_and_alone(ds, reps, ablations):
    """Metrics of all passes evaluated together (shared) and of each pass evaluated alone."""
    ev = Evaluator(ds, [5, 10], torch.device("cpu"), batch_size=16)
    model = Representations(ds, reps)
    together = ev.evaluate(model, "test", ablations)
    alone = {}
    for suffix, ablate in ablations.items():
        for k, v in ev.evaluate(model, "test", {"": ablate}).items():
            alone[f"{k}/{suffix}" if suffix else k] = v
    return ev, together, alone


def test_passes_scored_from_the_full_pass_rank_as_if_scored_alone(tiny_dataset):
    g = torch.Generator().manual_seed(0)
    u, i = torch.randn(tiny_dataset.n_users, 6, generator=g), torch.randn(tiny_dataset.n_items, 6, generator=g)
    # "visual" ablated: columns 4-5 become a constant user vector and a constant item vector (VBPR);
    # "text" ablated: column 5 changes for every user and item (nothing flat)
    u_v, i_v = u.clone(), i.clone()
    u_v[:, 4:] = u[:, 4:].mean(0)
    i_v[:, 4:] = torch.tensor([0.3, -2.0])
    u_t, i_t = u.clone(), i.clone()
    u_t[:, 5] = torch.randn(tiny_dataset.n_users, generator=g)
    i_t[:, 5] = torch.randn(tiny_dataset.n_items, generator=g)
    reps = {frozenset(): (u, i), frozenset({"visual"}): (u_v, i_v), frozenset({"text"}): (u_t, i_t)}
    ablations = {"": frozenset(), "text": frozenset({"visual"}), "visual": frozenset({"text"}), "again": frozenset()}
    ev, together, alone = _shared_and_alone(tiny_dataset, reps, ablations)
    assert together.keys() == alone.keys()
    for k in alone:
        assert together[k] == pytest.approx(alone[k], abs=1e-12), k
    plans = ev._derivations([reps[a] for a in ablations.values()])
    assert plans[0] is None
    assert plans[1].drop_i.shape[0] == 2 and plans[1].add_u is None  # flat columns are left out
    assert plans[2].drop_i.shape[0] == 1 and plans[2].add_i.shape[0] == 1
    assert plans[3].same


def test_a_pass_with_nothing_in_common_is_scored_alone(tiny_dataset):
    g = torch.Generator().manual_seed(1)
    reps = {a: (torch.randn(tiny_dataset.n_users, 4, generator=g), torch.randn(tiny_dataset.n_items, 4, generator=g))
            for a in (frozenset(), frozenset({"visual"}))}
    ev, together, alone = _shared_and_alone(tiny_dataset, reps, {"": frozenset(), "text": frozenset({"visual"})})
    assert together == pytest.approx(alone, abs=1e-12)
    assert ev._derivations(list(reps.values())) == [None, None]


@pytest.mark.parametrize("name", ["vbpr", "deepstyle", "grcn"])
def test_backbone_per_modality_metrics_do_not_depend_on_sharing(tiny_dataset, name):
    from mbrec.backbones import build_backbone

    torch.manual_seed(0)
    model = build_backbone({"name": name}, tiny_dataset)
    ev = Evaluator(tiny_dataset, [5, 10], torch.device("cpu"), batch_size=16)
    together = ev.evaluate(model, "valid")
    for suffix, ablate in ev.ablations().items():
        alone = ev.evaluate(model, "valid", {"": ablate})
        for k, v in alone.items():
            assert together[f"{k}/{suffix}" if suffix else k] == pytest.approx(v, abs=1e-12), (suffix, k)
