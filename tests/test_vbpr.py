"""VBPR: the representation is the CKD form, and ablation removes exactly the modality's term."""

import torch

from mbrec.backbones import build_backbone


def _model(ds):
    torch.manual_seed(0)
    return build_backbone({"name": "vbpr", "embedding_dim": 4}, ds)


def test_score_is_id_plus_per_modality_terms(tiny_dataset):
    m = _model(tiny_dataset)
    u, i = m()
    f = {k: torch.from_numpy(v.copy()) for k, v in tiny_dataset.features.items()}
    by_hand = m.user_id @ m.item_id.T
    for k in tiny_dataset.modalities:
        by_hand = by_hand + m.preference[k] @ m.projection[k](f[k]).T
    torch.testing.assert_close(u @ i.T, by_hand)


def test_ablation_removes_exactly_the_modality_from_every_pairwise_difference(tiny_dataset):
    m = _model(tiny_dataset)
    f = {k: torch.from_numpy(v.copy()) for k, v in tiny_dataset.features.items()}
    users, pos, neg = torch.arange(10), torch.arange(10, 20), torch.arange(20, 30)
    for ablated in tiny_dataset.modalities:
        kept = [k for k in tiny_dataset.modalities if k != ablated]
        u, i = m(ablate={ablated})
        diff = (u[users] * (i[pos] - i[neg])).sum(1)
        expected = (m.user_id[users] * (m.item_id[pos] - m.item_id[neg])).sum(1)
        for k in kept:
            proj = m.projection[k](f[k])
            expected = expected + (m.preference[k][users] * (proj[pos] - proj[neg])).sum(1)
        torch.testing.assert_close(diff, expected)
        # and the full pass differs by the ablated modality's term
        uf, itf = m()
        full = (uf[users] * (itf[pos] - itf[neg])).sum(1)
        proj = m.projection[ablated](f[ablated])
        term = (m.preference[ablated][users] * (proj[pos] - proj[neg])).sum(1)
        torch.testing.assert_close(full, expected + term)


def test_unknown_modality_is_rejected(tiny_dataset):
    import pytest

    with pytest.raises(ValueError, match="cannot ablate"):
        _model(tiny_dataset)(ablate={"audio"})


def test_step_cache_gives_the_same_values_and_gradients(tiny_dataset):
    """Inside step_cache every item is projected once and shared; results must not change."""
    users, items = torch.tensor([1, 4, 4]), torch.tensor([3, 0, 9])
    out = []
    for cached in (False, True):
        m = _model(tiny_dataset)
        ctx = m.step_cache() if cached else __import__("contextlib").nullcontext()
        with ctx:
            u, i = m(users=users, items=items)
            u2, i2 = m(users=users, items=items, ablate={"visual"})
            loss = (u * i).sum() + (u2 * i2).sum()
            loss.backward()
        out.append((u.detach(), i.detach(), m.projection["text"].weight.grad.clone(), m.preference["visual"].grad.clone()))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b)
