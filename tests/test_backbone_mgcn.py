"""MGCN: the forward pass against a dense re-derivation of the equations, the weighted kNN graph, the
ablated item–item graph (no modality information unless ``keep``), the contrastive auxiliary loss,
frozen features, the step cache, an end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mbrec.backbones import build_backbone, graph
from mbrec.data.dataset import Dataset
from mbrec.data.sampling import Batch

from conftest import run_pipeline


@pytest.fixture(autouse=True)
def _threads() -> None:
    """One thread: these tensors are tiny, and two threads spin-wait badly on a shared CPU."""
    torch.set_num_threads(1)


def _model(ds, seed=0, **cfg):
    torch.manual_seed(seed)
    model = build_backbone({"name": "mgcn", "embedding_dim": 8, "knn_k": 4, **cfg}, ds)
    return model.eval()


def _dense_knn(f: np.ndarray, k: int) -> torch.Tensor:
    x = F.normalize(torch.from_numpy(f.copy()), dim=1)
    sim = x @ x.T
    top = sim.topk(k, dim=1)
    s = torch.zeros_like(sim).scatter_(1, top.indices, top.values)
    d = s.sum(1).pow(-0.5)
    return d[:, None] * s * d[None, :]


def _dense_propagate(model, ds, ablate=()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(representation, side, content) of docs/backbones.md#mgcn with dense matrices."""
    n_users = ds.n_users
    r = torch.from_numpy(ds.train.toarray().astype(np.float32))
    du, di = r.sum(1).pow(-0.5).nan_to_num(0.0, posinf=0.0), r.sum(0).pow(-0.5).nan_to_num(0.0, posinf=0.0)
    r_norm = du[:, None] * r * di[None, :]
    a = torch.zeros(n_users + ds.n_items, n_users + ds.n_items)
    a[:n_users, n_users:] = r_norm
    a[n_users:, :n_users] = r_norm.T
    x = torch.cat([model.user_id, model.item_id])
    layers = [x]
    for _ in range(model.n_ui_layers):
        layers.append(a @ layers[-1])
    content = torch.stack(layers).mean(0)
    views = []
    for m in model.modalities:
        f = model.features[m]
        if m in ablate:
            f = f.mean(0, keepdim=True)
        h = model.item_id * torch.sigmoid(model.purifier[m][0](model.projection[m](f)))
        s = _dense_knn(ds.features[m], 4)
        if m in ablate:
            s = {"uniform": torch.full_like(s, 1.0 / ds.n_items), "identity": torch.eye(ds.n_items), "keep": s}[model.ablated_item_graph]
        for _ in range(model.n_layers):
            h = s @ h
        views.append(torch.cat([r_norm @ h, h]))
    logits = torch.cat([model.query(v) for v in views], 1)
    w = torch.softmax(logits, 1 if model.fuser_softmax == "modality" else 0)
    common = w[:, :1] * views[0] + w[:, 1:] * views[1]
    side = sum(torch.sigmoid(model.preference_gate[m][0](content)) * (v - common) for m, v in zip(model.modalities, views))
    side = (side + common) / 3
    return content + side, side, content


def _permuted(ds: Dataset, modality: str) -> Dataset:
    perm = np.random.default_rng(0).permutation(ds.n_items)
    feats = {m: (f[perm] if m == modality else f) for m, f in ds.features.items()}
    return Dataset(ds.name, ds.train, ds.valid, ds.test, feats, ds.item_categories)


def test_weighted_knn_graph_matches_the_reference_construction(tiny_dataset):
    f = tiny_dataset.features["text"]
    got = graph.knn_graph(torch.from_numpy(f.copy()), 4, "sym", weighted=True).to_dense()
    torch.testing.assert_close(got, _dense_knn(f, 4), rtol=1e-5, atol=1e-6)
    binary = graph.knn_graph(torch.from_numpy(f.copy()), 4, "sym").to_dense()
    torch.testing.assert_close(binary.sum(1), torch.ones(tiny_dataset.n_items))  # k entries of 1/k per row


@pytest.mark.parametrize("cfg", [
    {},
    {"fuser_softmax": "nodes", "n_ui_layers": 1, "n_layers": 2},
    {"ablated_item_graph": "identity"},
])
def test_forward_matches_the_equations(tiny_dataset, cfg):
    model = _model(tiny_dataset, **cfg)
    for ablate in [(), ("text",)]:
        u, i = model(ablate=ablate)
        torch.testing.assert_close(torch.cat([u, i]), _dense_propagate(model, tiny_dataset, ablate)[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("choice,leaks", [("uniform", False), ("identity", False), ("keep", True)])
def test_ablated_item_graph_carries_no_modality_information(tiny_dataset, choice, leaks):
    """With m's feature rows shuffled among items (same column mean), m's ablated view is unchanged
    unless the real kNN graph is kept, which leaks m through the graph."""
    views = [_model(ds, ablated_item_graph=choice)._view("visual", frozenset({"visual"}))
             for ds in (tiny_dataset, _permuted(tiny_dataset, "visual"))]
    assert torch.allclose(views[0], views[1], atol=1e-6) != leaks
    if choice == "uniform":  # every item receives the mean over items
        items = views[0][tiny_dataset.n_users :]
        torch.testing.assert_close(items, items[:1].expand_as(items))


def _batch() -> Batch:
    return Batch(users=torch.tensor([0, 3, 3, 7]), pos=torch.tensor([1, 2, 5, 5]), neg=torch.tensor([4, 0, 6, 9]))


def test_aux_loss_is_the_weighted_infonce_and_differentiable(tiny_dataset):
    model = _model(tiny_dataset, cl_weight=0.5, cl_temperature=0.2).train()
    batch = _batch()
    model(batch.users, batch.pos)
    loss = model.aux_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    _, side, content = _dense_propagate(model, tiny_dataset)
    expected = 0
    for rows in (batch.pos + tiny_dataset.n_users, batch.users):
        a, b = F.normalize(side[rows], dim=1), F.normalize(content[rows], dim=1)
        expected = expected + F.cross_entropy(a @ b.T / 0.2, torch.arange(len(rows)))
    torch.testing.assert_close(loss, 0.5 * expected, rtol=1e-4, atol=1e-6)
    loss.backward()
    for p in (model.user_id, model.item_id, model.features["text"], model.query[0].weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # without a preceding training pass it propagates by itself, with the same value
    fresh = _model(tiny_dataset, cl_weight=0.5).train()
    torch.testing.assert_close(fresh.aux_loss(batch), loss.detach(), rtol=1e-5, atol=1e-6)
    assert _model(tiny_dataset, cl_weight=0.0).aux_loss(batch) is None


def test_frozen_features_are_not_parameters(tiny_dataset):
    model = _model(tiny_dataset, trainable_features=False)
    n_feature_values = sum(f.size for f in tiny_dataset.features.values())
    trainable = _model(tiny_dataset)
    assert sum(p.numel() for p in trainable.parameters()) - sum(p.numel() for p in model.parameters()) == n_feature_values
    owned = model.modality_parameters()
    assert owned["text"] and all(p.shape != tiny_dataset.features["text"].shape for p in owned["text"])
    torch.testing.assert_close(torch.cat(model()), torch.cat(trainable()))


def test_step_cache_gives_the_same_values_and_gradients(tiny_dataset):
    batch = _batch()
    out = []
    for cached in (False, True):
        model = _model(tiny_dataset).train()
        with model.step_cache() if cached else torch.enable_grad():
            loss = sum((lambda u, i: (u * i).sum())(*model(batch.users, batch.pos, ablate=ab)) for ab in [(), ("text",), ("visual",)])
            loss = loss + model.aux_loss(batch)
            loss.backward()
        out.append([loss.detach(), model.user_id.grad.clone(), model.features["visual"].grad.clone()])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b)


def test_end_to_end_logs_the_aux_term(tmp_path):
    _, res = run_pipeline(["backbone=mgcn", "backbone.embedding_dim=16", "mlflow.enabled=false", "train.max_epochs=2"], tmp_path)
    assert res["config"]["backbone"]["name"] == "mgcn"
    for key in ("recall@20", "recall@20/text", "recall@20/visual"):
        assert 0.0 <= res["test"][key] <= 1.0
    assert all(h["loss/aux"] > 0 for h in res["history"] if "loss/aux" in h) and any("loss/aux" in h for h in res["history"])


def test_ckd_end_to_end_on_an_early_fusion_backbone(tmp_path):
    """CKD's teachers and student (three passes per step in the step cache, plus the aux loss) run on MGCN."""
    _, res = run_pipeline(["backbone=mgcn", "backbone.embedding_dim=16", "balancer=ckd", "balancer.gd_samples=32",
                           "balancer.teachers.train.max_epochs=2", "train.max_epochs=2", "mlflow.enabled=false"], tmp_path)
    assert set(res["balancer"]["teachers"]) == {"text", "visual"}
    assert "loss/sd/text" in res["history"][0] and "loss/aux" in res["history"][0]
    assert 0.0 <= res["test"]["recall@20/visual"] <= 1.0
