"""FREEDOM and BM3 equal enoche/MMRec's models (commit e775373b) on a tiny fixed dataset: the full score
matrix and the loss of one training step, from the same initial weights, within 1e-5.

tests/fixtures/mmrec_reference.npz holds the inputs (interactions, features, the reference models'
initial weights under mbrec's parameter names, one batch, the RNG seed of the step) and the reference's
outputs, recorded by running MMRec's own classes (docs/backbones.md#freedom says how). Also: each
model's modality ablation (docs/backbones.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mbrec.backbones import build_backbone
from mbrec.data.dataset import Dataset
from mbrec.data.sampling import Batch
from mbrec.training.objective import base_pass

FIXTURE = Path(__file__).parent / "fixtures" / "mmrec_reference.npz"
CONFIGS = {  # the harness's reference settings, as mbrec config keys
    "freedom": {"name": "freedom", "embedding_dim": 8, "knn_k": 3, "n_mm_layers": 1, "n_ui_layers": 2,
                "reg_weight": 1e-3, "dropout": 0.5, "graph_weights": {"visual": 0.1, "text": 0.9}},
    "bm3": {"name": "bm3", "embedding_dim": 8, "n_layers": 2, "reg_weight": 0.1, "cl_weight": 2.0, "dropout": 0.3},
}


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURE))


def _dataset(ref, permute: str | None = None) -> Dataset:
    n_users, n_items = (int(x) for x in ref["shape"])
    train = sp.csr_matrix((np.ones(len(ref["train_indices"]), dtype=np.float32), ref["train_indices"],
                           ref["train_indptr"]), shape=(n_users, n_items))
    empty = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    feats = {m: ref[f"feat_{m}"] for m in ("text", "visual")}
    if permute:
        feats[permute] = feats[permute][np.random.default_rng(0).permutation(n_items)]
    return Dataset("reference", train, empty, empty, feats)


def _model(name: str, ref, permute: str | None = None, **overrides):
    dataset = _dataset(ref, permute)
    model = build_backbone({**CONFIGS[name], **overrides}, dataset)
    state = {k.split("/", 1)[1]: torch.from_numpy(v) for k, v in ref.items() if k.startswith(f"{name}/")
             and k.split("/", 1)[1] not in ("scores", "loss", "config")}
    if permute:  # the trainable feature table starts from the (permuted) data
        state[f"features.{permute}"] = torch.from_numpy(np.array(dataset.features[permute]))
    model.load_state_dict(state, strict=True)
    return model


def _scores(model, ablate=()) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        u, i = model(ablate=ablate)
    return u @ i.T


def _step_loss(model, ref, ablate=()) -> torch.Tensor:
    model.train()
    torch.manual_seed(int(ref["loss_seed"]))
    model.on_epoch_start(0)
    batch = Batch(*(torch.from_numpy(ref[f"batch_{k}"]) for k in ("users", "pos", "neg")))
    p = base_pass(model, batch, 0.0, ablate)  # train.l2 = 0: the references have no such term
    return sum(p.terms.values()).detach()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scores_and_loss_equal_the_reference(name, ref):
    model = _model(name, ref)
    torch.testing.assert_close(_scores(model), torch.from_numpy(ref[f"{name}/scores"]), rtol=0, atol=1e-5)
    assert abs(float(_step_loss(model, ref)) - float(ref[f"{name}/loss"])) < 1e-5


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("m", ["text", "visual"])
def test_ablating_a_modality_removes_it_from_scores_and_loss(name, m, ref):
    """Shuffling m's features among the items changes the model (its kNN graph for FREEDOM, its
    alignment loss for BM3) but neither the m-ablated scores nor the m-ablated training loss."""
    a, b = _model(name, ref), _model(name, ref, permute=m)
    torch.testing.assert_close(_scores(a, {m}), _scores(b, {m}), rtol=0, atol=1e-6)
    torch.testing.assert_close(_step_loss(a, ref, {m}), _step_loss(b, ref, {m}), rtol=0, atol=1e-6)
    assert not torch.allclose(_step_loss(a, ref), _step_loss(b, ref), atol=1e-6)
    if name == "freedom":
        assert not torch.allclose(_scores(a), _scores(b), atol=1e-5)


def test_freedom_ablated_graph_is_the_uniform_graph(ref):
    """``uniform``: the ablated modality's kNN graph sends every item the item mean; ``keep`` leaks m
    (its ablated scores still move with m's features) and ``identity`` leaves the items unsmoothed."""
    model = _model("freedom", ref)
    model.eval()
    w = model.weights
    q = model.item_id.detach()
    expected = w["visual"] * torch.sparse.mm(model.item_graph_visual.to_sparse_coo(), q) + w["text"] * q.mean(0, keepdim=True)
    torch.testing.assert_close(model._item_view(frozenset({"text"})).detach(), expected, rtol=0, atol=1e-6)
    identity = _model("freedom", ref, ablated_item_graph="identity")._item_view(frozenset({"text"})).detach()
    torch.testing.assert_close(identity, w["visual"] * torch.sparse.mm(model.item_graph_visual.to_sparse_coo(), q) + w["text"] * q)
    keep_a = _model("freedom", ref, ablated_item_graph="keep")
    keep_b = _model("freedom", ref, permute="text", ablated_item_graph="keep")
    assert not torch.allclose(_scores(keep_a, {"text"}), _scores(keep_b, {"text"}), atol=1e-5)


def test_bm3_scores_do_not_read_the_features(ref):
    """BM3 scores by its ID representations only (as the reference): every ablated score pass equals
    the full one; ablation acts on the loss (m's alignment terms are dropped)."""
    model = _model("bm3", ref)
    full = _scores(model)
    for ablate in ({"text"}, {"visual"}, {"text", "visual"}):
        torch.testing.assert_close(_scores(model, ablate), full, rtol=0, atol=0)
    losses = [float(_step_loss(model, ref, a)) for a in ((), {"text"}, {"text", "visual"})]
    assert losses[0] > losses[1] > losses[2]
