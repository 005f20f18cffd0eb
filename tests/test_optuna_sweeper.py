"""The mbrec_optuna sweeper: persistent studies (journal file), a re-run trains nothing, killed and
failed trials are retried, pruning stops trials and marks them in the study and in MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hydra_plugins.mbrec_optuna_sweeper import trial as sweep_trial
from mbrec import pruning

from conftest import CONF_DIR, TINY

sweep_space = pytest.importorskip("hydra_plugins.mbrec_optuna_sweeper._space")

REPO = Path(__file__).resolve().parents[1]
GRID = ["optimizer.lr=choice(1e-3,5e-3)", "train.l2=choice(1e-5,1e-4)"]

#: run in the sweep process before mbrec: the validation hook kills the whole process (sweeper and
#: in-process trial, like an OOM kill) or raises, once, at the second validation of trial 1
CRASH_ONCE = """
import os, pathlib, signal
import mbrec.pruning as p
_report = p.report
def report(value, step):
    marker = pathlib.Path(os.environ["CRASH_MARKER"])
    trial = p.current()
    if step == 2 and trial is not None and trial.spec.number == 1 and not marker.exists():
        marker.write_text("crashed")
        if os.environ["CRASH_HOW"] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("injected failure")
    _report(value, step)
p.report = report
"""


def _sweep(tmp_path: Path, name: str, *extra: str, prelude: str = "", env: dict | None = None,
           ok: bool = True, space: tuple[str, ...] = ("hparams_search=paper_grid", *GRID),
           mlflow: bool = False) -> subprocess.CompletedProcess:
    """``python -m mbrec -m <space> <TINY> ...`` into a journal in ``tmp_path`` (MLflow only if asked:
    creating its database costs seconds per run)."""
    args = ["-m", *space, *TINY, f"hydra.sweep.dir={tmp_path / name}",
            f"hydra.sweeper.storage={tmp_path / 'study.journal'}", f"paths.cache_dir={tmp_path / 'cache'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}", f"mlflow.enabled={str(mlflow).lower()}",
            "skip_finished=false", *extra]
    code = prelude + "\nfrom mbrec.__main__ import main\nmain()\n"
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _study(tmp_path: Path) -> optuna.Study:
    storage = pruning.open_storage(str(tmp_path / "study.journal"))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def _jobs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.glob("*-synthetic-*") if p.is_dir())


# ---------------------------------------------------------------- composition and search space
def test_plugin_composes_with_presets() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        grid = compose("config", ["hparams_search=paper_grid"], return_hydra_config=True)
        tpe = compose("config", ["hparams_search=ckd_tpe", "hydra.sweeper.pruner=hyperband"], return_hydra_config=True)
    sweeper = grid.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.mbrec_optuna_sweeper.mbrec_optuna_sweeper.MbrecOptunaSweeper"
    assert sweeper.sampler._target_ == "optuna.samplers.GridSampler" and sweeper.pruner == "none"
    assert sweeper.storage == f"{grid.paths.cache_dir}/studies/synthetic-vbpr-none.journal"
    assert set(sweeper.params) == {"optimizer.lr", "train.l2"}
    assert tpe.hydra.sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert tpe.hydra.sweeper.sampler.seed == tpe.seed and tpe.hydra.sweeper.pruner == "hyperband"
    assert tpe.hydra.sweeper.storage.endswith("/studies/synthetic-vbpr-ckd.journal")
    assert {"balancer.lambda_kd", "balancer.lambda_g", "optimizer.lr"} <= set(tpe.hydra.sweeper.params)


def test_search_space_syntax() -> None:
    space, keys, fixed = sweep_space.parse_space(
        ["a=choice(1e-4, 5e-4)", "b=range(0.0, 0.9, 0.1)", "+c=range(1, 4)", "d=5", "e=x,y"], grid=True)
    assert space["a"].choices == (1e-4, 5e-4) and space["e"].choices == ("x", "y")
    assert space["b"].choices == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # 9 points, no float noise
    assert space["c"].choices == (1, 2, 3) and keys["c"] == "+c" and fixed == ["d=5"]
    with pytest.raises(ValueError, match="grid sampler needs discrete values"):
        sweep_space.parse_space(["a=interval(0, 1)"], grid=True)
    space, _, _ = sweep_space.parse_space(["a=tag(log, interval(1e-4, 1e-1))", "b=range(1, 10, 3)"], grid=False)
    assert isinstance(space["a"], optuna.distributions.FloatDistribution) and space["a"].log
    assert isinstance(space["b"], optuna.distributions.IntDistribution) and (space["b"].low, space["b"].high) == (1, 7)  # 1, 4, 7


def test_trial_spec_survives_a_hydra_override() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    spec = sweep_trial.TrialSpec(storage="/odd 'dir'/${x}/s.journal", study="a-b", number=3, pruner="median",
                             pruner_settings={"n_startup_trials": 1})
    (override,) = OverridesParser.create().parse_overrides([f"++hydra.job.env_set.X={sweep_space.hydra_quote(spec.to_env())}"])
    assert sweep_trial.TrialSpec.from_env({sweep_trial.ENV: override.value()}) == spec


def test_pruning_helpers() -> None:
    pruning.report(0.5, 1)  # outside a sweep: nothing happens
    assert pruning.current() is None and sweep_trial.TrialSpec.from_env({}) is None
    # mbrec's adapter is the plugin's trial API, not a copy of it
    assert pruning.report is sweep_trial.report and pruning.TrialPruned is sweep_trial.TrialPruned
    assert issubclass(pruning.TrialPruned, optuna.TrialPruned)
    assert isinstance(sweep_trial.make_pruner("median", {"n_startup_trials": 1}), optuna.pruners.MedianPruner)
    with pytest.raises(ValueError, match="choose one of none, median"):
        sweep_trial.make_pruner("sometimes")
    with pytest.raises(ValueError, match="hydra.sweeper.pruners.median"):
        sweep_trial.make_pruner("median", {"patience": 3})
    assert not sweep_trial.is_dead(sweep_trial.process_id()) and not sweep_trial.is_dead("elsewhere:1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert sweep_trial.is_dead(f"{sweep_trial.process_id().rsplit(':', 1)[0]}:{dead.pid}")
    with pytest.raises(ValueError, match="storage"):
        pruning.open_storage("no-scheme.db")


# ---------------------------------------------------------------- whole sweeps (tiny synthetic data)
@pytest.mark.slow
def test_study_persists_and_a_rerun_trains_nothing(tmp_path: Path) -> None:
    _sweep(tmp_path, "s1", mlflow=True)
    assert len(_jobs(tmp_path / "s1")) == 4
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    first = yaml.safe_load((tmp_path / "s1" / "optimization_results.yaml").read_text())
    assert first["best_value"] == study.best_value and first["best_params"] == study.best_params
    assert set(first["best_params"]) == {"optimizer.lr", "train.l2"}
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mbrec/synthetic").experiment_id],
                              "tags.mbrec.stage = 'student'")
    assert sorted(int(r.data.tags["optuna_trial"]) for r in runs) == [0, 1, 2, 3]

    again = _sweep(tmp_path, "s2")
    assert _jobs(tmp_path / "s2") == [] and "Launching" not in again.stdout + again.stderr
    assert len(_study(tmp_path).trials) == 4
    assert yaml.safe_load((tmp_path / "s2" / "optimization_results.yaml").read_text()) == first

    # other fixed settings are another study (in the same journal), not a silent reuse of these trials
    _sweep(tmp_path, "s3", "train.max_epochs=2")
    storage = pruning.open_storage(str(tmp_path / "study.journal"))
    assert len(optuna.get_all_study_summaries(storage)) == 2 and len(_jobs(tmp_path / "s3")) == 4


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "raise"])
def test_killed_or_failed_trial_is_retried(tmp_path: Path, how: str) -> None:
    env = {"CRASH_MARKER": str(tmp_path / "crashed"), "CRASH_HOW": how}
    first = _sweep(tmp_path, "s1", prelude=CRASH_ONCE, env=env, ok=False)
    assert first.returncode != 0 and (tmp_path / "crashed").exists()
    states = [t.state for t in _study(tmp_path).trials]
    assert states == [TrialState.COMPLETE, TrialState.RUNNING if how == "kill" else TrialState.FAIL]

    _sweep(tmp_path, "s2", prelude=CRASH_ONCE, env=env)
    study = _study(tmp_path)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4 and len({json.dumps(t.params, sort_keys=True) for t in done}) == 4  # trial 0 not re-run
    (failed,) = [t for t in study.trials if t.state == TrialState.FAIL]
    (retry,) = [t for t in done if t.user_attrs.get("mbrec.retry_of") == failed.number]
    assert retry.params == failed.params
    # the retry (its folder is its trial number) resumed from the checkpoint the crashed trial wrote
    log = (tmp_path / "s2" / f"{retry.number}-synthetic-vbpr-none" / "mbrec.log").read_text()
    assert "resumed from" in log


@pytest.mark.slow
def test_always_pruning_marks_trials_pruned(tmp_path: Path) -> None:
    """ThresholdPruner(lower=2): recall can never reach 2, so every trial stops at its first validation."""
    always = ["hydra.sweeper.pruner=threshold", "hydra.sweeper.pruners.threshold.lower=2.0",
              "hydra.sweeper.pruners.threshold.n_warmup_steps=0"]
    out = _sweep(tmp_path, "s1", *always, ok=False, mlflow=True)
    assert out.returncode != 0 and "has no best: no trial completed" in out.stderr
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 4
    assert all(list(t.intermediate_values) == [1] for t in study.trials)  # stopped after epoch 1
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mbrec/synthetic").experiment_id],
                              "tags.mbrec.stage = 'student'")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"KILLED"}
    assert {r.data.tags["mbrec.pruned"] for r in runs} == {"true"}
    assert not list((tmp_path / "cache").glob("checkpoints/*.pt"))  # a pruned run leaves no checkpoint
    again = _sweep(tmp_path, "s2", *always, ok=False)
    assert "Launching" not in again.stdout + again.stderr and len(_study(tmp_path).trials) == 4


@pytest.mark.slow
def test_grid_with_median_pruning(tmp_path: Path) -> None:
    """A 3x2 grid where tiny learning rates fall behind: each point runs once, the poor ones are
    pruned, the best point is a complete one."""
    space = ("hparams_search=paper_grid", "optimizer.lr=choice(1e-2,1e-6,5e-3)", "train.l2=choice(1e-5,1e-4)")
    _sweep(tmp_path, "s1", "train.patience=10", "hydra.sweeper.pruner=median",
           "hydra.sweeper.pruners.median.n_startup_trials=1", "hydra.sweeper.pruners.median.n_warmup_steps=0",
           space=space)
    study = _study(tmp_path)
    assert len(study.trials) == 6 and len({json.dumps(t.params, sort_keys=True) for t in study.trials}) == 6
    states = [t.state for t in study.trials]
    assert TrialState.PRUNED in states and states.count(TrialState.COMPLETE) >= 1
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert study.best_value == max(t.value for t in complete)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert all(max(t.intermediate_values) < 4 for t in pruned)  # stopped before the last epoch


@pytest.mark.slow
def test_two_parallel_workers_share_one_study(tmp_path: Path) -> None:
    """hydra/launcher=local_parallel (submitit, cluster extra) with two trials in flight."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    _sweep(tmp_path, "s1", "hydra/launcher=local_parallel", "hydra.sweeper.n_jobs=2",
           "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
           space=("hparams_search=paper_grid", "optimizer.lr=choice(1e-3,5e-3)", "train.l2=1e-5"))
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    workers = {t.system_attrs[sweep_trial.WORKER_ATTR] for t in study.trials}
    assert len(workers) == 2 and sweep_trial.process_id() not in workers  # each trial in its own process
    spans = sorted((t.system_attrs[sweep_trial.STARTED_ATTR], t.datetime_complete.timestamp()) for t in study.trials)
    assert spans[1][0] < spans[0][1]  # the second trial's job started before the first one's ended


@pytest.mark.slow
def test_resumed_seeded_tpe_does_not_repeat_its_points(tmp_path: Path) -> None:
    """A re-run continues a TPE study to n_trials; its random start-up draws go on instead of restarting."""
    tpe = ("hparams_search=tpe",)  # lr x L2 value sets of the paper, 16 points
    _sweep(tmp_path, "s1", "hydra.sweeper.n_trials=2", space=tpe)
    _sweep(tmp_path, "s2", "hydra.sweeper.n_trials=4", space=tpe)
    params = [json.dumps(t.params, sort_keys=True) for t in _study(tmp_path).trials]
    assert len(params) == 4 and params[2:] != params[:2]
    again = _sweep(tmp_path, "s3", "hydra.sweeper.n_trials=4", space=tpe)
    assert "Launching" not in again.stdout + again.stderr


@pytest.mark.slow
def test_max_cost_stops_the_study_at_its_epoch_budget_and_a_larger_cap_continues_it(tmp_path: Path) -> None:
    """mbrec records each trial's epochs as its cost; ``max_cost`` stops launching once they reach it
    (Table 1's ``--epochs-per-row``); raising the cap continues the same study."""
    _sweep(tmp_path, "s1", "hydra.sweeper.max_cost=1")
    (only,) = _study(tmp_path).trials  # the first trial's epochs already reach the cap
    results = json.loads(next((tmp_path / "s1").glob("0-*/results.json")).read_text())
    assert only.user_attrs[sweep_trial.COST_ATTR] == results["epochs_run"] >= 1
    _sweep(tmp_path, "s1", "hydra.sweeper.max_cost=1000")
    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert all(t.user_attrs[sweep_trial.COST_ATTR] >= 1 for t in study.trials)


def test_max_cost_must_be_positive() -> None:
    from hydra_plugins.mbrec_optuna_sweeper._errors import SweepError
    from hydra_plugins.mbrec_optuna_sweeper._impl import SweeperImpl

    with pytest.raises(SweepError, match="max_cost=0"):
        SweeperImpl(sampler=None, direction="maximize", study_name="s", storage=None, n_trials=1, n_jobs=1,
                    max_failure_rate=0.0, max_cost=0, pruner="none", pruners=None, fingerprint_ignore=[],
                    heartbeat_seconds=30, stale_after_seconds=300, params=None)
