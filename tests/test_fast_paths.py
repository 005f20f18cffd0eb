"""The optional fast paths keep the numbers: torch.compile'd training passes match eager ones, and bf16
autocast trains to finite, similar results (it is documented to change numbers)."""

from __future__ import annotations

import pytest

from conftest import run_pipeline

TOLERANCE = 2e-3  # absolute, on test Recall/NDCG@K after 2 epochs of the TINY config


@pytest.mark.slow  # torch.compile: tens of seconds of compilation on CPU
def test_compiled_training_matches_eager(tmp_path) -> None:
    pytest.importorskip("torch._dynamo")
    common = ["backbone=vbpr", "train.max_epochs=2", "mlflow.enabled=false", "train.resume=false"]
    _, eager = run_pipeline(common, tmp_path / "eager")
    _, compiled = run_pipeline([*common, "train.compile=true"], tmp_path / "compiled")
    for key, value in eager["test"].items():
        assert compiled["test"][key] == pytest.approx(value, abs=TOLERANCE), key
    for a, b in zip(eager["history"], compiled["history"]):
        assert b["loss/total"] == pytest.approx(a["loss/total"], rel=1e-4)


def test_bf16_autocast_trains(tmp_path) -> None:
    _, res = run_pipeline(["backbone=vbpr", "balancer=ckd", "balancer.gd_samples=16", "train.max_epochs=2",
                           "train.precision=bf16", "mlflow.enabled=false"], tmp_path)
    assert all(v == v for v in res["test"].values()) and 0.0 <= res["test"]["recall@20"] <= 1.0

