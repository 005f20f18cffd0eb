"""Optuna grid sweep over a 2x2 space: 4 trials, study written, and a re-run trains none (the study persists
in a journal file under paths.cache_dir; more in test_optuna_sweeper.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mbrec.config import conf_dir
from mbrec.services import finished
from mbrec.sweep import table1
from mbrec.sweep import tuned as tuned_files

from conftest import TINY

REPO = Path(__file__).resolve().parents[1]


def _sweep(tmp_path: Path, sweep_dir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mbrec", "-m", "hparams_search=paper_grid", *TINY, "train.max_epochs=2",
           "optimizer.lr=choice(1e-3,5e-3)", "train.l2=choice(1e-5,1e-4)",
           f"hydra.sweep.dir={sweep_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
           f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_grid_sweep_runs_four_trials_then_none(tmp_path: Path) -> None:
    first = _sweep(tmp_path, tmp_path / "s1")
    study = yaml.safe_load((tmp_path / "s1" / "optimization_results.yaml").read_text())
    assert set(study["best_params"]) == {"optimizer.lr", "train.l2"}
    finished = sorted((tmp_path / "cache" / "finished").glob("*.json"))
    assert len(finished) == 4
    assert first.stdout.count("already finished") == 0
    import mlflow

    parent = (tmp_path / "s1" / "mlflow_parent_run_id").read_text().strip()
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    run = client.get_run(parent)
    assert run.data.metrics["best_value"] == study["best_value"] and run.info.status == "FINISHED"
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 4

    second = _sweep(tmp_path, tmp_path / "s2")  # the study (default journal under paths.cache_dir) is complete
    assert second.stdout.count("already finished") == 0 and not list((tmp_path / "s2").glob("*/results.json"))
    assert sorted((tmp_path / "cache" / "finished").glob("*.json")) == finished
    study2 = yaml.safe_load((tmp_path / "s2" / "optimization_results.yaml").read_text())
    assert study2["best_value"] == study["best_value"]


def test_lookup_ignores_missing_and_corrupt(tmp_path: Path) -> None:
    assert finished.lookup(tmp_path, "abc") is None
    finished.index_path(tmp_path, "abc").parent.mkdir(parents=True)
    finished.index_path(tmp_path, "abc").write_text("{not json")
    assert finished.lookup(tmp_path, "abc") is None
    finished.record(tmp_path, "abc", {"best_valid_value": 0.5, "metric": "recall@20"})
    assert finished.replay(tmp_path, "abc", tmp_path / "out") == 0.5
    assert (tmp_path / "out" / "results.json").is_file()


def test_write_tuned_turns_study_into_global_overrides(tmp_path: Path) -> None:
    (tmp_path / "optimization_results.yaml").write_text(
        "name: optuna\nbest_params:\n  optimizer.lr: 0.005\n  balancer.reweight: none\nbest_value: 0.5\n")
    target = tuned_files.write_tuned(tmp_path, "synthetic_vbpr_ckd", conf=tmp_path / "conf")
    text = target.read_text()
    assert text.startswith("# @package _global_")
    assert yaml.safe_load(text) == {"optimizer": {"lr": 0.005}, "balancer": {"reweight": "none"}}
    with pytest.raises(ValueError, match="optimization_results.yaml"):
        tuned_files.write_tuned(tmp_path / "missing", "x", conf=tmp_path / "conf")


def _fake_studies(calls: list[list[str]]):
    def fake_mbrec(args: list[str]) -> None:
        calls.append(args)
        if args[1].startswith("hparams_search="):  # a study: write what the sweeper and its trials would
            sweep_dir = Path(next(a for a in args if a.startswith("hydra.sweep.dir=")).split("=", 1)[1])
            for trial in range(2):
                (sweep_dir / str(trial)).mkdir(parents=True)
                (sweep_dir / str(trial) / "results.json").write_text(
                    '{"metric": "recall@20", "best_valid_value": 0.5, "epochs_run": 3, "balancer": {}}')
            (sweep_dir / "optimization_results.yaml").write_text(
                "best_params:\n  optimizer.lr: 0.005\n  train.l2: 0.0001\nbest_value: 0.3\n")
    return fake_mbrec


def test_table1_driver_gives_every_row_the_same_budget(tmp_path: Path, monkeypatch) -> None:
    """``python -m mbrec.sweep table1 --smoke`` (runs mocked): one TPE study per row with the same number of
    trials, each over lr, L2 and its balancer's own hyper-parameters; the tuned/ files (outside
    conf/tuned/ at smoke scale) carry the budget the study spent; then one multirun over rows x seeds."""
    calls: list[list[str]] = []
    monkeypatch.setattr(table1, "_mbrec", _fake_studies(calls))
    table1.main(["table1", "--smoke", "--balancers", "none,ogm,ckd,nosuch", "--seeds", "0,1", "--root", str(tmp_path),
                 "train.l2=0.1"])
    assert [a[1] for a in calls] == ["hparams_search=tpe"] * 3 + ["dataset=synthetic"]
    assert all("hydra.sweeper.n_trials=2" in a and "scale=smoke" in a for a in calls[:3])
    assert all("train.l2=0.1" in a for a in calls)
    assert not any(a.startswith("balancer.") for a in calls[0])
    assert "balancer.alpha=choice(0.1,0.3,0.5,0.8,1.0)" in calls[1]
    assert {"balancer.lambda_g=choice(0.1,0.5,1,5)", "balancer.lambda_kd=choice(0.001,0.01,0.1,0.5)"} <= set(calls[2])
    tuned = tmp_path / "synthetic" / "conf" / "tuned"
    assert sorted(p.name for p in tuned.iterdir()) == [f"synthetic_vbpr_{b}.yaml" for b in ("ckd", "none", "ogm")]
    assert not (conf_dir() / "tuned" / "synthetic_vbpr_none.yaml").exists()
    ogm = yaml.safe_load((tuned / "synthetic_vbpr_ogm.yaml").read_text())
    assert ogm["mlflow"]["tags"] == {"budget.search": "equal-tpe", "budget.trials": "2", "budget.epochs": "6"}
    # the CKD study trains its teachers at the base row's tuned settings (once per study, cached),
    # and the final CKD runs use the same teachers
    assert {"++balancer.teachers.optimizer.lr=0.005", "++balancer.teachers.train.l2=0.0001"} <= set(calls[2])
    assert not any("teachers" in a for a in calls[0] + calls[1])
    assert yaml.safe_load((tuned / "synthetic_vbpr_ckd.yaml").read_text())["balancer"] == \
        {"teachers": {"optimizer": {"lr": 0.005}, "train": {"l2": 0.0001}}}
    final = calls[-1]
    assert {"balancer=none,ogm,ckd", "seed=0,1", "+mlflow.tags.mbrec_experiment=table1",
            f"hydra.searchpath=[file://{tuned.parent.resolve()}]"} <= set(final)


def test_table1_driver_paper_budget_keeps_the_papers_grids(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(table1, "_mbrec", _fake_studies(calls))
    table1.main(["table1", "--budget", "paper", "--balancers", "none,ckd", "--seeds", "0", "--root", str(tmp_path),
                 "--tuned-dir", str(tmp_path / "conf")])
    assert [a[1] for a in calls[:2]] == ["hparams_search=paper_grid", "hparams_search=ckd_grid"]
    ckd = yaml.safe_load((tmp_path / "conf" / "tuned" / "synthetic_vbpr_ckd.yaml").read_text())
    assert ckd["mlflow"]["tags"]["budget.search"] == "paper-grid"


@pytest.mark.parametrize("launcher", ["local_parallel", "slurm"])
def test_launcher_configs_compose(launcher: str) -> None:
    """conf/hydra/launcher/*: need the cluster extra (hydra-submitit-launcher), which CI does not install."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR

    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("config", [f"hydra/launcher={launcher}", "hparams_search=paper_grid"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.hydra_submitit_launcher.submitit_launcher.")
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher" if launcher == "local_parallel" else "SlurmLauncher")
    assert cfg.hydra.sweeper.n_jobs == 1 and cfg.hydra.sweeper.storage.endswith(".journal")
