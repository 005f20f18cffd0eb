"""OGM-GE as a balancer: ratio and coefficient, which gradients are modulated, touched-only noise,
the epoch window, resume, and an end-to-end run with every registered backbone."""

from __future__ import annotations

import math

import pytest
import torch

from mbrec.backbones import build_backbone
from mbrec.balancers import build_balancer
from mbrec.balancers.ogm import coefficient, discrepancy_ratios
from mbrec.data.sampling import BPRSampler
from mbrec.training.objective import base_pass

from conftest import run_pipeline, unit_context


def _setup(ds, batch_size=8, **over):
    torch.manual_seed(0)
    model = build_backbone({"name": "vbpr", "embedding_dim": 4}, ds)
    ogm = build_balancer({"name": "ogm", "alpha": 2.0, **over})
    ogm.prepare(unit_context(ds, 7), model)
    batch = BPRSampler(ds.train, batch_size, torch.device("cpu"), seed=0).sample()
    return model, ogm, batch


def _backward(model, ogm, batch, epoch=0):
    """One training step up to the optimizer: loss, backward, gradients before and after modulation."""
    base = base_pass(model, batch, 1e-3)
    total, logs = ogm.loss(model, base, epoch)
    model.zero_grad(set_to_none=True)
    total.backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    ogm.after_backward(model, epoch)
    after = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logs, before, after


def test_ratio_and_coefficient_by_hand():
    r = discrepancy_ratios({"text": 6.0, "visual": 4.0})
    assert r == pytest.approx({"text": 1.5, "visual": 4.0 / 6.0})
    assert coefficient(1.5, 0.5) == pytest.approx(1 - math.tanh(0.75))  # 0.364851
    assert coefficient(1.5, 0.5) == pytest.approx(0.3648515, abs=1e-6)
    assert coefficient(4.0 / 6.0, 0.5) == 1.0  # only the dominant modality is slowed
    assert coefficient(1.0, 0.8) == 1.0 and coefficient(1.0 + 1e-9, 0.8) == pytest.approx(1 - math.tanh(0.8))
    assert coefficient(1.5, 0.5, "shifted") == pytest.approx(1 - math.tanh(0.25))
    assert coefficient(0.5, 0.5, "shifted") == 1.0
    # three modalities: the mean of the pairwise ratios (BB's OGM_GE3)
    assert discrepancy_ratios({"a": 2.0, "b": 1.0, "c": 4.0})["a"] == pytest.approx((2.0 + 0.5) / 2)


def test_ratio_from_the_ite_of_each_modality(tiny_dataset):
    model, ogm, batch = _setup(tiny_dataset)
    logs, _, _ = _backward(model, ogm, batch)
    u, i, j = batch.users, batch.pos, batch.neg
    s = {}
    with torch.no_grad():
        for m in tiny_dataset.modalities:
            # VBPR: the ITE is exactly m's additive share θ_u^m · W_m (f_i − f_j)
            feat = torch.tensor(tiny_dataset.features[m], dtype=torch.float32)
            share = (model.preference[m][u] * ((feat[i] - feat[j]) @ model.projection[m].weight.T)).sum(1)
            s[m] = float(torch.sigmoid(share).sum())
    assert logs["ogm/ratio/text"] == pytest.approx(s["text"] / s["visual"], rel=1e-5)
    assert logs["ogm/ratio/visual"] == pytest.approx(s["visual"] / s["text"], rel=1e-5)
    for m in tiny_dataset.modalities:
        assert logs[f"ogm/coef/{m}"] == pytest.approx(coefficient(logs[f"ogm/ratio/{m}"], 2.0))


def test_modulation_scales_owned_gradients_only(tiny_dataset):
    model, ogm, batch = _setup(tiny_dataset, ge=False)
    logs, before, after = _backward(model, ogm, batch)
    k = {m: logs[f"ogm/coef/{m}"] for m in tiny_dataset.modalities}
    assert min(k.values()) < 1.0  # one modality is actually slowed
    owned = {f"preference.{m}": m for m in k} | {f"projection.{m}.weight": m for m in k}
    for name, g in before.items():
        expected = g * k[owned[name]] if name in owned else g  # ID tables and 1-D biases: shared, untouched
        torch.testing.assert_close(after[name], expected, rtol=0, atol=0)


def test_touched_noise_leaves_untouched_rows_at_zero(tiny_dataset):
    model, ogm, batch = _setup(tiny_dataset, ge=True, scope="touched")
    logs, before, after = _backward(model, ogm, batch)
    untouched = torch.ones(tiny_dataset.n_users, dtype=torch.bool)
    untouched[batch.users] = False
    for m in tiny_dataset.modalities:
        g0, g1, k = before[f"preference.{m}"], after[f"preference.{m}"], logs[f"ogm/coef/{m}"]
        assert (g1[untouched] == 0).all()
        assert not torch.allclose(g1[~untouched], k * g0[~untouched])  # noise added where touched
        w0, w1 = before[f"projection.{m}.weight"], after[f"projection.{m}.weight"]
        assert (w1 - k * w0).ne(0).all()  # a dense matrix is touched everywhere
        # σ of the noise = std of the unmodulated touched gradient
        noise = (g1 - k * g0)[~untouched]
        assert float(noise.std()) == pytest.approx(float(g0[~untouched].std()), rel=0.5)


def test_dense_noise_reaches_every_row(tiny_dataset):
    model, ogm, batch = _setup(tiny_dataset, ge=True, scope="dense")
    _, _, after = _backward(model, ogm, batch)
    assert after["preference.text"].ne(0).all(1).all()


def test_window_and_shared_state(tiny_dataset):
    model, ogm, batch = _setup(tiny_dataset, modulation_starts=2, modulation_ends=3)
    logs, before, after = _backward(model, ogm, batch, epoch=1)
    assert logs == {} and all(torch.equal(before[n], after[n]) for n in before)
    assert _backward(model, ogm, batch, epoch=3)[0]
    assert _backward(model, ogm, batch, epoch=4)[0] == {}
    # resume: the restored noise generator continues the same stream
    state = ogm.state_dict()
    _, _, a = _backward(model, ogm, batch, epoch=2)
    fresh = _setup(tiny_dataset, modulation_starts=2, modulation_ends=3)[1]
    fresh.load_state_dict(state)
    _, _, b = _backward(model, fresh, batch, epoch=2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert fresh.results()["modulated_steps"] == 2


@pytest.mark.parametrize("backbone", ["vbpr", "mgcn"])  # every backbone: test_balancer_contract.py
def test_end_to_end(backbone, tmp_path):
    _, res = run_pipeline([f"backbone={backbone}", "balancer=ogm", "train.max_epochs=2", "mlflow.enabled=false"], tmp_path)
    summary = res["balancer"]
    assert summary["modulated_steps"] > 0
    assert all(summary["parameters"][m] for m in summary["parameters"])
    assert 0.0 < min(summary["mean_coefficient"].values()) <= 1.0
    assert "ogm/coef/text" in res["history"][0] and 0.0 <= res["test"]["recall@20"] <= 1.0
