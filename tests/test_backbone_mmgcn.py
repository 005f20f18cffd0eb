"""MMGCN: one layer by hand, persisted untrained preferences, the trainable variant, the step cache."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mbrec.backbones import build_backbone
from mbrec.data.sampling import BPRSampler
from mbrec.training.objective import base_pass

from conftest import run_pipeline


@pytest.fixture(autouse=True)
def _threads() -> None:
    """One thread: these tensors are tiny, and two threads spin-wait badly on a shared CPU."""
    torch.set_num_threads(1)


def _model(ds, seed=0, **cfg):
    torch.manual_seed(seed)
    return build_backbone({"name": "mmgcn", "embedding_dim": 8, **cfg}, ds)


def _dense_adjacency(ds, self_loops: bool) -> torch.Tensor:
    r = torch.from_numpy(ds.train.toarray().astype(np.float32))
    a = torch.zeros(ds.n_users + ds.n_items, ds.n_users + ds.n_items)
    a[: ds.n_users, ds.n_users :] = r
    a[ds.n_users :, : ds.n_users] = r.T
    if self_loops:
        a += torch.eye(a.shape[0])
    return a / a.sum(1, keepdim=True).clamp_min(1)


@pytest.mark.parametrize("self_loops", [True, False])
def test_one_layer_by_hand(tiny_dataset, self_loops):
    ds = tiny_dataset
    model = _model(ds, n_layers=1, self_loops=self_loops)
    adj = _dense_adjacency(ds, self_loops)
    ids = torch.cat([model.user_id, model.item_id])
    lrelu = F.leaky_relu
    out = []
    for m in ds.modalities:
        feat = torch.from_numpy(ds.features[m].copy())
        x = F.normalize(torch.cat([getattr(model.preference, m), model.projection[m](feat)]), dim=1)
        layer = model.layers[m][0]
        h = lrelu(adj @ (x @ layer.conv.weight.T + layer.conv.bias))
        x_hat = lrelu(x @ layer.lin.weight.T + layer.lin.bias) + ids
        out.append(lrelu(h @ layer.g.weight.T + layer.g.bias + x_hat))
    z = torch.stack(out).mean(0)
    u, i = model()
    torch.testing.assert_close(u, z[: ds.n_users])
    torch.testing.assert_close(i, z[ds.n_users :])


def _train_a_little(model, ds, steps=3):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sampler = BPRSampler(ds.train, 16, torch.device("cpu"), seed=0)
    for _ in range(steps):
        loss = sum(base_pass(model, sampler.sample(), 1e-5).terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_faithful_preferences_are_untrained_but_survive_a_state_dict_round_trip(tiny_dataset):
    a = _model(tiny_dataset, seed=0)
    names = {n for n, _ in a.named_parameters()}
    assert not any(n.startswith("preference.") for n in names)
    before = {m: getattr(a.preference, m).clone() for m in tiny_dataset.modalities}
    _train_a_little(a, tiny_dataset)
    for m, theta in before.items():
        torch.testing.assert_close(getattr(a.preference, m), theta)  # untrained
    state = a.state_dict()
    assert {f"preference.{m}" for m in tiny_dataset.modalities} <= set(state)
    b = _model(tiny_dataset, seed=1)  # different random draws (what the CKD code's reload got)
    assert not torch.equal(b.preference.text, a.preference.text)
    b.load_state_dict(state)
    for x, y in zip(a(), b()):
        torch.testing.assert_close(x, y)


def test_trainable_preferences_variant(tiny_dataset):
    model = _model(tiny_dataset, trainable_preferences=True)
    owned = model.modality_parameters()
    for m in tiny_dataset.modalities:
        theta = getattr(model.preference, m)
        assert isinstance(theta, torch.nn.Parameter) and any(p is theta for p in owned[m])
    before = model.preference.visual.detach().clone()
    _train_a_little(model, tiny_dataset)
    assert not torch.allclose(model.preference.visual, before)
    # same keys as the faithful form, so either loads the other's checkpoint
    assert set(model.state_dict()) == set(_model(tiny_dataset).state_dict())


def test_ablated_input_is_the_mean_preference_and_the_mean_feature(tiny_dataset):
    model = _model(tiny_dataset)
    x = model._input("visual", frozenset({"visual"}))
    assert torch.allclose(x[: tiny_dataset.n_users], x[:1].expand(tiny_dataset.n_users, -1))
    feat_mean = torch.from_numpy(tiny_dataset.features["visual"].mean(0, keepdims=True))
    torch.testing.assert_close(x[-1:], F.normalize(model.projection["visual"](feat_mean), dim=1))


def test_step_cache_gives_the_same_values_and_gradients(tiny_dataset):
    """A CKD-like step (full + each ablated pass) inside step_cache equals the uncached one."""
    users, items = torch.tensor([1, 4, 4]), torch.tensor([3, 0, 9])
    results = []
    for cached in (False, True):
        model = _model(tiny_dataset)
        with model.step_cache() if cached else contextlib.nullcontext():
            passes = [model(users, items, ablate=a) for a in [(), *[(m,) for m in tiny_dataset.modalities]]]
            loss = sum((u * i).sum() for u, i in passes)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for g0, g1 in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g0, g1)


def test_end_to_end(tmp_path):
    value, res = run_pipeline(["backbone=mmgcn", "mlflow.enabled=false"], tmp_path)
    assert res["config"]["backbone"]["name"] == "mmgcn"
    assert 0.0 <= value <= 1.0 and 0.0 <= res["test"]["recall@20/text"] <= 1.0
