"""Ranking metrics against values computed by hand."""

import math

import pytest
import torch

from mbrec.training.metrics import ranking_metrics

L2, L3 = 1.0, 1 / math.log2(3)  # discounts at ranks 1, 2 (rank 3: 1/2, rank 4: 1/log2(5))


def _m(hits, n_rel, ks):
    out = ranking_metrics(torch.tensor(hits, dtype=torch.bool), torch.tensor(n_rel), ks)
    return {k: v.tolist() for k, v in out.items()}


def test_recall_precision_and_both_ndcgs_by_hand():
    # one user, |T| = 3, hits at ranks 1 and 3 of a top-4 list
    m = _m([[1, 0, 1, 0]], [3], [2, 4])
    assert m["recall@2"] == pytest.approx([1 / 3])
    assert m["recall@4"] == pytest.approx([2 / 3])
    assert m["precision@2"] == pytest.approx([0.5])
    assert m["precision@4"] == pytest.approx([0.5])
    assert m["hit@2"] == [1.0]
    dcg2, dcg4 = 1.0, 1.0 + 0.5
    assert m["ndcg@2"] == pytest.approx([dcg2 / (1 + L3)])  # ideal: min(|T|, 2) = 2 relevant
    assert m["ndcg@4"] == pytest.approx([dcg4 / (1 + L3 + 0.5)])  # ideal: 3 relevant
    # LATTICE: the ideal is the retrieved list sorted: 2 hits in the top-4 list
    assert m["ndcg_lattice@2"] == pytest.approx([dcg2 / (1 + L3)])
    assert m["ndcg_lattice@4"] == pytest.approx([dcg4 / (1 + L3)])


def test_user_with_fewer_relevant_items_than_k():
    m = _m([[0, 1, 0, 0]], [1], [2, 4])
    assert m["recall@2"] == pytest.approx([1.0])
    assert m["precision@2"] == pytest.approx([0.5])
    assert m["ndcg@2"] == pytest.approx([L3 / 1.0])  # ideal has one relevant item at rank 1
    assert m["ndcg@4"] == pytest.approx([L3])
    assert m["ndcg_lattice@4"] == pytest.approx([L3])


def test_spec_example_lattice_ndcg_exceeds_standard():
    # docs/evaluation.md#metrics: |T| = 3, one hit at rank 1, K = 20 -> standard ≈ 0.469, LATTICE = 1.0
    hits = [[1] + [0] * 19]
    m = _m(hits, [3], [20])
    assert m["ndcg@20"] == pytest.approx([1 / (1 + L3 + 0.5)], abs=1e-12)
    assert m["ndcg@20"][0] == pytest.approx(0.469, abs=1e-3)
    assert m["ndcg_lattice@20"] == pytest.approx([1.0])


def test_no_hits_is_zero_and_batch_is_per_user():
    m = _m([[0, 0, 0], [1, 1, 1]], [2, 3], [3])
    assert m["recall@3"] == pytest.approx([0.0, 1.0])
    assert m["ndcg@3"] == pytest.approx([0.0, 1.0])
    assert m["ndcg_lattice@3"] == pytest.approx([0.0, 1.0])


def test_k_outside_list_is_an_error():
    with pytest.raises(ValueError):
        ranking_metrics(torch.zeros(1, 3, dtype=torch.bool), torch.tensor([1]), [5])
