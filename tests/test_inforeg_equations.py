"""InfoReg's window test, regulation coefficient and proximal step (docs/balancers.md#inforeg-balancerinforeg)
on small inputs computed by hand, and its wiring on a real VBPR step."""

import math

import pytest
import torch

from mbrec.balancers import inforeg as ir

T = torch.tensor


@pytest.mark.parametrize("trace, k", [
    ([], 1.0),                              # the first epoch: in the window
    ([2.0], 1.0),                           # t̄1 = 0.2, t̄2 = 0 (both over 10, as the official code)
    ([2.0, 3.0], 0.6),                      # t̄1 = 0.5, t̄2 = 0.2
    ([float(i) for i in range(1, 13)], 1 / 7.5),  # t̄1 = (3+…+12)/10 = 7.5, t̄2 = (2+…+11)/10 = 6.5
    ([5.0] * 12, 0.0),                      # a flat trace: the window is over
])
def test_window_indicator_on_given_traces(trace, k):
    assert ir.window_indicator(trace) == pytest.approx(k)


def test_window_on_a_rising_then_flat_trace_closes_when_growth_drops_below_the_threshold():
    trace = [1.0, 3.0, 6.0, 8.0, 9.0] + [9.0] * 12
    inside = [ir.window_indicator(trace[:e]) > 0.05 for e in range(len(trace) + 1)]
    # k at epoch e uses the traces of epochs < e; growth 9 → 9 ends it only once the 10-epoch means agree
    assert inside[:6] == [True] * 6
    first_out = inside.index(False)
    assert all(not x for x in inside[first_out:])
    t = trace[:first_out]
    assert (sum(t[-10:]) - sum(t[-11:-1])) / sum(t[-10:]) <= 0.05


def test_regulation_coefficient_of_the_dominant_modality():
    scores = {"a": T(40.0), "v": T(38.0)}
    beta = ir.regulation_coefficients(scores, 0.95, {"a": True, "v": True})
    assert float(beta["a"]) == pytest.approx(0.95 * math.exp(math.tanh(2.0)))  # 2.4910
    assert float(beta["v"]) == 0.0
    # out of its window, the dominant modality is left alone; a tie regulates no one
    assert float(ir.regulation_coefficients(scores, 0.95, {"a": False, "v": True})["a"]) == 0.0
    tie = ir.regulation_coefficients({"a": T(3.0), "v": T(3.0)}, 0.95, {"a": True, "v": True})
    assert float(tie["a"]) == float(tie["v"]) == 0.0


def test_proximal_gradient_and_fisher_trace_on_vbpr(tiny_dataset):
    from mbrec.backbones import build_backbone
    from mbrec.balancers import build_balancer
    from mbrec.data.sampling import BPRSampler
    from mbrec.training.objective import base_pass

    from conftest import unit_context

    torch.manual_seed(0)
    model = build_backbone({"name": "vbpr", "embedding_dim": 4}, tiny_dataset)
    bal = build_balancer({"name": "inforeg", "beta": 0.5})
    bal.prepare(unit_context(tiny_dataset, 0), model)
    batch = BPRSampler(tiny_dataset.train, 8, torch.device("cpu"), seed=0).sample()
    bal.loss(model, base_pass(model, batch, 1e-3), 0)  # the epoch starts: anchors = θ
    bal._beta = None
    shift = {}
    with torch.no_grad():  # move every owned parameter away from its anchor
        for ps in bal.groups(model).values():
            for p in ps:
                shift[id(p)] = 0.01 * torch.randn_like(p)
                p.add_(shift[id(p)])
    total, logs = bal.loss(model, base_pass(model, batch, 1e-3), 0)
    model.zero_grad(set_to_none=True)
    total.backward()
    before = {id(p): p.grad.clone() for ps in bal.groups(model).values() for p in ps}
    betas = {m: float(logs[f"inforeg/beta/{m}"]) for m in model.modalities}
    assert sum(b > 0 for b in betas.values()) == 1  # exactly the dominant modality is regulated
    bal.after_backward(model, 0)
    fisher = 0.0
    for m, ps in bal.groups(model).items():
        for p in ps:
            assert torch.allclose(p.grad - before[id(p)], betas[m] * shift[id(p)], atol=1e-6)
            if m == "text" and p.dim() >= 2:
                fisher += float(p.grad.pow(2).mean())
    out = bal.on_epoch_end(model, 0)
    assert out["inforeg/trace/text"] == pytest.approx(fisher, rel=1e-5)
    assert bal.traces["text"] == [pytest.approx(fisher, rel=1e-5)] and out["inforeg/window/text"] == 1.0
