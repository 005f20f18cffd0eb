"""Every CKD equation (eqs. 11–19, docs/method.md) on small tensors against values computed by hand."""

import math

import pytest
import torch

from mbrec.balancers import ckd_losses as eq

T = torch.tensor


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_eq11_hinge_specific_distillation():
    dt, ds = T([1.0, 0.5, -0.2]), T([0.4, 0.7, -1.0])
    per = eq.specific_distillation(dt, ds, "hinge")
    assert per.tolist() == pytest.approx([0.6, 0.0, 0.8])
    assert float(eq.reduce(per, "mean")) == pytest.approx(1.4 / 3)
    assert float(eq.reduce(per, "sum")) == pytest.approx(1.4)


def test_table3_mse_and_kl_variants():
    dt, ds = T([1.0, 0.5]), T([0.4, 0.7])
    assert eq.specific_distillation(dt, ds, "mse").tolist() == pytest.approx([0.36, 0.04])
    p, q = sig(1.0), sig(0.4)  # tau = 1
    kl = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    assert float(eq.specific_distillation(T([1.0]), T([0.4]), "kl", tau=1.0)[0]) == pytest.approx(kl, rel=1e-5)
    assert float(eq.specific_distillation(T([0.3]), T([0.3]), "kl", tau=0.1)[0]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        eq.specific_distillation(dt, ds, "l1")


def test_eq12_13_generic_distillation():
    pt, ps = sig(2 / 0.5), sig(1 / 0.5)
    expected = -(pt * math.log(ps) + (1 - pt) * math.log(1 - ps))
    assert float(eq.generic_distillation(T([2.0]), T([1.0]), tau=0.5)[0]) == pytest.approx(expected, rel=1e-5)
    # minimised over the student's margin where it equals the teacher's
    ds = torch.linspace(-3, 3, 601)
    losses = eq.generic_distillation(torch.full_like(ds, 0.7), ds, tau=0.1)
    assert float(ds[losses.argmin()]) == pytest.approx(0.7, abs=0.011)


def test_eq15_individual_treatment_effect():
    assert eq.treatment_effect(T([1.0, 2.0]), T([0.25, 2.5])).tolist() == [0.75, -0.5]


def test_eq16_17_relative_effect():
    # γ = mean(0.2, 0.4) = 0.3; Σ Δt = 1 + 2 = 3  ->  ρ = 0.1
    assert float(eq.relative_effect(T([0.2, 0.4]), T([1.0, 2.0]))) == pytest.approx(0.1)
    # a negative effect is clamped at the floor, so λ stays in [0, 1]
    assert float(eq.relative_effect(T([-0.2, -0.4]), T([1.0, 2.0]), eps=1e-3)) == pytest.approx(1e-3)


def test_eq18_modality_weights():
    lam = eq.modality_weights({"text": T(0.1), "visual": T(0.3)}, scale="paper")
    assert float(lam["text"]) == pytest.approx(0.75)  # weaker modality -> larger weight
    assert float(lam["visual"]) == pytest.approx(0.25)
    three = eq.modality_weights({"a": T(1.0), "b": T(1.0), "c": T(2.0)}, scale="paper")
    assert [float(three[k]) for k in "abc"] == pytest.approx([0.75, 0.75, 0.5])  # sums to M − 1


def test_eq18_at_the_authors_scale_sums_to_m():
    lam = eq.modality_weights({"text": T(0.1), "visual": T(0.3)})  # default: authors' total, Σλ = M = 2
    assert [float(lam["text"]), float(lam["visual"])] == pytest.approx([1.5, 0.5])
    three = eq.modality_weights({"a": T(1.0), "b": T(1.0), "c": T(2.0)})
    assert [float(three[k]) for k in "abc"] == pytest.approx([1.125, 1.125, 0.75])  # 3/2 · (0.75, 0.75, 0.5)


@pytest.mark.parametrize("m", [2, 3])
def test_every_reweight_mode_has_the_same_total_and_differs_only_in_the_split(m):
    """paper (authors' scale), official (per triple) and none (1 each) all give Σ_m λ_m = M."""
    g = torch.Generator().manual_seed(m)
    names = [f"m{i}" for i in range(m)]
    rho = {k: torch.rand((), generator=g) + 0.01 for k in names}
    ite = {k: torch.randn(64, generator=g) for k in names}
    uni = {k: torch.randn(64, generator=g) for k in names}
    paper = eq.modality_weights(rho)
    official = eq.official_weights(ite, uni)
    none = {k: torch.ones(()) for k in names}
    assert float(sum(paper.values())) == pytest.approx(m)
    assert torch.allclose(sum(official.values()), torch.full((64,), float(m)))
    assert float(sum(none.values())) == pytest.approx(m)
    assert len({round(float(v), 6) for v in paper.values()}) > 1  # a real split, not uniform


def test_generic_distillation_official_form_by_hand_and_saturation():
    pt, ps = sig(2 / 0.5), sig(1 / 0.5)
    expected = -(pt * math.log(ps + 1e-8) + (1 - pt) * math.log(1 - ps + 1e-8))
    got = eq.generic_distillation(T([2.0]), T([1.0]), tau=0.5, form="official")
    assert float(got[0]) == pytest.approx(expected, rel=1e-5)
    # saturated: Δs/τ = 40 -> σ = 1 in float32: the authors' form is stuck at log(1e-8), zero gradient;
    # the log-sigmoid form is (1 − p_t)·40 and still pulls the student back
    ds = torch.tensor([4.0], requires_grad=True)
    official = eq.generic_distillation(T([0.0]), ds, tau=0.1, form="official")
    assert float(official) == pytest.approx(-0.5 * math.log(1e-8), rel=1e-4)
    official.sum().backward()
    assert float(ds.grad) == 0.0
    ds2 = torch.tensor([4.0], requires_grad=True)
    exact = eq.generic_distillation(T([0.0]), ds2, tau=0.1)
    assert float(exact) == pytest.approx(0.5 * 40 + math.log1p(math.exp(-40)), rel=1e-5)
    exact.sum().backward()
    assert float(ds2.grad) == pytest.approx(0.5 / 0.1, rel=1e-4)


def test_official_per_triple_weights_match_balancers_md_4_4():
    # triple 0: c_t = 0.5/1.0 = 0.5, c_v = 0.3/0.2 = 1.5 -> r_t = 2·1.5/2 = 1.5, r_v = 0.5
    # triple 1: negative text ITE -> c_t clamped to 1e-8; c_v = 40 -> clamped to 10 -> r_t ≈ 2, r_v ≈ 0
    ite = {"text": T([0.5, -1.0]), "visual": T([0.3, 4.0])}
    uni = {"text": T([1.0, 1.0]), "visual": T([0.2, 0.1])}
    r = eq.official_weights(ite, uni)
    assert r["text"].tolist() == pytest.approx([1.5, 2 * 10 / (10 + 1e-8)])
    assert r["visual"].tolist() == pytest.approx([0.5, 0.0], abs=1e-6)
    assert (r["text"] + r["visual"]).tolist() == pytest.approx([2.0, 2.0])
    # the same formula as written in the reference: 1 - (c_t - c_v)/(c_t + c_v)
    ct, cv = 0.5, 1.5
    assert float(r["text"][0]) == pytest.approx(1 - (ct - cv) / (ct + cv))
