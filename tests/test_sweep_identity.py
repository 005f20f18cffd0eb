"""A sweep has an identity: its folder is named by its command (sorted overrides + study name), so the
same command run again continues its folder, study and MLflow parent run; a sweep that trains nothing
leaves no parent run; the printed report command covers every run of the sweep, replayed ones too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mbrec.config import sweep_name

from conftest import TINY

REPO = Path(__file__).resolve().parents[1]


def test_sweep_name_is_the_commands_identity() -> None:
    a = sweep_name(["seed=0,1", "backbone=mgcn"], "")
    assert a == sweep_name(["backbone=mgcn", "seed=0,1"], "")  # order does not matter
    assert a.startswith("seed=0,1_backbone=mgcn-")  # what is swept first
    assert sweep_name(["optimizer.lr=1e-3,1e-4"], "").startswith("lr=1e-3,1e-4-")
    assert a != sweep_name(["backbone=mgcn", "seed=0,2"], "")
    assert a != sweep_name(["backbone=mgcn", "seed=0,1"], "other-study")
    assert re.fullmatch(r"sweep-[0-9a-f]{8}", sweep_name([], ""))
    long = sweep_name([f"+mlflow.tags.note{i}=x/y z" for i in range(20)], "")
    assert len(long) <= 89 and "/" not in long and " " not in long


def _sweep(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mbrec", "-m", *TINY, "train.max_epochs=2", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", "MBREC_HOME": str(cwd)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_the_same_sweep_command_continues_its_folder_and_parent(tmp_path: Path) -> None:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    first = _sweep(tmp_path, "seed=0,1")
    folders = sorted((tmp_path / "multirun").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("seed=0,1_")
    parent = (folders[0] / "mlflow_parent_run_id").read_text().strip()
    again = _sweep(tmp_path, "seed=0,1")
    assert sorted((tmp_path / "multirun").iterdir()) == folders  # the same folder
    assert (folders[0] / "mlflow_parent_run_id").read_text().strip() == parent
    assert "2 finished (2 replayed)" in again.stdout
    # a seeds-only sweep reports mean ± std, never a "best" seed
    assert re.search(r"\nvalid recall@20 = [\d.]+ ± [\d.]+ \(test [\d.]+ ± [\d.]+\) over 2 runs\n", again.stdout)
    assert "best" not in again.stdout[again.stdout.index("Sweep done"):]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    sweeps = client.search_runs(exps, "tags.`mbrec.stage` = 'sweep'", run_view_type=ViewType.ALL)
    assert [(r.info.run_id, r.info.status) for r in sweeps] == [(parent, "FINISHED")]

    # another command whose trials all finished before: replayed, no (empty) parent run, and its report
    # command still finds both runs
    other = _sweep(tmp_path, "seed=1,0")
    assert "2 finished (2 replayed)" in other.stdout and "MLflow: parent run" not in other.stdout
    assert len(client.search_runs(exps, "tags.`mbrec.stage` = 'sweep'")) == 1
    command = re.search(r'report: python -m mbrec.report table1 --runs "(.+)" --out reports', other.stdout)
    assert command, other.stdout[-1500:]
    assert len(client.search_runs(exps, command.group(1))) == 2
    assert first.stdout.count("MLflow run:") == 2
