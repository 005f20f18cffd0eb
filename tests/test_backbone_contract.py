"""The contract every registered backbone must meet (runs automatically for each new backbone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrec.backbones import BACKBONES, build_backbone
from mbrec.data.dataset import Dataset
from mbrec.data.sampling import BPRSampler
from mbrec.training.objective import base_pass

from conftest import compose

NAMES = sorted(BACKBONES)


def _cfg(name: str, tmp_path) -> dict:
    from omegaconf import OmegaConf

    cfg = compose([f"backbone={name}"], tmp_path)
    return OmegaConf.to_container(cfg.backbone, resolve=True)


def _build(name, dataset, tmp_path, seed=0):
    torch.manual_seed(seed)
    model = build_backbone(_cfg(name, tmp_path), dataset)
    model.eval()  # no dropout noise in comparisons
    return model


def _permuted(ds: Dataset, modality: str, seed: int = 0) -> Dataset:
    """Same data, but modality's feature rows shuffled among items (the column mean is unchanged)."""
    perm = np.random.default_rng(seed).permutation(ds.n_items)
    feats = {m: (f[perm] if m == modality else f) for m, f in ds.features.items()}
    return Dataset(ds.name, ds.train, ds.valid, ds.test, feats, ds.item_categories)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_finite(name, tiny_dataset, tmp_path):
    model = _build(name, tiny_dataset, tmp_path)
    for ablate in [(), *[(m,) for m in tiny_dataset.modalities], tuple(tiny_dataset.modalities)]:
        u, i = model(ablate=ablate)
        assert u.shape[0] == tiny_dataset.n_users and i.shape[0] == tiny_dataset.n_items
        assert u.shape[1] == i.shape[1]
        assert torch.isfinite(u).all() and torch.isfinite(i).all()
    users, items = torch.tensor([3, 0, 5]), torch.tensor([7, 7, 1, 2])
    u_sub, i_sub = model(users=users, items=items)
    u_all, i_all = model()
    torch.testing.assert_close(u_sub, u_all[users], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(i_sub, i_all[items], rtol=1e-5, atol=1e-5)


def _train_loss(model, dataset: Dataset, ablate=()) -> torch.Tensor:
    """The training loss of one fixed batch (a training-mode pass, torch's RNG seeded)."""
    model.train()
    torch.manual_seed(0)
    model.on_epoch_start(0)
    batch = BPRSampler(dataset.train, 16, torch.device("cpu"), seed=0).sample()
    loss = sum(base_pass(model, batch, 1e-5, ablate).terms.values()).detach()
    model.eval()
    return loss


@pytest.mark.parametrize("name", NAMES)
def test_ablation_removes_the_modality(name, tiny_dataset, tmp_path):
    """Shuffling m's features leaves the m-ablated scores and training loss unchanged, and moves the
    full pass's scores or, for a model whose scores do not read the features (BM3), its training loss."""
    for m in tiny_dataset.modalities:
        permuted = _permuted(tiny_dataset, m)
        a = _build(name, tiny_dataset, tmp_path)
        b = _build(name, permuted, tmp_path)
        ua, ia = a(ablate={m})
        ub, ib = b(ablate={m})
        torch.testing.assert_close(ua @ ia.T, ub @ ib.T, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(_train_loss(a, tiny_dataset, {m}), _train_loss(b, permuted, {m}), rtol=1e-4, atol=1e-5)
        fa, fb = a(), b()
        moved = not torch.allclose(fa[0] @ fa[1].T, fb[0] @ fb[1].T, atol=1e-4)
        moved = moved or not torch.allclose(_train_loss(a, tiny_dataset), _train_loss(b, permuted), atol=1e-5)
        assert moved, f"{name}: neither the scores nor the loss depend on {m}"


@pytest.mark.parametrize("name", NAMES)
def test_modality_parameters_are_parameters(name, tiny_dataset, tmp_path):
    model = _build(name, tiny_dataset, tmp_path)
    owned = model.modality_parameters()
    assert set(owned) == set(tiny_dataset.modalities)
    ids = {id(p) for p in model.parameters()}
    for m, params in owned.items():
        assert params, f"{name}: no parameter owned by {m}"
        assert all(id(p) in ids for p in params)


@pytest.mark.parametrize("name", NAMES)
def test_trains(name, tiny_dataset, tmp_path):
    """The base loss (BPR, or the model's own objective) goes down over a few epochs on a tiny dataset."""
    model = _build(name, tiny_dataset, tmp_path)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    sampler = BPRSampler(tiny_dataset.train, 32, torch.device("cpu"), seed=0)
    losses = []
    for epoch in range(8):
        model.on_epoch_start(epoch)
        total = 0.0
        for _ in range(sampler.steps_per_epoch):
            p = base_pass(model, sampler.sample(), 1e-5)
            loss = sum(p.terms.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += (p.terms["bpr"] if "bpr" in p.terms else loss).item()
        losses.append(total / sampler.steps_per_epoch)
    assert losses[-1] < losses[0] * 0.9, losses
