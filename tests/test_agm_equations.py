"""AGM's formulas (docs/balancers.md#agm-balanceragm) on small inputs computed by hand, and its
modulated backward on a real VBPR step."""

import math

import pytest
import torch

from mbrec.balancers import agm

T = torch.tensor


def test_shapley_responses_of_two_modalities_are_the_official_ones():
    c = agm.shapley_coefficients(["a", "v"])
    # φ^a = ½(f(av) − f(v) + f(a)): the official Modality_Audio
    assert c["a"] == {frozenset("a"): 0.5, frozenset("v"): -0.5, frozenset("av"): 0.5}
    assert c["v"] == {frozenset("a"): -0.5, frozenset("v"): 0.5, frozenset("av"): 0.5}


def test_shapley_responses_sum_to_the_full_margin():
    c = agm.shapley_coefficients(["a", "b", "c"])
    assert c["a"][frozenset("a")] == pytest.approx(1 / 3)  # 0!2!/3!
    assert c["a"][frozenset("ab")] == pytest.approx(1 / 6)  # 1!1!/3!
    assert c["a"][frozenset("b")] == pytest.approx(-1 / 6)
    assert c["a"][frozenset("bc")] == pytest.approx(-1 / 3)
    for kept in c["a"]:  # Σ_m c_m(T) = 1 for T = all modalities, else 0
        assert sum(c[m][kept] for m in "abc") == pytest.approx(1.0 if len(kept) == 3 else 0.0)


def test_coefficient_slows_the_modality_ahead_of_its_running_standing():
    # s^a = 0.2 (better), s^v = 0.6, running averages equal: r^a = e^{0.4}, r̂^a = 1
    k = agm.agm_coefficients({"a": T(0.2), "v": T(0.6)}, {"a": T(0.5), "v": T(0.5)}, alpha=1.0)
    assert float(k["a"]) == pytest.approx(math.exp(1 - math.exp(0.4)))  # 0.6115
    assert float(k["v"]) == pytest.approx(math.exp(1 - math.exp(-0.4)))  # 1.3905
    # α scales the exponent; α = 0 switches AGM off
    k = agm.agm_coefficients({"a": T(0.2), "v": T(0.6)}, {"a": T(0.5), "v": T(0.5)}, alpha=0.5)
    assert float(k["a"]) == pytest.approx(math.exp(0.5 * (1 - math.exp(0.4))))
    k0 = agm.agm_coefficients({"a": T(0.2), "v": T(0.6)}, {"a": T(0.5), "v": T(0.5)}, alpha=0.0)
    assert float(k0["a"]) == float(k0["v"]) == 1.0


def test_coefficient_exponent_is_capped():
    # running standing far above the batch's: r̂^v − r^v = e^{3} − e^{-3} > cap 10 (official)
    k = agm.agm_coefficients({"a": T(0.0), "v": T(3.0)}, {"a": T(3.0), "v": T(0.0)}, alpha=1.0)
    assert float(k["v"]) == pytest.approx(math.exp(10.0))


def test_running_average_and_score():
    assert float(agm.update_running(T(0.5), T(0.2), step=4)) == pytest.approx(0.5 * 3 / 4 + 0.2 / 4)
    assert float(agm.update_running(T(0.0), T(0.7), step=1)) == pytest.approx(0.7)
    # −ln σ(0) = ln 2; −ln σ(−100) = 100, capped at −ln 1e-8
    assert float(agm.response_score(T([0.0, -100.0]))) == pytest.approx((math.log(2) - math.log(1e-8)) / 2)


def _step(ds, alpha):
    from mbrec.backbones import build_backbone
    from mbrec.balancers import build_balancer
    from mbrec.data.sampling import BPRSampler
    from mbrec.training.objective import base_pass

    from conftest import unit_context

    torch.manual_seed(0)
    model = build_backbone({"name": "vbpr", "embedding_dim": 4}, ds)
    bal = build_balancer({"name": "agm", "alpha": alpha})
    bal.prepare(unit_context(ds, 0), model)
    batch = BPRSampler(ds.train, 8, torch.device("cpu"), seed=0).sample()
    bal.running = {m: torch.tensor(0.3) for m in model.modalities}
    bal.iteration = 5
    base = base_pass(model, batch, 0.0)  # no L2: its gradient is not modulated
    total, logs = bal.loss(model, base, 0)
    model.zero_grad(set_to_none=True)
    total.backward(retain_graph=True)
    return model, base, total, logs, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_modulated_backward_keeps_the_loss_and_alpha_zero_is_plain_bpr(tiny_dataset):
    model, base, total, logs, grads = _step(tiny_dataset, alpha=0.0)
    assert float(total.detach()) == pytest.approx(float(sum(base.terms.values()).detach()), rel=1e-5)  # Σφ^m = Δ
    model.zero_grad(set_to_none=True)
    sum(base.terms.values()).backward()
    plain = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    for n, g in plain.items():
        assert torch.allclose(grads[n], g, atol=1e-6), n
    # the running averages moved by the official cumulative mean, from the batch's scores
    for m in model.modalities:
        assert float(logs[f"agm/running/{m}"]) == pytest.approx(0.3 * 5 / 6 + float(logs[f"agm/score/{m}"]) / 6)


def test_modulated_backward_scales_each_response(tiny_dataset):
    """With α > 0 the gradient is Σ_m k^m ∂φ^m: a modality slowed (k < 1) gets a smaller gradient on
    its own projection than plain BPR gives it."""
    model, base, total, logs, grads = _step(tiny_dataset, alpha=2.0)
    _, _, _, _, plain = _step(tiny_dataset, alpha=0.0)
    for m in model.modalities:
        k = float(logs[f"agm/coef/{m}"])
        name = next(n for n in grads if n.startswith(f"projection.{m}") and n.endswith("weight"))
        # m's projection only enters φ^m's passes that keep m; its gradient scales with k^m exactly
        assert torch.allclose(grads[name], k * plain[name], rtol=1e-4, atol=1e-7), (m, k)
