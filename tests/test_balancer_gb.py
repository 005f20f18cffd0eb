"""Gradient Blending as a balancer: the OGR weights, the uni-modal heads (= ablated passes), the blended
loss, the fixed probe triples, offline/online estimation, resume, and an end-to-end run with every
registered backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mbrec.backbones import build_backbone
from mbrec.balancers import build_balancer
from mbrec.balancers.gb import MULTIMODAL, blend_weights, fixed_triples
from mbrec.data.sampling import BPRSampler
from mbrec.training.objective import base_pass

from conftest import run_pipeline, unit_context

CPU = torch.device("cpu")


def test_weights_from_given_losses():
    start = {MULTIMODAL: (0.69, 0.69), "text": (0.69, 0.70), "visual": (0.69, 0.69)}
    end = {MULTIMODAL: (0.30, 0.50), "text": (0.40, 0.60), "visual": (0.60, 0.68)}
    # ΔG = L^V start − end; ΔO = (L^V − L^T) end − start; w ∝ ΔG / ΔO²
    raw = {MULTIMODAL: 0.19 / 0.20**2, "text": 0.10 / 0.19**2, "visual": 0.01 / 0.08**2}  # 4.75, 2.770, 1.5625
    w = blend_weights(start, end)
    assert w == pytest.approx({k: v / sum(raw.values()) for k, v in raw.items()}, rel=1e-9)
    assert w[MULTIMODAL] == pytest.approx(0.522979, abs=1e-6)
    # a head whose validation loss got worse gets 0; ΔO² is floored at eps; all zero -> uniform
    worse = {**end, "visual": (0.60, 0.75)}
    assert blend_weights(start, worse)["visual"] == 0.0
    flat = {k: (t, v) for k, (t, v) in start.items()}
    flat_end = {k: (t - 0.1, v - 0.1) for k, (t, v) in start.items()}  # ΔO = 0, ΔG = 0.1 for every head
    assert blend_weights(flat, flat_end, eps=1e-4) == pytest.approx({k: 1 / 3 for k in start})
    assert blend_weights(start, {k: (t, v + 1) for k, (t, v) in start.items()}) == pytest.approx({k: 1 / 3 for k in start})


def _setup(ds, **over):
    torch.manual_seed(0)
    model = build_backbone({"name": "vbpr", "embedding_dim": 4}, ds)
    gb = build_balancer({"name": "gb", **over})
    batch = BPRSampler(ds.train, 8, CPU, seed=0).sample()
    return model, gb, batch, base_pass(model, batch, 1e-3)


def _bpr_of(model, batch, ablate):
    u, it = model(ablate=ablate)
    return -F.logsigmoid((u[batch.users] * (it[batch.pos] - it[batch.neg])).sum(1)).mean()


@pytest.mark.parametrize("unimodal", ["ablated_pass", "contribution"])
def test_unimodal_heads_are_the_ablated_passes(tiny_dataset, unimodal):
    model, gb, batch, base = _setup(tiny_dataset, unimodal=unimodal,
                                    weights={MULTIMODAL: 0.5, "text": 0.3, "visual": 0.2})
    total, logs = gb.loss(model, base, 0)
    expected = {MULTIMODAL: _bpr_of(model, batch, ())}
    for m in tiny_dataset.modalities:
        if unimodal == "ablated_pass":
            expected[m] = _bpr_of(model, batch, model.keep_only(m))
        else:  # the ITE margin Δ − Δ^(−m)
            u, it = model()
            ua, ia = model(ablate={m})
            full = (u[batch.users] * (it[batch.pos] - it[batch.neg])).sum(1)
            abl = (ua[batch.users] * (ia[batch.pos] - ia[batch.neg])).sum(1)
            expected[m] = -F.logsigmoid(full - abl).mean()
        assert logs[f"gb/loss/{m}"] == pytest.approx(float(expected[m].detach()), rel=1e-5)
    blend = 0.5 * expected[MULTIMODAL] + 0.3 * expected["text"] + 0.2 * expected["visual"] + base.terms["l2"]
    assert float(total.detach()) == pytest.approx(float(blend.detach()), rel=1e-5)
    assert logs[f"gb/w/{MULTIMODAL}"] == 0.5


def test_fixed_validation_triples(tiny_dataset):
    b = fixed_triples(tiny_dataset, "valid", CPU, seed=3)
    valid, train = tiny_dataset.valid.toarray(), tiny_dataset.train.toarray()
    users, pos, neg = b.users.numpy(), b.pos.numpy(), b.neg.numpy()
    assert sorted(users) == list(valid.sum(1).nonzero()[0])  # every user with validation items, once
    assert valid[users, pos].all()
    assert not valid[users, neg].any() and not train[users, neg].any()
    again = fixed_triples(tiny_dataset, "valid", CPU, seed=3)
    assert torch.equal(again.neg, b.neg) and torch.equal(again.pos, b.pos)


def test_estimation_offline_then_online(tiny_dataset):
    model, gb, _, _ = _setup(tiny_dataset, mode="online", super_epoch=2, estimate_epochs=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gb.prepare(unit_context(tiny_dataset, 5), model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the probes' training is undone
    (first,) = gb.estimates
    assert gb.weights == pytest.approx(blend_weights(first["start"], first["end"]))
    assert sum(gb.weights.values()) == pytest.approx(1.0) and set(gb.weights) == {MULTIMODAL, "text", "visual"}
    for k, (t0, v0) in first["start"].items():
        assert first["end"][k][0] < t0  # each probe learned its head on the training triples
        assert (t0, v0) == pytest.approx(gb.measure(model, k))  # measured on the unchanged model
    assert gb.on_epoch_end(model, 0) == {} and len(gb.estimates) == 1
    logs = gb.on_epoch_end(model, 1)
    assert len(gb.estimates) == 2 and gb.estimates[1]["epoch"] == 2
    assert logs == {f"gb/estimate/{k}": w for k, w in gb.weights.items()}
    fresh = build_balancer({"name": "gb", "mode": "online"})
    fresh.load_state_dict(gb.state_dict())
    assert fresh.weights == gb.weights and fresh.results()["estimates"] == gb.estimates


@pytest.mark.parametrize("backbone", ["vbpr", "mgcn"])  # every backbone: test_balancer_contract.py
def test_end_to_end(backbone, tmp_path):
    _, res = run_pipeline([f"backbone={backbone}", "balancer=gb", "balancer.estimate_epochs=1",
                           "train.max_epochs=2", "mlflow.enabled=false"], tmp_path)
    w = res["balancer"]["weights"]
    assert set(w) == {MULTIMODAL, "text", "visual"} and sum(w.values()) == pytest.approx(1.0)
    assert res["history"][0][f"gb/w/{MULTIMODAL}"] == pytest.approx(w[MULTIMODAL])
    assert 0.0 <= res["test"]["recall@20"] <= 1.0


def test_holdout_split_is_seeded_per_user_and_disjoint(tiny_dataset):
    from mbrec.balancers.gb import holdout_split

    a = holdout_split(tiny_dataset, 0.25, seed=3)
    b = holdout_split(tiny_dataset, 0.25, seed=3)
    assert (a.train != b.train).nnz == 0 and (a.valid != b.valid).nnz == 0  # fixed by the seed
    full = tiny_dataset.train
    assert (a.train + a.valid != full).nnz == 0 and a.train.multiply(a.valid).nnz == 0  # a partition
    n, held = np.diff(full.indptr), np.diff(a.valid.indptr)
    expected = np.where(n >= 3, np.clip(np.rint(0.25 * n), 1, n - 2), 0)
    assert (held == expected).all() and (np.diff(a.train.indptr) >= np.minimum(n, 2)).all()
    assert (a.test != tiny_dataset.test).nnz == 0
    other = holdout_split(tiny_dataset, 0.25, seed=4)
    assert (other.valid != a.valid).nnz > 0


def test_holdout_estimation_never_reads_the_validation_split(tiny_dataset, monkeypatch):
    """With estimate_on=holdout the probes' L^V triples come from training interactions only."""
    model, gb, _, _ = _setup(tiny_dataset, estimate_epochs=1)
    gb.prepare(unit_context(tiny_dataset, 5), model)
    users, pos = gb._triples["valid"].users.numpy(), gb._triples["valid"].pos.numpy()
    assert all(tiny_dataset.train[u, i] for u, i in zip(users, pos))
    assert not any(tiny_dataset.valid[u, i] for u, i in zip(users, pos))


def test_graph_probes_are_built_on_the_probe_data_and_leave_the_student_alone(tiny_dataset):
    """MMGCN: the probe's graph has the probe data's edges (no held-out interaction), its weights are the
    student's, and estimating never changes the student."""
    import dataclasses

    import torch

    from mbrec.backbones import build_backbone
    from mbrec.balancers import build_balancer

    from conftest import unit_context

    cfg = {"name": "mmgcn", "embedding_dim": 8}
    torch.manual_seed(0)
    student = build_backbone(cfg, tiny_dataset)
    ctx = unit_context(tiny_dataset, 5)
    ctx = dataclasses.replace(ctx, configs={**ctx.configs, "backbone": cfg})
    gb = build_balancer({"name": "gb", "estimate_epochs": 1})
    before = {k: v.clone() for k, v in student.state_dict().items()}
    gb.prepare(ctx, student)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    probe = gb._probe_model(student)
    edges = lambda m: int(m.adj.target.numel())  # noqa: E731
    assert edges(probe) < edges(student)  # the held-out interactions are no edges of the probe's graph
    assert gb._probe_data.train.nnz < tiny_dataset.train.nnz
