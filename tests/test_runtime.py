"""Thread policy (mbrec.runtime) and the OpenMP wait policy set by ``import mbrec``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mbrec import runtime
from mbrec.runtime import (
    ThreadsError,
    apply_threads,
    available_cpus,
    cgroup_cpu_limit,
    hydra_parallelism,
    parallelism,
    parse_threads,
    resolve_threads,
)

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- cgroup quota --------------------------------------------------------------------------------

def test_cgroup_v2_quota_of_own_cgroup(tmp_path):
    proc = _write(tmp_path / "proc_cgroup", "0::/\n")
    _write(tmp_path / "cg" / "cpu.max", "150000 100000\n")
    assert cgroup_cpu_limit(tmp_path / "cg", proc) == pytest.approx(1.5)


def test_cgroup_v2_no_limit(tmp_path):
    proc = _write(tmp_path / "proc_cgroup", "0::/\n")
    _write(tmp_path / "cg" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path / "cg", proc) is None


def test_cgroup_v2_tightest_ancestor_wins(tmp_path):
    proc = _write(tmp_path / "proc_cgroup", "0::/user.slice/job/step\n")
    cg = tmp_path / "cg"
    _write(cg / "user.slice" / "job" / "step" / "cpu.max", "max 100000\n")
    _write(cg / "user.slice" / "job" / "cpu.max", "200000 100000\n")
    _write(cg / "user.slice" / "cpu.max", "400000 100000\n")
    assert cgroup_cpu_limit(cg, proc) == pytest.approx(2.0)


def test_cgroup_v1_quota_in_namespaced_container(tmp_path):
    # the host path of the cgroup does not exist inside the container: the mount root is the own cgroup
    proc = _write(tmp_path / "proc_cgroup", "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    cg = tmp_path / "cg"
    _write(cg / "cpu,cpuacct" / "cpu.cfs_quota_us", "300000\n")
    _write(cg / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(cg, proc) == pytest.approx(3.0)


def test_cgroup_v1_unlimited_and_garbage(tmp_path):
    proc = _write(tmp_path / "proc_cgroup", "1:cpu:/\n")
    cg = tmp_path / "cg"
    _write(cg / "cpu" / "cpu.cfs_quota_us", "-1\n")
    _write(cg / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(cg, proc) is None
    _write(cg / "cpu" / "cpu.cfs_quota_us", "lots\n")
    assert cgroup_cpu_limit(cg, proc) is None


def test_no_cgroup_files_means_no_limit(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "absent", tmp_path / "absent_proc") is None


# --- available CPUs --------------------------------------------------------------------------------

@pytest.mark.parametrize(("quota", "expected"), [(None, 8), ("250000 100000", 2), ("50000 100000", 1),
                                                 ("1600000 100000", 8)])
def test_available_cpus_is_affinity_capped_by_quota(tmp_path, quota, expected):
    proc = _write(tmp_path / "proc_cgroup", "0::/\n")
    if quota:
        _write(tmp_path / "cg" / "cpu.max", quota)
    assert available_cpus(tmp_path / "cg", proc, affinity=8) == expected


def test_available_cpus_of_this_process_is_positive():
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)


# --- resolving threads -----------------------------------------------------------------------------

@pytest.mark.parametrize(("cpus", "parallel", "cap", "expected"), [
    (8, 1, None, 8), (8, 2, None, 4), (8, 3, None, 2), (2, 4, None, 1), (2, 2, None, 1),
    (8, 2, 1, 1), (8, 1, 16, 8), (1, 1, None, 1),
])
def test_auto_divides_the_cpus_among_parallel_trials(cpus, parallel, cap, expected):
    assert resolve_threads("auto", parallel, cap, cpus=cpus) == expected


def test_auto_uses_the_available_cpus(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 6)
    assert resolve_threads("auto", 2) == 3
    assert resolve_threads("AUTO") == 6


def test_auto_runs_a_small_problem_on_one_thread(tiny_dataset):
    small = runtime.SMALL_PROBLEM_FEATURE_VALUES
    assert resolve_threads("auto", cpus=8, feature_values=small - 1) == 1
    assert resolve_threads("auto", cpus=8, feature_values=small) == 8
    assert resolve_threads("auto", 2, cpus=8, feature_values=10 * small) == 4
    assert resolve_threads(3, cpus=8, feature_values=10) == 3  # N is N, whatever the size
    # the tiny dataset: 40 items x (text + visual widths)
    widths = sum(f.shape[1] for f in tiny_dataset.features.values())
    assert runtime.feature_values(tiny_dataset) == tiny_dataset.n_items * widths


@pytest.mark.parametrize(("spec", "expected"), [(1, 1), (3, 3), ("4", 4), (" 2 ", 2), (64, 64)])
def test_n_is_taken_as_given(spec, expected):
    assert resolve_threads(spec, parallel_trials=16, cpus_per_trial=1, cpus=2) == expected


@pytest.mark.parametrize("bad", [0, -1, "0", "two", "", 1.5, "1.5", True, None, [2]])
def test_bad_threads_values_name_the_key_and_the_fix(bad):
    with pytest.raises(ThreadsError, match=r"threads=.*threads=auto.*positive integer"):
        parse_threads(bad)


def test_bad_parallel_trials():
    with pytest.raises(ThreadsError, match="parallel_trials"):
        resolve_threads("auto", 0, cpus=4)


def test_apply_threads_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        expected = resolve_threads("auto", 1)
        assert apply_threads("auto") == expected and torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)


# --- launcher parallelism from the Hydra config ----------------------------------------------------

def _hydra(target: str, mode: str = "RunMode.MULTIRUN", sweeper: dict | None = None, **launcher):
    return OmegaConf.create({"mode": mode, "launcher": {"_target_": target, **launcher},
                             "sweeper": sweeper or {}})


LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def test_parallelism_of_each_launcher(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 6)
    assert parallelism(_hydra(BASIC, sweeper={"n_jobs": 4})) == (1, None)
    assert parallelism(_hydra(LOCAL, mode="RunMode.RUN", sweeper={"n_jobs": 4})) == (1, None)
    assert parallelism(_hydra(LOCAL, sweeper={"n_jobs": 4}, cpus_per_task=None)) == (4, None)
    assert parallelism(_hydra(LOCAL, sweeper={"n_jobs": 2}, cpus_per_task=1)) == (2, 1)
    assert parallelism(_hydra(LOCAL, sweeper={"max_batch_size": 3})) == (3, None)
    assert parallelism(_hydra(LOCAL, sweeper={"max_batch_size": None})) == (6, None)  # unbounded batch
    assert parallelism(_hydra(SLURM, sweeper={"n_jobs": 16}, cpus_per_task=8)) == (1, 8)
    assert parallelism(_hydra(JOBLIB, sweeper={"n_jobs": 2}, n_jobs=10)) == (2, None)
    assert parallelism(_hydra(JOBLIB, sweeper={"max_batch_size": None}, n_jobs=3)) == (3, None)
    assert parallelism(_hydra(JOBLIB, n_jobs=-1))[0] == (os.cpu_count() or 1)


def test_auto_under_local_parallel_divides_by_the_batch():
    """The shipped local_parallel.yaml as the trial sees it: 2 trials at once on 2 CPUs -> 1 thread each."""
    launcher = OmegaConf.load(ROOT / "conf" / "hydra" / "launcher" / "local_parallel.yaml")
    assert "cpus_per_task" in launcher
    hcfg = _hydra(LOCAL, sweeper={"n_jobs": 2}, **{k: v for k, v in launcher.items() if k != "defaults"})
    assert resolve_threads("auto", *parallelism(hcfg), cpus=2) == 1
    assert resolve_threads("auto", *parallelism(hcfg), cpus=8) == 4


def test_slurm_config_caps_threads_at_cpus_per_task():
    launcher = OmegaConf.load(ROOT / "conf" / "hydra" / "launcher" / "slurm.yaml")
    hcfg = _hydra(SLURM, sweeper={"n_jobs": 16}, **{k: v for k, v in launcher.items() if k != "defaults"})
    assert resolve_threads("auto", *parallelism(hcfg), cpus=64) == launcher.cpus_per_task


def test_composed_sweep_with_basic_launcher_runs_one_trial_at_a_time():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="config", overrides=["hparams_search=paper_grid", "hydra.sweeper.n_jobs=4"],
                      return_hydra_config=True)
    assert cfg.threads == "auto"
    hcfg = OmegaConf.merge(cfg.hydra, {"mode": "MULTIRUN"})
    assert hcfg.sweeper.n_jobs == 4 and parallelism(hcfg) == (1, None)


def test_outside_hydra_one_trial():
    assert hydra_parallelism() == (1, None)


# --- OMP_WAIT_POLICY -------------------------------------------------------------------------------

def _python(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    base["PYTHONPATH"] = os.pathsep.join([str(SRC), base.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_import_mbrec_sets_passive_waiting_before_torch():
    out = _python("import sys, os, mbrec; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
    assert out == "PASSIVE False"


def test_import_mbrec_keeps_the_users_wait_policy():
    assert _python("import os, mbrec; print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_entry_point_module_sets_it_too():
    """``python -m mbrec`` imports the package (and so sets the variable) before its __main__ runs."""
    code = ("import os, runpy, sys; sys.argv = ['mbrec', '--help'];\n"
            "try:\n    runpy.run_module('mbrec', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('WAIT=' + os.environ['OMP_WAIT_POLICY'])")
    assert _python(code).splitlines()[-1] == "WAIT=PASSIVE"
