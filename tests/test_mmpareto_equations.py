"""MMPareto's rule (docs/balancers.md#mmpareto-balancermmpareto) on small gradients computed by hand."""

import math

import pytest
import torch

from mbrec.balancers import mmpareto as mp

T = torch.tensor


def _gram(*vs):
    g = torch.stack([T(v, dtype=torch.float64) for v in vs])
    return g @ g.T


def test_two_conflicting_gradients_get_the_min_norm_weights():
    # g_mm = (1, 0), g_m = (-0.5, 1): <.,.> = 1, -0.5, 1.25; cos < 0 -> c = (1.25 + 0.5) / (1 + 1.25 + 1) = 7/13
    w, conflict, cos = mp.group_weights(_gram([1.0, 0.0], [-0.5, 1.0]))
    assert bool(conflict) and float(cos) == pytest.approx(-0.5 / math.sqrt(1.25))
    assert w.tolist() == pytest.approx([7 / 13, 6 / 13])
    # the min-norm point (4/13, 6/13) is orthogonal to g_mm - g_m = (1.5, -1)
    point = w[0] * T([1.0, 0.0], dtype=torch.float64) + w[1] * T([-0.5, 1.0], dtype=torch.float64)
    assert point.tolist() == pytest.approx([4 / 13, 6 / 13])


def test_magnitude_rule_rescales_to_the_plain_sum_and_multiplies_by_gamma():
    g1, g2 = T([1.0, 0.0]), T([-0.5, 1.0])
    w = T([7 / 13, 6 / 13])
    out = mp.pareto_combine([g1, g2], w, gamma=1.5)
    new = 2 * torch.tensor([4 / 13, 6 / 13])  # ‖g_new‖ = 1.1094 < ‖g1 + g2‖ = 1.1180: rescaled up
    expected = 1.5 * math.hypot(0.5, 1.0) * new / new.norm()
    assert out.tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    # larger than the plain sum: no rescale, only γ
    out = mp.pareto_combine([T([1.0, 0.0]), T([0.0, 1.0])], T([0.9, 0.1]), gamma=2.0)
    assert out.tolist() == pytest.approx([2 * 2 * 0.9, 2 * 2 * 0.1])  # ‖(1.8, 0.2)‖ = 1.811 > √2


def test_agreeing_gradients_get_equal_weights_so_gamma_times_their_sum():
    w, conflict, _ = mp.group_weights(_gram([1.0, 0.0], [1.0, 1.0]))
    assert not bool(conflict) and w.tolist() == pytest.approx([0.5, 0.5])
    out = mp.pareto_combine([T([1.0, 0.0]), T([1.0, 1.0])], w.float(), gamma=1.5)
    assert out.tolist() == pytest.approx([3.0, 1.5])


def test_official_vertex_cases_of_the_two_task_solver():
    # x1 = 0 (v12 >= v11): 0.999; x2 = 0 (v12 >= v22): 0.001, as min_norm_solvers.py returns
    assert float(mp.two_task_weight(T(0.0), T(0.0), T(2.0))) == pytest.approx(0.999)
    assert float(mp.two_task_weight(T(2.0), T(0.0), T(0.0))) == pytest.approx(0.001)


@pytest.mark.parametrize("vectors, expected", [
    ([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.5, 0.5, 0.0]),  # the face {g1, g2}: point (0.5, 0.5)
    ([[2.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]], [1 / 3, 1 / 3, 1 / 3]),  # the origin is inside the hull
    ([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]], [2 / 3, 1 / 6, 1 / 6]),  # w_i ∝ 1/‖g_i‖²
    ([[1.0, 1.0], [2.0, 2.0], [3.0, 1.0]], [1.0, 0.0, 0.0]),  # a vertex: g1 is the hull's nearest point
])
def test_min_norm_weights_of_three_gradients(vectors, expected):
    w = mp.min_norm_weights(_gram(*vectors))
    assert w.tolist() == pytest.approx(expected, abs=1e-6)
    assert float(w.sum()) == pytest.approx(1.0)


def test_gram_matrix_sums_over_the_group_tensors():
    per_param = [[T([1.0, 2.0]), T([0.0, 1.0])], [T([[1.0]]), T([[3.0]])]]
    assert mp.gram_matrix(per_param).tolist() == [[6.0, 5.0], [5.0, 10.0]]


def test_the_balancer_applies_the_rule_per_group_on_vbpr(tiny_dataset):
    """On a real step: each modality's own parameters get the rule over (L^mm, L^m), the shared ones over
    (L^mm, every L^m), from the objectives' separately computed gradients."""
    from mbrec.backbones import build_backbone
    from mbrec.balancers import build_balancer
    from mbrec.data.sampling import BPRSampler
    from mbrec.training.objective import base_pass

    from conftest import unit_context

    torch.manual_seed(0)
    model = build_backbone({"name": "vbpr", "embedding_dim": 4}, tiny_dataset)
    bal = build_balancer({"name": "mmpareto", "gamma": 1.5})
    bal.prepare(unit_context(tiny_dataset, 0), model)
    batch = BPRSampler(tiny_dataset.train, 8, torch.device("cpu"), seed=0).sample()
    base = base_pass(model, batch, 1e-3)
    objectives = bal.objectives(model, base)
    groups = bal.groups(model)
    total, logs = bal.loss(model, base, 0)
    model.zero_grad(set_to_none=True)
    bal.backward(total, model)
    for name, ps in groups.items():
        keys = ["multimodal", *model.modalities] if name == mp.SHARED else ["multimodal", name]
        grads = {k: torch.autograd.grad(objectives[k], ps, retain_graph=True, allow_unused=True) for k in keys}
        per_param = [[grads[k][i] if grads[k][i] is not None else torch.zeros_like(p) for k in keys]
                     for i, p in enumerate(ps)]
        w, _, _ = mp.group_weights(mp.gram_matrix(per_param))
        assert logs[f"mmpareto/w/{name}/multimodal"] == pytest.approx(float(w[0]))
        for p, gs in zip(ps, per_param):
            assert torch.allclose(p.grad, mp.pareto_combine(gs, w, 1.5), atol=1e-6)
