"""LGMRec: randomness (Gumbel noise and dropout in training only, one draw per multi-pass step), the
reference's regulariser (Frobenius norms), and the ablation (m's hyperedges and modality embedding carry no
item-specific information)."""

from __future__ import annotations

import pytest
import torch

from mbrec.backbones import build_backbone
from mbrec.data.sampling import BPRSampler
from mbrec.training.objective import base_pass


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _model(ds, **cfg):
    torch.manual_seed(0)
    return build_backbone({"name": "lgmrec", "embedding_dim": 8, "feat_embed_dim": 8, **cfg}, ds)


def test_noise_in_training_only_and_shared_by_the_passes_of_a_step(tiny_dataset):
    model = _model(tiny_dataset).eval()
    with torch.no_grad():
        torch.testing.assert_close(model()[1], model()[1])  # evaluation: no noise
    model.train()
    assert not torch.allclose(model()[1], model()[1])  # training: a new draw per pass
    with model.step_cache():
        torch.testing.assert_close(model()[1], model()[1])  # one draw per multi-pass step


def test_regulariser_is_the_reference_sum_of_norms(tiny_dataset):
    model = _model(tiny_dataset).train()
    batch = BPRSampler(tiny_dataset.train, 16, torch.device("cpu"), seed=0).sample()
    torch.manual_seed(1)
    p = base_pass(model, batch, 0.5)
    expected = 0.5 * (p.user.norm() + p.pos.norm() + p.neg.norm()) / len(batch)
    torch.testing.assert_close(p.terms["l2"], expected)
    assert set(p.terms) == {"bpr", "l2", "aux"}


def test_ablated_modality_has_no_item_specific_hyperedges(tiny_dataset):
    model = _model(tiny_dataset).eval()
    with torch.no_grad():
        item_hyper, _ = model._hypergraph("visual", frozenset({"visual"}), None)
        items = model.item_input("visual", frozenset({"visual"}), None, lambda f: f @ model.projection["visual"])
    assert torch.allclose(item_hyper, item_hyper[:1].expand_as(item_hyper))
    assert torch.allclose(items, items[:1].expand_as(items))
    assert torch.allclose(model._hypergraph("text", frozenset(), None)[0].sum(1), torch.ones(tiny_dataset.n_items))


def test_feature_widths_must_match(tiny_dataset):
    with pytest.raises(ValueError, match="feat_embed_dim"):
        _model(tiny_dataset, feat_embed_dim=4)


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_fused_contrast_equals_the_reference_formula_and_its_gradient(chunk):
    """The chunked contrast (gradient formed in the forward pass) against the reference's ssl_triple_loss
    written out with autograd: value and both gradients, repeated positives included."""
    from mbrec.backbones.lgmrec import triple_contrast

    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    everyone = torch.randn(11, 5, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 3, 3, 10, 5, 0, 7])

    def naive(a, everyone):
        an, en = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(everyone, dim=1)
        bn = en[index]
        return (torch.logsumexp(an @ en.T / 0.2, 1) - (an * bn).sum(1) / 0.2).sum()

    expected = naive(a, everyone)
    ga, ge = torch.autograd.grad(expected * 3.0, (a, everyone))
    got = triple_contrast(a.double(), everyone, index, 0.2, chunk=chunk)
    assert got.dtype == torch.float32  # computed in fp32 whatever the inputs (bf16 autocast included)
    fa, fe = torch.autograd.grad(got * 3.0, (a, everyone))
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(fa, ga, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fe, ge, rtol=1e-5, atol=1e-5)
