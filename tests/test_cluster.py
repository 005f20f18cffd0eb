"""A sweep executed by a real Slurm (single node, started by scripts/cluster/slurm-up.sh) through the
submitit launcher: ``make test-cluster``. Skipped unless a Slurm answers (SLURM_CONF set, sinfo works)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from test_optuna_sweeper import _jobs, _study, _sweep

pytestmark = pytest.mark.cluster


def _slurm_up() -> bool:
    if not (os.environ.get("SLURM_CONF") and shutil.which("sinfo")):
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0


SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=local", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.gpus_per_node=0", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=20",
         "hydra.sweeper.n_jobs=2", "hydra.sweeper.pruner=median", "hydra.sweeper.pruners.median.n_startup_trials=1",
         "hydra.sweeper.pruners.median.n_warmup_steps=0"]


def test_sweep_runs_on_slurm(tmp_path: Path) -> None:
    if not _slurm_up():
        if os.environ.get("MBREC_REQUIRE_SLURM"):
            pytest.fail("MBREC_REQUIRE_SLURM is set but no Slurm answers (sinfo); see scripts/cluster/slurm-up.sh")
        pytest.skip("no Slurm here (make test-cluster starts one)")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    _sweep(tmp_path, "s1", *SLURM)
    study = _study(tmp_path)
    assert len(study.trials) == 4 and {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    results = yaml.safe_load((tmp_path / "s1" / "optimization_results.yaml").read_text())
    assert results["best_value"] == study.best_value
    # every trial ran as a Slurm job that Slurm knows as completed
    job_ids = [yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]
               for job in _jobs(tmp_path / "s1")]
    assert len(job_ids) == 4
    for job_id in job_ids:  # the result file is written before the job's process has exited
        for _ in range(120):
            shown = subprocess.run(["scontrol", "show", "job", str(job_id)], capture_output=True, text=True).stdout
            if not any(f"JobState={s}" in shown for s in ("RUNNING", "COMPLETING")):
                break
            time.sleep(0.5)
        assert "JobState=COMPLETED" in shown, shown
    again = _sweep(tmp_path, "s2", *SLURM)
    assert "Launching" not in again.stdout + again.stderr and len(_study(tmp_path).trials) == 4
