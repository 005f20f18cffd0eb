"""Uni-Modal Teacher and the teacher ensemble: their core formulas on small tensors against values
computed by hand (docs/balancers.md), the ensemble's weights tuned on validation only, and both rows end
to end with the teachers shared with CKD (one cache)."""

from __future__ import annotations

import math
import statistics
from types import SimpleNamespace

import pytest
import torch

from mbrec.balancers.ensemble import EnsembleModel, score_moments, simplex_grid, standardisation
from mbrec.balancers.teachers import Teacher
from mbrec.balancers.umt import margin_distillation, representation_distillation, umt_loss
from mbrec.errors import ConfigError

from conftest import run_pipeline

T = torch.tensor


# ---------------------------------------------------------------------------------------------- UMT
def test_umt_representation_distillation_is_the_mse_of_the_stacked_rows():
    student = (T([[1.0, 2.0]]), T([[0.0, 0.0]]), T([[1.0, 1.0]]))
    teacher = (T([[0.0, 2.0]]), T([[1.0, 0.0]]), T([[1.0, 3.0]]))
    # (u: (1² + 0²)/2 = 0.5, i: (1 + 0)/2 = 0.5, j: (0 + 4)/2 = 2)  -> mean 1.0 = nn.MSELoss over the 3 rows
    assert float(representation_distillation(student, teacher)) == pytest.approx(1.0)
    stacked = torch.nn.functional.mse_loss(torch.cat(student), torch.cat(teacher))
    assert float(representation_distillation(student, teacher)) == pytest.approx(float(stacked))


def test_umt_margin_distillation_and_total():
    assert float(margin_distillation(T([1.0, -0.5]), T([0.5, 0.5]))) == pytest.approx((0.25 + 1.0) / 2)
    # L = L_base + scaling · Σ_m D^m, no per-modality weights
    assert float(umt_loss(T(0.7), {"text": T(0.1), "visual": T(0.2)}, 10.0)) == pytest.approx(3.7)
    assert float(umt_loss(T(0.7), {"text": T(0.1)}, 0.0)) == pytest.approx(0.7)


# ---------------------------------------------------------------------------------------------- ensemble
def _teacher(m, user, item):
    return Teacher(m, T(user), T(item), {})


def _moments(scores):
    return statistics.fmean(scores), statistics.pstdev(scores)


def test_score_moments_closed_form_matches_the_scores():
    user, item = T([[1.0, 0.0], [0.0, 2.0]]), T([[1.0, 0.0], [3.0, 2.0], [2.0, 4.0]])
    mu, sd = score_moments(user, item)
    # user 0 scores [1, 3, 2]: mean 2, pstdev sqrt(2/3); user 1 scores [0, 4, 8]: mean 4, pstdev sqrt(32/3)
    assert mu.tolist() == pytest.approx([2.0, 4.0])
    assert sd.tolist() == pytest.approx([math.sqrt(2 / 3), math.sqrt(32 / 3)])
    g_mu, g_sd = standardisation(user, item, "global")
    assert g_mu.tolist() == pytest.approx([3.0, 3.0]) and g_sd.tolist() == pytest.approx([_moments([1, 3, 2, 0, 4, 8])[1]] * 2)
    assert standardisation(user, item, "none")[1].tolist() == [1.0, 1.0]
    # a user whose scores are all equal keeps scale 1 (no division by zero)
    assert standardisation(T([[0.0, 0.0]]), item, "user")[1].tolist() == [1.0]


def test_simplex_grid():
    assert simplex_grid(["text", "visual"], 0.5) == [{"text": 0.0, "visual": 1.0}, {"text": 0.5, "visual": 0.5},
                                                     {"text": 1.0, "visual": 0.0}]
    three = simplex_grid(["a", "b", "c"], 0.5)
    assert len(three) == 6 and all(sum(w.values()) == pytest.approx(1.0) for w in three)
    assert len(simplex_grid(["a", "b"], 0.1)) == 11
    with pytest.raises(ConfigError, match="grid_step"):
        simplex_grid(["a", "b"], 0.3)


def test_ensemble_scores_are_the_weighted_sum_of_per_user_z_scores():
    data = SimpleNamespace(modalities=("text", "visual"), n_users=1, n_items=3)
    teachers = {"text": _teacher("text", [[1.0, 0.0]], [[1.0, 0.0], [3.0, 2.0], [2.0, 4.0]]),  # scores 1, 3, 2
                "visual": _teacher("visual", [[1.0]], [[0.0], [1.0], [5.0]])}                   # scores 0, 1, 5
    model = EnsembleModel(data, teachers, {"text": 0.25, "visual": 0.75})
    (mt, st), (mv, sv) = _moments([1, 3, 2]), _moments([0, 1, 5])
    z_text = [(x - mt) / st for x in (1, 3, 2)]
    z_vis = [(x - mv) / sv for x in (0, 1, 5)]
    u, i = model()
    assert (u @ i.T)[0].tolist() == pytest.approx([0.25 * a + 0.75 * b for a, b in zip(z_text, z_vis)], rel=1e-5)
    # keeping only one modality is that teacher alone (its z-scores: its own ranking)
    u, i = model(ablate={"visual"})
    assert (u @ i.T)[0].tolist() == pytest.approx(z_text, rel=1e-5)
    u, i = model(users=T([0]), items=T([2, 0]), ablate={"text"})
    assert (u @ i.T)[0].tolist() == pytest.approx([z_vis[2], z_vis[0]], rel=1e-5)
    # a zero weight still gives its teacher's own ranking when only it is kept
    model.set_weights({"text": 1.0, "visual": 0.0})
    u, i = model(ablate={"text"})
    assert (u @ i.T)[0].tolist() == pytest.approx(z_vis, rel=1e-5)


# ---------------------------------------------------------------------------------------------- end to end
def test_ensemble_tunes_on_validation_only_and_trains_nothing(tmp_path, monkeypatch):
    from mbrec.training.evaluation import Evaluator

    splits: list[str] = []
    original = Evaluator.evaluate

    def spy(self, model, split, ablations=None):
        splits.append(f"{type(model).__name__}:{split}")
        return original(self, model, split, ablations)

    monkeypatch.setattr(Evaluator, "evaluate", spy)
    _, res = run_pipeline(["balancer=ensemble", "balancer.grid_step=0.25", "mlflow.enabled=false"], tmp_path)
    ensemble = [s for s in splits if s.startswith("EnsembleModel")]
    # 5 grid points on validation, then the run's own validation and one test evaluation
    assert ensemble == ["EnsembleModel:valid"] * 6 + ["EnsembleModel:test"]
    assert res["epochs_run"] == 0 and res["best_epoch"] == -1 and res["seconds_per_epoch"] is None
    assert len(res["balancer"]["search"]) == 5
    assert sum(res["balancer"]["weights"].values()) == pytest.approx(1.0)
    best = max(p["valid/recall@20"] for p in res["balancer"]["search"])
    assert res["best_valid_value"] == pytest.approx(best)
    # per-modality recall of the ensemble = each teacher alone (teachers' own test metrics)
    for m, t in res["balancer"]["teachers"].items():
        assert res["test"][f"recall@20/{m}"] == pytest.approx(t["test"]["recall@20"], abs=1e-6)


@pytest.mark.slow
def test_umt_and_ensemble_reuse_ckd_teachers(tmp_path):
    common = ["mlflow.enabled=false", "train.max_epochs=2"]
    _, ckd = run_pipeline(["balancer=ckd", "balancer.gd_samples=16", *common], tmp_path)
    assert not any(t["cached"] for t in ckd["balancer"]["teachers"].values())
    for row in ("umt", "ensemble"):
        _, res = run_pipeline([f"balancer={row}", *common], tmp_path)
        teachers = res["balancer"]["teachers"]
        assert all(t["cached"] for t in teachers.values()), row
        assert {m: t["cache_path"] for m, t in teachers.items()} == {m: t["cache_path"] for m, t in ckd["balancer"]["teachers"].items()}


def test_umt_refuses_teachers_of_another_width(tmp_path):
    with pytest.raises(ConfigError, match="teacher"):
        run_pipeline(["balancer=umt", "+balancer.teachers.backbone.embedding_dim=8", "mlflow.enabled=false",
                      "balancer.teachers.train.max_epochs=1"], tmp_path)
