"""EgoGCN: the forward pass against a dense re-derivation of the equations, hard vs soft fusion, the
ID-branch quirk switch, in-place preference projection, the step cache, an end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mbrec.backbones import build_backbone
from mbrec.data.dataset import Dataset

from conftest import run_pipeline


@pytest.fixture(autouse=True)
def _threads() -> None:
    """One thread: these tensors are tiny, and two threads spin-wait badly on a shared CPU."""
    torch.set_num_threads(1)


def _model(ds, seed=0, **cfg):
    torch.manual_seed(seed)
    model = build_backbone({"name": "egogcn", "embedding_dim": 8, **cfg}, ds)
    return model.eval()


def _binary_adjacency(ds) -> torch.Tensor:
    r = torch.from_numpy(ds.train.toarray().astype(np.float32))
    a = torch.zeros(ds.n_users + ds.n_items, ds.n_users + ds.n_items)
    a[: ds.n_users, ds.n_users :] = r
    a[ds.n_users :, : ds.n_users] = r.T
    return a


def _dense_forward(model, ds, ablate=()) -> torch.Tensor:
    """[id ‖ Z^m ...] of docs/backbones.md#egogcn with dense matrices (a[t, s] = 1 for an edge s → t)."""
    a = _binary_adjacency(ds)
    has_edges = a.sum(1, keepdim=True) > 0

    def softmax(logits):
        return torch.softmax(logits.masked_fill(a == 0, -torch.inf), 1).nan_to_num(0.0)

    inputs = {}
    for m in model.modalities:
        pref = F.normalize(model.preference[m], dim=1)
        f = torch.from_numpy(ds.features[m].copy())
        if m in ablate:
            pref = F.normalize(pref.mean(0, keepdim=True), dim=1).expand_as(pref)
            f = f.mean(0, keepdim=True).expand_as(f)
        inputs[m] = torch.cat([pref, F.normalize(F.leaky_relu(model.projection[m](f)), dim=1)])
    n = len(inputs)
    parts = []
    for m, x in inputs.items():
        others = {o: y for o, y in inputs.items() if o != m}
        alpha = softmax(x @ x.T)
        if model.fusion == "soft":
            fused = (x + sum(torch.sigmoid(model.gate[f"{o}_to_{m}"](y)) * y for o, y in others.items())) / n
            alpha = softmax(x @ fused.T) if model.reattention else alpha
            out = alpha @ fused
        else:
            fused = (x + sum(others.values())) / n
            hot = (alpha > model.threshold).float()
            if model.reattention:
                alpha = softmax(hot * (x @ fused.T) + (1 - hot) * (x @ x.T))
            out = (alpha * (1 - hot)) @ x + (alpha * hot) @ fused
        x = F.normalize(torch.where(has_edges, out, x), dim=1)
        for _ in range(model.num_routing):
            x = F.normalize(x + softmax(x @ x.T) @ x, dim=1)
        parts.append(x)
    deg = a.sum(1)
    d = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    a_sym = d[:, None] * a * d[None, :]
    layers = [F.normalize(model.id_embedding, dim=1)]
    for layer in range(1, model.id_layers + 1):
        src = layers[-2] if model.id_propagation == "reference" and layer == model.id_layers else layers[-1]
        layers.append(a_sym @ src)
    return torch.cat([sum(layers), *parts], 1)


def _permuted(ds: Dataset, modality: str) -> Dataset:
    perm = np.random.default_rng(0).permutation(ds.n_items)
    feats = {m: (f[perm] if m == modality else f) for m, f in ds.features.items()}
    return Dataset(ds.name, ds.train, ds.valid, ds.test, feats, ds.item_categories)


@pytest.mark.parametrize("cfg", [
    {"fusion": "soft"},
    {"fusion": "soft", "reattention": False},
    {"fusion": "hard", "threshold": 0.3},
    {"fusion": "hard", "threshold": 0.3, "reattention": False, "id_propagation": "reference"},
])
def test_forward_matches_the_equations(tiny_dataset, cfg):
    model = _model(tiny_dataset, **cfg)
    for ablate in [(), ("visual",)]:
        u, i = model(ablate=ablate)
        expected = _dense_forward(model, tiny_dataset, ablate)
        torch.testing.assert_close(torch.cat([u, i]), expected, rtol=1e-4, atol=1e-5)


def test_hard_fusion_threshold_is_effective(tiny_dataset):
    """Threshold 1 (no edge is ever above it): no fusion, the visual branch ignores the text input.
    Threshold −1 (every edge): the message is (x + y)/2, i.e. soft fusion with fully open gates."""
    d = 8
    visual = slice(2 * d, 3 * d)  # [id | text | visual]
    shuffled = _permuted(tiny_dataset, "text")
    closed = [_model(ds, fusion="hard", threshold=1.0)()[1][:, visual] for ds in (tiny_dataset, shuffled)]
    torch.testing.assert_close(closed[0], closed[1])
    soft = [_model(ds, fusion="soft")()[1][:, visual] for ds in (tiny_dataset, shuffled)]
    assert not torch.allclose(soft[0], soft[1], atol=1e-4), "soft fusion ignores the other modality"

    hard_all = _model(tiny_dataset, fusion="hard", threshold=-1.0)
    soft_open = _model(tiny_dataset, fusion="soft")
    with torch.no_grad():
        for gate in soft_open.gate.values():
            gate.weight.zero_()
            gate.bias.fill_(50.0)  # σ = 1
    torch.testing.assert_close(torch.cat(hard_all()), torch.cat(soft_open()), rtol=1e-5, atol=1e-6)


def test_reference_id_quirk_repeats_the_second_layer(tiny_dataset):
    """id_propagation=reference: X3 = ÃX1 = X2, so id = X0 + X1 + 2·X2; lightgcn: X0 + X1 + X2 + X3."""
    ref, fixed = (_model(tiny_dataset, id_propagation=p)._id_representation() for p in ("reference", "lightgcn"))
    assert not torch.allclose(ref, fixed, atol=1e-5)
    model = _model(tiny_dataset)
    a = _binary_adjacency(tiny_dataset)
    d = a.sum(1).pow(-0.5).nan_to_num(0.0, posinf=0.0)
    a_sym = d[:, None] * a * d[None, :]
    x0 = F.normalize(model.id_embedding, dim=1)
    x1 = a_sym @ x0
    x2 = a_sym @ x1
    torch.testing.assert_close(ref, x0 + x1 + 2 * x2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fixed, x0 + x1 + x2 + a_sym @ x2, rtol=1e-5, atol=1e-6)


def test_inplace_preference_norm_projects_parameters_and_allows_several_passes(tiny_dataset):
    functional, inplace = (_model(tiny_dataset, preference_norm=p).train() for p in ("functional", "inplace"))
    torch.testing.assert_close(torch.cat(functional()), torch.cat(inplace()))
    theta = inplace.preference["text"]
    torch.testing.assert_close(theta.detach().norm(dim=1), torch.ones(tiny_dataset.n_users))
    opt = torch.optim.SGD(inplace.parameters(), lr=1.0)
    for _ in range(2):
        # a CKD-like step: several passes, one backward (the projection must not break autograd)
        loss = sum(inplace(ablate=ab)[0].sum() for ab in [(), ("text",), ("visual",)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.allclose(theta.detach().norm(dim=1), torch.ones(tiny_dataset.n_users))
    inplace()
    torch.testing.assert_close(theta.detach().norm(dim=1), torch.ones(tiny_dataset.n_users))


def test_node_without_neighbours_keeps_its_own_input(tiny_dataset):
    """An item without training interactions gets its own (unit-norm) input in every branch, not 0."""
    train = tiny_dataset.train.tolil()
    train[:, 0] = 0
    train = train.tocsr()
    train.eliminate_zeros()
    ds = Dataset(tiny_dataset.name, train, tiny_dataset.valid, tiny_dataset.test, tiny_dataset.features)
    model = _model(ds)
    _, items = model()
    inputs = {m: model._input(m, frozenset()) for m in model.modalities}
    for k, m in enumerate(model.modalities, start=1):
        torch.testing.assert_close(items[0, 8 * k : 8 * (k + 1)], inputs[m][ds.n_users])
    assert (items[0, 8:].norm() > 0).item()


def test_modality_parameters_follow_the_features(tiny_dataset):
    model = _model(tiny_dataset)
    owned = {m: {id(p) for p in ps} for m, ps in model.modality_parameters().items()}
    assert id(model.gate["text_to_visual"].weight) in owned["text"]  # only text's input flows through it
    assert id(model.preference["visual"]) in owned["visual"] and id(model.projection["visual"].weight) in owned["visual"]
    assert id(model.id_embedding) not in owned["text"] | owned["visual"]
    assert not owned["text"] & owned["visual"]


def test_step_cache_gives_the_same_values_and_gradients(tiny_dataset):
    users, items = torch.tensor([1, 4, 4]), torch.tensor([3, 0, 9])
    out = []
    for cached in (False, True):
        model = _model(tiny_dataset).train()
        with model.step_cache() if cached else torch.enable_grad():
            loss = sum((lambda u, i: (u * i).sum())(*model(users, items, ablate=ab)) for ab in [(), ("text",), ("visual",)])
            loss.backward()
        out.append([loss.detach(), model.id_embedding.grad.clone(), model.projection["text"].weight.grad.clone()])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b)


def test_bad_switch_is_a_clear_error(tiny_dataset):
    with pytest.raises(ValueError, match="backbone.fusion='medium'"):
        _model(tiny_dataset, fusion="medium")


def test_end_to_end(tmp_path):
    _, res = run_pipeline(["backbone=egogcn", "backbone.embedding_dim=16", "mlflow.enabled=false", "train.max_epochs=2"], tmp_path)
    assert res["config"]["backbone"]["name"] == "egogcn"
    for key in ("recall@20", "recall@20/text", "recall@20/visual"):
        assert 0.0 <= res["test"][key] <= 1.0
