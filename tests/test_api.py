"""The Python API (mbrec.train/compose/load_model) and what a run leaves in MLflow: dataset input,
logged model, log file, teacher runs, run names, the experiment's UI setup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

import mbrec
from mbrec.errors import ConfigError
from mbrec.services.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_WEIGHTS,
    VIEW_TAG,
    Tracker,
    logged_model_of,
    run_name,
    setup_experiment,
    ui_url,
)

from conftest import TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny CKD run through mbrec.train with the default places (MBREC_HOME), from an empty cwd."""
    root = tmp_path_factory.mktemp("api")
    cwd, home = root / "cwd", root / "home"
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("MBREC_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MBREC_CACHE", raising=False)
        results = mbrec.train(*TINY, "balancer=ckd", "optimizer.lr=1e-3", verbose=False)
        yield {"results": results, "cwd": cwd, "home": home, "uri": f"sqlite:///{home / 'mlflow.db'}"}


def test_train_returns_results_json_and_writes_under_home_only(trained) -> None:
    res, home = trained["results"], trained["home"]
    out = Path(res["output_dir"])
    assert out.parent.parent == home / "outputs" / "synthetic" and out.parent.name == "vbpr-ckd"
    assert json.loads((out / "results.json").read_text())["test"] == res["test"]
    for key in ("recall@20", "ndcg@20", "recall@20/text", "recall@20/visual"):
        assert 0.0 <= res["test"][key] <= 1.0
    assert res["config"]["paths"]["cache_dir"] == str(home / ".cache" / "mbrec")
    assert (home / "mlflow.db").is_file() and list((home / ".cache" / "mbrec" / "teachers").rglob("*.pt"))
    assert (out / "mbrec.log").is_file() and "valid recall@20" in (out / "mbrec.log").read_text()
    assert (out / ".hydra" / "config.yaml").is_file()
    assert list(trained["cwd"].iterdir()) == [], "mbrec.train wrote into the working directory"


def test_run_in_mlflow_has_dataset_model_log_and_a_name_that_says_what_differs(trained) -> None:
    res = trained["results"]
    client = MlflowClient(trained["uri"])
    run = client.get_run(res["mlflow_run_id"])
    assert run.info.run_name == "vbpr+ckd batch_size=64 max_epochs=4 eval_every=1 patience=1 lr=1e-3 s123"
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "synthetic"
    assert dataset_input.dataset.digest == res["dataset"]["fingerprint"]
    assert json.loads(dataset_input.dataset.profile)["users"] == res["dataset"]["users"]
    assert run.outputs.model_outputs and run.outputs.model_outputs[0].step == res["best_epoch"]
    model = logged_model_of(client, run.info.run_id)
    assert model.status == LoggedModelStatus.READY
    assert model.tags["mbrec.backbone"] == "vbpr" and model.params["backbone.embedding_dim"] == "64"
    model_metrics = {m.key: m for m in model.metrics}
    assert model_metrics["test/recall_at_20"].value == pytest.approx(res["test"]["recall@20"])
    assert model_metrics["test/recall_at_20"].dataset_digest == res["dataset"]["fingerprint"]
    assert {"mbrec.log", "results.json", "hydra"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.data.tags["mlflow.source.type"] == "LOCAL"


def test_teacher_runs_carry_params_tags_and_dataset(trained) -> None:
    res = trained["results"]
    client = MlflowClient(trained["uri"])
    run = client.get_run(res["mlflow_run_id"])
    teachers = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(t.data.tags["mbrec.modality"] for t in teachers) == ["text", "visual"]
    for t in teachers:
        assert t.data.tags["mbrec.dataset"] == "synthetic" and t.data.tags["mbrec.backbone"] == "vbpr"
        assert t.data.tags["mbrec.seed"] == "123" and t.info.run_name.startswith("vbpr teacher-")
        assert t.data.params["optimizer.lr"] == "0.001" and t.data.params["train.max_epochs"] == "4"
        assert t.data.params["ablate"] == ("visual" if t.data.tags["mbrec.modality"] == "text" else "text")
        assert t.inputs.dataset_inputs[0].dataset.digest == res["dataset"]["fingerprint"]
    with pytest.raises(LookupError, match="no logged model"):
        mbrec.load_model(teachers[0].info.run_id, tracking_uri=trained["uri"])


def test_load_model_rebuilds_the_model_with_the_same_test_metrics(trained) -> None:
    res = trained["results"]
    loaded = mbrec.load_run(res["mlflow_run_id"], tracking_uri=trained["uri"])
    assert loaded.dataset.fingerprint.startswith(res["dataset"]["fingerprint"])
    assert loaded.evaluate("test") == res["test"]
    model = mbrec.load_model(res["mlflow_run_id"], tracking_uri=trained["uri"])
    assert type(model).__name__ == "VBPR" and not model.training
    fresh = mbrec.load_run(res["mlflow_run_id"], tracking_uri=trained["uri"]).model
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def test_logged_weights_leave_out_the_feature_matrices(trained, tmp_path) -> None:
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(trained["uri"])
    model = logged_model_of(client, trained["results"]["mlflow_run_id"])
    folder = Path(download_artifacts(artifact_uri=model.artifact_location, dst_path=str(tmp_path), tracking_uri=trained["uri"]))
    state = torch.load(folder / MODEL_WEIGHTS, weights_only=True)
    assert state and not [k for k in state if k.startswith("feat")]


def test_experiment_opens_as_model_training_with_the_mbrec_view(trained) -> None:
    client = MlflowClient(trained["uri"])
    exp = client.get_experiment_by_name("mbrec/synthetic")
    assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    view = json.loads(exp.tags[VIEW_TAG])
    state = json.loads(view["state"])
    assert "metrics.`test/recall_at_20/text`" in state["selectedColumns"]
    assert "attributes.`Dataset`" in state["selectedColumns"] and "params.`optimizer.lr`" in state["selectedColumns"]
    assert ui_url("http://h:1", exp.experiment_id).endswith(
        f"/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=mbrec")


def test_setup_experiment_keeps_what_the_user_chose(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = Tracker(True, uri, "e", "r")
    tracker.client.set_experiment_tag(tracker.experiment_id, EXPERIMENT_KIND_TAG, "genai_development")
    tracker.client.set_experiment_tag(tracker.experiment_id, VIEW_TAG, "mine")
    setup_experiment(tracker)
    tags = tracker.client.get_experiment(tracker.experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == "genai_development" and tags[VIEW_TAG] == "mine"
    tracker.end()


def test_compose_applies_overrides_and_the_api_places(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MBREC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MBREC_CACHE", raising=False)
    cfg = mbrec.compose("backbone=mmgcn", "balancer=ckd", "optimizer.lr=1e-3", "train.topk=[5,10]", "train.metric=ndcg@5")
    assert cfg.backbone.name == "mmgcn" and cfg.balancer.name == "ckd" and cfg.optimizer.lr == 1e-3
    assert list(cfg.train.topk) == [5, 10] and cfg.train.metric == "ndcg@5"
    assert cfg.paths.cache_dir == str(tmp_path / "home" / ".cache" / "mbrec")
    assert cfg.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    assert cfg.paths.data_dir == str(Path("data").resolve())
    # an override wins over the default place; an option wins over both
    cfg = mbrec.compose(f"paths.cache_dir={tmp_path / 'o'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'o.db'}")
    assert cfg.paths.cache_dir == str(tmp_path / "o") and cfg.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'o.db'}"
    cfg = mbrec.compose(f"paths.cache_dir={tmp_path / 'o'}", cache_dir=tmp_path / "opt", tracking_uri="sqlite:///x.db")
    assert cfg.paths.cache_dir == str(tmp_path / "opt") and cfg.mlflow.tracking_uri == "sqlite:///x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert mbrec.compose().mlflow.tracking_uri == "sqlite:///env.db"


def test_compose_refuses_a_key_no_schema_has() -> None:
    with pytest.raises(ConfigError, match="nope"):
        mbrec.compose("+train.nope=1")


def test_train_takes_a_composed_config_and_an_output_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MBREC_HOME", str(tmp_path / "home"))
    cfg = mbrec.compose(*TINY, "train.max_epochs=2", "mlflow.enabled=false")
    res = mbrec.train(cfg, output_dir=tmp_path / "out", verbose=False)
    assert res["output_dir"] == str(tmp_path / "out") and (tmp_path / "out" / "results.json").is_file()
    assert res["mlflow_run_id"] is None and res["epochs_run"] <= 2


@pytest.mark.parametrize("overrides, expected", [
    (["optimizer.lr=0.001", "train.l2=1e-4", "seed=5", "dataset=baby", "mlflow.tracking_uri=sqlite:///x.db"],
     "vbpr+ckd lr=1e-3 l2=1e-4 s5"),
    (["balancer.lambda_kd=0.5", "+balancer.teachers.train.l2=1.0e-05", "train.l2=0.0001", "paths.cache_dir=/c"],
     "vbpr+ckd lambda_kd=0.5 teacher_l2=1e-5 l2=1e-4 s5"),
    (["optimizer.lr=1e-4", "++balancer.teachers.optimizer.lr=0.001", "++mlflow.tags.optuna_trial=3"],
     "vbpr+ckd lr=1e-4 teacher_lr=1e-3 s5"),
    (["ablation=kl", "train.topk=[10,20]", "train.max_epochs=100", "device=cpu", "train.resume=false"],
     "vbpr+ckd ablation=kl topk=[10,20] max_epochs=100 s5"),
    ([], "vbpr+ckd s5"),
])
def test_run_name_says_what_differs(overrides: list[str], expected: str) -> None:
    assert run_name("vbpr", "ckd", 5, overrides) == expected


def test_run_name_names_a_zero_loss_weight_set_by_a_preset() -> None:
    # the pilot (experiment=pilot sets balancer.lambda_kd=0) is not named like a CKD run
    pilot = {"name": "ckd", "lambda_kd": 0.0, "lambda_g": 5.0}
    assert run_name("vbpr", "ckd", 1, ["experiment=pilot"], pilot) == "vbpr+ckd lambda_kd=0 s1"
    assert run_name("vbpr", "ckd", 1, [], {"lambda_kd": 0.01}) == "vbpr+ckd s1"
    assert run_name("vbpr", "ckd", 1, ["balancer.lambda_kd=0"], pilot) == "vbpr+ckd lambda_kd=0 s1"


def test_import_mbrec_stays_light() -> None:
    import subprocess
    import sys

    code = "import sys, mbrec; assert 'torch' not in sys.modules and 'mlflow' not in sys.modules; print(mbrec.train.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "mbrec.api", out.stderr[-2000:]
