"""Optuna grid sweep over a 2x2 space: 4 trials, study written, and a re-run trains none (the study persists
in a journal file under paths.cache_dir; more in test_optuna_sweeper.py)."""

from __future__ import annotations

import json
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


@pytest.mark.slow
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
                (sweep_dir / str(trial) / "results.json").write_text(json.dumps(
                    {"metric": "recall@20", "best_valid_value": 0.5, "epochs_run": 3, "balancer": {},
                     "config": {"optimizer": {"lr": trial}}}))
            point = next((a.split("(")[1].split(",")[0] for a in args if a.startswith("+budget_point=")), None)
            best = f"  +budget_point: {point}\n" if point else "  optimizer.lr: 0.005\n  train.l2: 0.0001\n"
            (sweep_dir / "optimization_results.yaml").write_text(f"best_params:\n{best}best_value: 0.3\n")
    return fake_mbrec


def test_row_grids_are_the_papers_with_dropout_from_the_backbone_registry() -> None:
    assert table1.row_grid("none", "vbpr") == {"optimizer.lr": [1e-4, 5e-4, 1e-3, 5e-3],
                                               "train.l2": [1e-5, 1e-4, 1e-3, 1e-2]}
    grcn = table1.row_grid("ckd", "grcn")
    assert grcn["backbone.dropout"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert len(table1.grid_points(grcn)) == 16 * 9 * 16
    assert not table1.has_dropout("vbpr") and all(table1.has_dropout(b) for b in ("grcn", "egogcn", "mgcn"))
    # CKD's teachers inherit the base row's tuned dropout
    from mbrec.balancers.ckd import teachers_at_base_point

    assert teachers_at_base_point({"optimizer.lr": 1e-3, "backbone.dropout": 0.3, "train.l2": 1e-4}) == {
        "balancer.teachers.optimizer.lr": 1e-3, "balancer.teachers.backbone.dropout": 0.3,
        "balancer.teachers.train.l2": 1e-4}


def test_a_backbone_that_declares_its_grid_replaces_the_papers(monkeypatch) -> None:
    from mbrec.backbones import BACKBONES

    own = {"backbone.dropout": [0.8, 0.9], "backbone.reg_weight": [0.0, 1e-4]}
    monkeypatch.setattr(BACKBONES.get_class("grcn"), "search_space", own)
    assert table1.row_grid("ckd", "grcn") == {**own, "balancer.lambda_g": [0.1, 0.5, 1, 5],
                                              "balancer.lambda_kd": [1e-3, 1e-2, 1e-1, 5e-1]}
    assert table1.row_grid("none", "vbpr")["train.l2"] == [1e-5, 1e-4, 1e-3, 1e-2]  # others unchanged


def test_equal_budget_samples_distinct_points_without_replacement() -> None:
    grid = table1.row_grid("ckd", "vbpr")
    points = table1.sample_points(grid, 20, seed=3)
    assert len({tuple(sorted(p.items())) for p in points}) == 20  # distinct
    assert points == table1.sample_points(grid, 20, seed=3) != table1.sample_points(grid, 20, seed=4)
    assert len(table1.sample_points(table1.row_grid("none", "vbpr"), 20, seed=0)) == 16  # the whole grid, once


def test_table1_driver_equal_budget(tmp_path: Path, monkeypatch) -> None:
    """``--smoke`` (runs mocked): every row runs the same number of distinct points of its own grid as a
    grid over those points; the tuned files carry the point's settings, the exact budget and the tuning
    ids that pair each row with the tuned base row; then one multirun over rows x seeds."""
    calls: list[list[str]] = []
    monkeypatch.setattr(table1, "_mbrec", _fake_studies(calls))
    table1.main(["table1", "--smoke", "--balancers", "ogm,none,ckd", "--seeds", "0,1", "--root", str(tmp_path),
                 "train.l2=0.1"])
    assert [a[1] for a in calls] == ["hparams_search=grid"] * 3 + ["dataset=synthetic"]
    assert "balancer=none" in calls[0]  # the base row first
    assert all("+budget_point=choice(p000,p001)" in a and "scale=smoke" in a for a in calls[:3])
    assert all("train.l2=0.1" in a for a in calls)
    tuned = tmp_path / "synthetic" / "conf" / "tuned"
    assert not (conf_dir() / "tuned" / "synthetic_vbpr_none.yaml").exists()
    points = yaml.safe_load((tmp_path / "synthetic" / "tune" / "synthetic_vbpr_ogm" / "points" / "points.yaml").read_text())
    ogm = yaml.safe_load((tuned / "synthetic_vbpr_ogm.yaml").read_text())
    assert ogm["balancer"]["alpha"] == points["points"]["p000"]["balancer.alpha"]
    none = yaml.safe_load((tuned / "synthetic_vbpr_none.yaml").read_text())
    tags = ogm["mlflow"]["tags"]
    assert (tags["budget.trials"], tags["budget.epochs"]) == ("2", "6") and tags["budget.search"].startswith("equal (2 of 80")
    assert tags["budget.base"] == none["mlflow"]["tags"]["budget.tuning"] == none["mlflow"]["tags"]["budget.base"]
    ckd = yaml.safe_load((tuned / "synthetic_vbpr_ckd.yaml").read_text())
    assert ckd["balancer"]["teachers"]["optimizer"]["lr"] == none["optimizer"]["lr"]
    assert {"balancer=ogm,none,ckd", "seed=0,1", "+mlflow.tags.mbrec_experiment=table1",
            f"hydra.searchpath=[file://{tuned.parent.resolve()}]"} <= set(calls[-1])


def test_table1_driver_caps_each_rows_epochs_under_the_equal_budget(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(table1, "_mbrec", _fake_studies(calls))
    table1.main(["table1", "--budget", "equal", "--trials", "3", "--epochs-per-row", "40", "--balancers", "none,ckd",
                 "--seeds", "0", "--root", str(tmp_path), "--tuned-dir", str(tmp_path / "conf")])
    assert all("hydra.sweeper.max_cost=40" in a for a in calls[:2]) and "hydra.sweeper.max_cost=40" not in calls[-1]
    ckd = yaml.safe_load((tmp_path / "conf" / "tuned" / "synthetic_vbpr_ckd.yaml").read_text())
    assert ckd["mlflow"]["tags"]["budget.search"] == "equal (3 of 256 points, <= 40 epochs)"
    for bad in (["--epochs-per-row", "40"], ["--budget", "equal", "--epochs-per-row", "0"]):  # paper: every point
        with pytest.raises(SystemExit):
            table1.main(["table1", *bad, "--root", str(tmp_path)])


def test_table1_balancers_default_to_the_papers_rows_and_refuse_unknown_names(tmp_path: Path, monkeypatch, capsys) -> None:
    from mbrec.balancers import ROWS

    calls: list[list[str]] = []
    monkeypatch.setattr(table1, "_mbrec", _fake_studies(calls))
    table1.main(["table1", "--smoke", "--seeds", "0", "--root", str(tmp_path)])
    assert "balancer=none,gb,ogm,ckd" in calls[-1]  # the paper's four rows, not every registered balancer
    assert all(ROWS[b].paper_row for b in ("none", "gb", "ogm", "ckd")) and ROWS["umt"].paper_row is None
    with pytest.raises(SystemExit, match=r"--balancers: unknown nosuch; registered: none,.*umt.*ensemble"):
        table1.main(["table1", "--smoke", "--balancers", "none,nosuch", "--root", str(tmp_path)])


def test_table1_row_without_a_student_has_no_study(tmp_path: Path, monkeypatch) -> None:
    """The teacher ensemble trains no student: no lr x L2 study; its tuned file fixes its teachers at the
    base row's point (as CKD's and UMT's), with a zero budget; UMT's study searches the grid x its scaling."""
    calls: list[list[str]] = []
    monkeypatch.setattr(table1, "_mbrec", _fake_studies(calls))
    assert table1.row_grid("ensemble", "vbpr") == {}
    assert table1.row_grid("umt", "vbpr")["balancer.scaling"] == [0.1, 1, 10, 50]
    table1.main(["table1", "--balancers", "none,ckd,umt,ensemble", "--seeds", "0,1", "--root", str(tmp_path),
                 "--tuned-dir", str(tmp_path / "conf")])
    studies = [next(a for a in c if a.startswith("balancer=")) for c in calls[:-1]]
    assert studies == ["balancer=none", "balancer=ckd", "balancer=umt"]
    assert "balancer=none,ckd,umt,ensemble" in calls[-1]
    tuned = tmp_path / "conf" / "tuned"
    ens = yaml.safe_load((tuned / "synthetic_vbpr_ensemble.yaml").read_text())
    ckd = yaml.safe_load((tuned / "synthetic_vbpr_ckd.yaml").read_text())
    assert ens["balancer"]["teachers"] == ckd["balancer"]["teachers"] and "optimizer" not in ens
    tags = ens["mlflow"]["tags"]
    assert (tags["budget.trials"], tags["budget.epochs"]) == ("0", "0") and tags["budget.search"].startswith("none")


def test_table1_driver_paper_budget_is_the_default_full_grid(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(table1, "_mbrec", _fake_studies(calls))
    table1.main(["table1", "--backbone", "grcn", "--balancers", "none,ckd", "--seeds", "0", "--root", str(tmp_path),
                 "--tuned-dir", str(tmp_path / "conf")])
    assert [a[1] for a in calls[:2]] == ["hparams_search=paper_grid"] * 2
    assert "backbone.dropout=choice(0.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8)" in calls[0]
    assert {"balancer.lambda_g=choice(0.1,0.5,1,5)", "balancer.lambda_kd=choice(0.001,0.01,0.1,0.5)"} <= set(calls[1])
    ckd = yaml.safe_load((tmp_path / "conf" / "tuned" / "synthetic_grcn_ckd.yaml").read_text())
    assert ckd["mlflow"]["tags"]["budget.search"] == "paper-grid (2304 points)"


def _job(sweep: Path, n: int, log: str = "", results: dict | None = None, lr: float = 0.1) -> None:
    job = sweep / (str(n) if n % 2 else f"{n}-synthetic-vbpr-none")  # both names a job folder has
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"optimizer": {"lr": lr}, "balancer": {"name": "none"},
                                                                "mlflow": {"tags": {"optuna_trial": n}}}))
    (job / "__main__.log").write_text(log)
    if results is not None:
        (job / "results.json").write_text(json.dumps({"metric": "recall@20", "best_valid_value": 0.5,
                                                      "config": {"optimizer": {"lr": lr}, "balancer": {"name": "none"}},
                                                      **results}))


def test_study_budget_is_exact_with_replays_prunes_and_a_diverged_trial(tmp_path: Path) -> None:
    teacher = {"teachers": {"text": {"epochs_run": 7, "cached": False, "cache_path": "/c/t.pt"}}}
    _job(tmp_path, 0, results={"epochs_run": 10, "balancer": teacher}, lr=0.1)
    _job(tmp_path, 1, results={"epochs_run": 10, "balancer": {"teachers": {"text": {**teacher["teachers"]["text"], "cached": True}}},
                              "replayed_from": "/c/finished/k.json"}, lr=0.1)  # replay of job 0: counts nothing
    _job(tmp_path, 2, results={"epochs_run": 12, "balancer": {"teachers": {"text": {**teacher["teachers"]["text"], "cached": True}}}},
         lr=0.2)  # the same teacher from the cache: counted once
    _job(tmp_path, 3, log="[x][INFO] - trial 3 pruned at step 4 (value 0.1)\n", lr=0.3)
    _job(tmp_path, 4, log="[x][ERROR] - vbpr+none: training diverged at epoch 2: loss nan. Fix: lower optimizer.lr\n", lr=0.4)
    _job(tmp_path, 5, log="", lr=0.5)  # killed before training: no trial
    from mbrec.sweep.budget import study_budget

    assert study_budget(tmp_path) == {"trials": 4, "epochs": 10 + 7 + 12 + 4 + 3, "replays": 1}


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


def test_table1_jobs_run_trials_and_final_runs_in_parallel(tmp_path: Path, monkeypatch, capsys) -> None:
    """``--jobs N``: every study gets the local parallel launcher with N trials in flight, the final multirun
    (basic sweeper) N runs at a time; launcher overrides given by hand and N < 1 are refused in one line,
    and a failed run stops the driver with its exit code and no traceback."""
    calls: list[list[str]] = []
    monkeypatch.setattr(table1, "_mbrec", _fake_studies(calls))
    monkeypatch.setattr(table1.importlib.util, "find_spec", lambda name: object())  # the cluster extra
    table1.main(["table1", "--smoke", "--balancers", "none,ogm", "--seeds", "0", "--root", str(tmp_path), "--jobs", "3"])
    assert all({"hydra/launcher=local_parallel", "hydra.sweeper.n_jobs=3"} <= set(a) for a in calls[:2])
    assert {"hydra/launcher=local_parallel", "hydra.sweeper.max_batch_size=3"} <= set(calls[-1])
    assert not any("hydra.sweeper.n_jobs=3" in a for a in calls[-1])
    for bad in (["--jobs", "0"], ["hydra.sweeper.n_jobs=2"], ["hydra/launcher=local_parallel"]):
        with pytest.raises(SystemExit):
            table1.main(["table1", "--smoke", "--root", str(tmp_path), *bad])
    assert "use --jobs N" in capsys.readouterr().err
    monkeypatch.setattr(table1.importlib.util, "find_spec", lambda name: None)  # no cluster extra
    with pytest.raises(SystemExit):
        table1.main(["table1", "--smoke", "--root", str(tmp_path), "--jobs", "2"])
    assert "pip install -e '.[cluster]'" in capsys.readouterr().err

    def fails(args: list[str]) -> None:
        raise table1.subprocess.CalledProcessError(3, ["python", "-m", "mbrec", *args])

    monkeypatch.setattr(table1, "_mbrec", fails)
    with pytest.raises(SystemExit) as stop:
        table1.main(["table1", "--smoke", "--balancers", "none", "--seeds", "0", "--root", str(tmp_path / "x")])
    assert stop.value.code == 3 and "re-running this command continues" in capsys.readouterr().err
