"""`python -m mbrec` end to end on a tiny synthetic dataset: results.json and the MLflow run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, run_pipeline


def _mbrec(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbrec", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_python_m_mbrec_writes_results_and_logs_to_mlflow(tmp_path):
    out = tmp_path / "run"
    db = tmp_path / "mlflow.db"
    proc = _mbrec(TINY + [f"hydra.run.dir={out}", f"paths.cache_dir={tmp_path / 'cache'}",
                          f"mlflow.tracking_uri=sqlite:///{db}", "seed=7"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Test metrics" in proc.stdout and "recall [text only]" in proc.stdout

    res = json.loads((out / "results.json").read_text())
    assert res["config"]["seed"] == 7 and res["config"]["backbone"]["name"] == "vbpr"
    assert res["best_valid"]["recall@20"] == res["best_valid_value"]
    for key in ("recall@10", "recall@20", "ndcg@20", "precision@20", "ndcg_lattice@20", "recall@20/text", "recall@20/visual"):
        assert 0.0 <= res["test"][key] <= 1.0, key
    assert res["seconds_per_epoch"] > 0 and res["seconds_per_eval"] > 0
    assert res["threads"] == 1  # threads=auto: a problem this small runs on one thread
    assert res["best_epoch"] >= 0 and res["mlflow_run_id"]
    assert not list((tmp_path / "cache").rglob("*.pt")), "checkpoint left behind after a finished run"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    run = client.get_run(res["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.0005" and run.data.params["seed"] == "7"
    assert run.data.tags["mbrec.backbone"] == "vbpr" and run.data.tags["mbrec.dataset"] == "synthetic"
    assert "mlflow.source.git.commit" in run.data.tags
    assert run.data.metrics["test/recall_at_20"] == pytest.approx(res["test"]["recall@20"])
    history = client.get_metric_history(run.info.run_id, "val/recall_at_20/text")
    assert [m.step for m in history] == [h["epoch"] for h in res["history"] if "val/recall@20" in h]
    assert len(client.get_metric_history(run.info.run_id, "loss/bpr")) == len(res["history"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "hydra"} <= artifacts


def test_objective_is_best_validation_metric_and_not_test(tmp_path):
    value, res = run_pipeline(["train.metric=ndcg@10", "mlflow.enabled=false"], tmp_path)
    assert value == res["best_valid"]["ndcg@10"] == res["best_valid_value"]
    assert res["mlflow_run_id"] is None


def test_missing_real_dataset_is_a_clear_error(tmp_path):
    proc = _mbrec(["dataset=baby", f"paths.data_dir={tmp_path / 'nowhere'}", "mlflow.enabled=false",
                   f"hydra.run.dir={tmp_path / 'out'}"], tmp_path)
    assert proc.returncode != 0
    assert "nowhere/baby" in proc.stderr and "docs/data.md" in proc.stderr


def test_real_dataset_folder_runs_end_to_end(tmp_path):
    """`dataset=baby` reads <data_dir>/baby in the MMRec layout and trains on it."""
    import numpy as np

    from mbrec.data.synthetic import make_synthetic

    ds = make_synthetic(n_users=50, n_items=30, mean_interactions=8, seed=3)
    folder = tmp_path / "data" / "baby"
    folder.mkdir(parents=True)
    rows = ["userID\titemID\trating\ttimestamp\tx_label"]
    for label, split in enumerate((ds.train, ds.valid, ds.test)):
        coo = split.tocoo()
        rows += [f"{u}\t{i}\t5\t0\t{label}" for u, i in zip(coo.row, coo.col)]
    (folder / "baby.inter").write_text("\n".join(rows) + "\n")
    np.save(folder / "image_feat.npy", ds.features["visual"])
    np.save(folder / "text_feat.npy", ds.features["text"])
    value, res = run_pipeline(["dataset=baby", f"paths.data_dir={tmp_path / 'data'}", "mlflow.enabled=false"], tmp_path)
    assert res["dataset"]["users"] == 50 and res["dataset"]["features"] == {"text": 64, "visual": 128}
    assert res["dataset"]["train_interactions"] == ds.train.nnz and res["dataset"]["test_interactions"] == ds.test.nnz
    assert 0 <= res["test"]["recall@20/visual"] <= 1
